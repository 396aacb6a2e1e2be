//! The `brims` command line: every subcommand parses its arguments here and calls one module;
//! errors become one-line messages and a non-zero exit code.

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::analyze::{lesion, probe};
use crate::{analyze, bench, compare, config, eval, play, sweep, train};

/// Train, evaluate and compare LSTM and BRIMs agents on Atari with PPO.
#[derive(Parser, Debug)]
#[command(
    name = "brims",
    version,
    about,
    after_help = "Examples:\n  \
        brims train --config configs/smoke.toml\n  \
        brims eval --checkpoint runs/smoke-20261128-091327 --episodes 5 --gif smoke.gif\n  \
        brims compare configs/cartpole_lstm.toml configs/cartpole_brims.toml --seeds 3\n  \
        brims play --game Pong --episodes 2\n  \
        brims list-games"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train an agent; checkpoints and TensorBoard events go to the run directory.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint: mean ± std raw score, human-normalised score, optional GIF.
    Eval(eval::EvalArgs),
    /// Train (or read) runs of several configs × seeds; write report.md and curves.png.
    Compare(compare::CompareArgs),
    /// Run (or continue) a grid of games × configs × seeds here or on Slurm; `sweep status
    /// DIR`, `sweep report DIR`.
    Sweep(sweep::args::SweepArgs),
    /// Module dynamics of a trained BRIMs agent: switch rates, run lengths, event information,
    /// the top-down share, a raster picture.
    Analyze(analyze::AnalyzeArgs),
    /// Test-time lesions: the score change when the top-down context is replaced, the upper
    /// layer frozen, modules masked or forced on (BRIMs), or the state reset (LSTM).
    Lesion(lesion::LesionArgs),
    /// Linear probes of what each layer knows: reactive targets (a point conceded soon, the
    /// ball's next position) and long-horizon ones (return and points over the next 100-200
    /// steps), per layer and on the CNN features, cross-validated by episode.
    Probe(probe::ProbeArgs),
    /// Play whole games with a random (or trained) agent and print the scores.
    Play(play::PlayArgs),
    /// List every bundled game.
    #[command(after_help = "Example:\n  brims list-games")]
    ListGames,
    /// Speed benchmarks; the last line printed is a JSON object.
    #[command(after_help = "Examples:\n  \
        brims bench env --game Breakout --envs 16 --threads 2 --seconds 10 --json env.json\n  \
        brims bench train --config configs/breakout_lstm.toml --seconds 60")]
    Bench(BenchCli),
}

/// `brims bench`: the bench to run, and where else its JSON goes.
#[derive(clap::Args, Debug)]
struct BenchCli {
    /// Also write the JSON object (pretty-printed) to this file, e.g. for
    /// scripts/benchmarks_md.py.
    #[arg(long, global = true, value_name = "PATH")]
    json: Option<std::path::PathBuf>,
    #[command(subcommand)]
    which: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Raw ALE frames/s (one thread), then the preprocessed vector env.
    #[command(
        after_help = "Example:\n  brims bench env --game Breakout --envs 16 --threads 2 --seconds 10"
    )]
    Env(bench::env::EnvArgs),
    /// LSTM or BRIMs core: one step at batch 16, 128-step fwd+bwd at batch 8.
    #[command(after_help = "Example:\n  brims bench core --core brims")]
    Core(bench::core::CoreArgs),
    /// Nature CNN forward+backward.
    #[command(after_help = "Example:\n  brims bench cnn --batch 256")]
    Cnn(bench::cnn::CnnArgs),
    /// Real training on a config for some seconds.
    #[command(
        after_help = "Example:\n  brims bench train --config configs/breakout_lstm.toml --seconds 60"
    )]
    Train(bench::train::TrainArgs),
}

