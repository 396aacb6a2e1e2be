//! The `brims` command: train, evaluate and compare LSTM and BRIMs agents on Atari.

mod bench;
mod config;
mod run_dir;
#[allow(dead_code)] // until `eval --gif` uses it
mod gif_writer;
#[allow(dead_code)] // until `compare` uses it
mod report;

use clap::{Parser, Subcommand};

/// Train, evaluate and compare LSTM and BRIMs agents on Atari with PPO.
#[derive(Parser, Debug)]
#[command(name = "brims", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Speed benchmarks; the last line printed is a JSON object.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Raw ALE frames/s (one thread), then the preprocessed vector env.
    Env(bench::env::EnvArgs),
    /// LSTM or BRIMs core: one step at batch 16, 128-step fwd+bwd at batch 8.
    Core(bench::core::CoreArgs),
    /// Nature CNN forward+backward.
    Cnn(bench::cnn::CnnArgs),
    /// Real training on a config for some seconds.
    Train(bench::train::TrainArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(bench) => {
            let json = match bench {
                BenchCommand::Env(args) => bench::env::run(&args)?,
                BenchCommand::Core(args) => bench::core::run(&args)?,
                BenchCommand::Cnn(args) => bench::cnn::run(&args)?,
                BenchCommand::Train(args) => bench::train::run(&args)?,
            };
            println!("{json}");
        }
    }
    Ok(())
}