/// Keeps freed tensor buffers in the process: candle allocates a fresh weight-sized gradient at
/// every step of a recurrent backward, and glibc's defaults hand that memory back to the OS each
/// time, so the next step page-faults it in again (about half of BRIMs' backward time).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Pins candle's thread count: with `RAYON_NUM_THREADS` unset, candle asks for it on every
/// matmul by parsing /proc/cpuinfo, which was half the time of a BRIMs step (about 20 small
/// matmuls per layer). A user's own setting is kept.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Called first thing in main, before any other thread exists.
        std::env::set_var("RAYON_NUM_THREADS", cores.to_string());
    }
}

/// The `brims` binary: parses the command line, runs the command, prints its JSON line; an
/// error is one line on stderr and exit code 1.
pub fn main() {
    pin_thread_count();
    tune_allocator();
    let cli = Cli::try_parse().unwrap_or_else(|err| exit_with_parse_error(&err));
    match run(cli.command) {
        Ok(Some(json)) => println!("{json}"),
        Ok(None) => {}
        Err(err) => {
            // One line: the error and its causes.
            let causes: Vec<String> = err
                .chain()
                .map(|c| config::one_line(&c.to_string()))
                .collect();
            eprintln!("error: {}", causes.join(": "));
            std::process::exit(1);
        }
    }
}

/// Prints a command-line parse error as one line (clap's message and its tip, without the
/// usage block) and exits with clap's code (2); `--help` and `--version` print as usual.
fn exit_with_parse_error(err: &clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    eprintln!("{}", parse_error_line(&err.render().to_string()));
    std::process::exit(err.exit_code());
}

/// clap's rendered error in one line: its message and tips, joined, without the `Usage:` block
/// and the "For more information, try '--help'" line.
fn parse_error_line(rendered: &str) -> String {
    let mut parts = Vec::new();
    for line in rendered.lines().map(str::trim) {
        if line.starts_with("Usage:") {
            break;
        }
        if !line.is_empty() && !line.starts_with("For more information") {
            parts.push(line);
        }
    }
    parts.join("; ")
}

fn run(command: Command) -> anyhow::Result<Option<serde_json::Value>> {
    Ok(Some(match command {
        Command::Train(args) => train::run(&args)?,
        Command::Eval(args) => eval::run(&args)?,
        Command::Compare(args) => compare::run(&args)?,
        Command::Sweep(args) => sweep::run(&args)?,
        Command::Analyze(args) => analyze::run(&args)?,
        Command::Lesion(args) => lesion::run(&args)?,
        Command::Probe(args) => probe::run(&args)?,
        Command::Play(args) => play::run(&args)?,
        Command::ListGames => {
            play::list_games();
            return Ok(None);
        }
        Command::Bench(cli) => {
            let (name, mut json) = match cli.which {
                BenchCommand::Env(args) => ("env", bench::env::run(&args)?),
                BenchCommand::Core(args) => ("core", bench::core::run(&args)?),
                BenchCommand::Cnn(args) => ("cnn", bench::cnn::run(&args)?),
                BenchCommand::Train(args) => ("train", bench::train::run(&args)?),
            };
            bench::provenance(name, &mut json);
            if let Some(path) = &cli.json {
                std::fs::write(path, format!("{json:#}\n"))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            json
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 24, 18: the README promises every command's `--help` has an example; four had
    /// none. Walks every subcommand, hidden ones too.
    #[test]
    fn every_subcommand_help_has_an_example() {
        fn walk(cmd: &mut clap::Command, path: &str, missing: &mut Vec<String>) {
            let help = cmd.render_long_help().to_string();
            if !help.contains("Example") {
                missing.push(path.to_string());
            }
            for sub in cmd.get_subcommands_mut() {
                if sub.get_name() != "help" {
                    let path = format!("{path} {}", sub.get_name());
                    walk(sub, &path, missing);
                }
            }
        }
        let mut missing = Vec::new();
        let mut cli = <Cli as clap::CommandFactory>::command();
        cli.build();
        walk(&mut cli, "brims", &mut missing);
        assert!(missing.is_empty(), "--help without an example: {missing:?}");
    }
}
