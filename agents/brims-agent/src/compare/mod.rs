//! `brims compare`: every config × seed trained (or finished runs read back), then a Markdown
//! report (final return with its 95% bootstrap interval, AUC, SPS, parameter count) and
//! learning curves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use crate::compare::report::{ConfigRuns, RunCurve};
use crate::config::run::RunConfig;
use crate::run::dir::RETURNS_FILE;
use crate::run::dir::{self as run_dir, CONFIG_FILE};
use crate::run::summary::{RunSummary, SUMMARY_FILE};
use crate::train::spec::Limits;
use crate::train::{self, TrainArgs};

pub(crate) mod report;

/// Arguments of `brims compare`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    brims compare configs/cartpole_lstm.toml configs/cartpole_brims.toml --seeds 3\n  \
    brims compare configs/breakout_lstm.toml configs/breakout_brims.toml --seeds 3 --frames 2M\n  \
    brims compare --runs runs/compare-20261128-091327/*")]
pub(crate) struct CompareArgs {
    /// Configs to train and compare (each × every seed).
    pub configs: Vec<PathBuf>,
    /// Seeds per config (seeds 1..=N).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Frame budget per run (overrides the configs'), e.g. 2M, 500K, 100000.
    #[arg(long, value_parser = parse_count)]
    pub frames: Option<u64>,
    /// Read these run directories instead of training (unfinished ones are left out, with a
    /// warning naming each).
    #[arg(long, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Where the runs, report.md and curves.png go (default: runs/compare-<UTC time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// `2M` → 2,000,000; `500K`, `1.5M`, `100000` and `1e6` work too.
pub(crate) fn parse_count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, scale) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G' | 'b' | 'B') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    match number.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok((x * scale).round() as u64),
        _ => Err(format!(
            "{text:?} is not a positive count (e.g. 2M, 500K, 100000)"
        )),
    }
}

/// `brims compare`.
pub(crate) fn run(args: &CompareArgs) -> anyhow::Result<serde_json::Value> {
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "compare-{}",
            run_dir::utc_stamp(std::time::SystemTime::now())
        ))
    });
    let run_dirs = match (args.configs.is_empty(), args.runs.is_empty()) {
        (true, true) => bail!("give configs to train, or --runs DIR… to read finished runs"),
        (false, false) => bail!("give either configs or --runs, not both"),
        (true, false) => args.runs.clone(),
        (false, true) => train_all(args, &out)?,
    };
    let (runs, return_range) = read_runs(&run_dirs)?;
    let (report, plot) = crate::compare::report::write_report(&out, &runs, return_range)?;
    println!("report: {}\nplot:   {}", report.display(), plot.display());
    if args.runs.is_empty() {
        println!(
            "TensorBoard groups the runs: tensorboard --logdir {}",
            out.display()
        );
    }
    Ok(serde_json::json!({"report": report, "plot": plot}))
}

/// Trains every config × seed into `out/<name>-s<seed>`; returns the run directories.
fn train_all(args: &CompareArgs, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if args.seeds == 0 {
        bail!("--seeds must be >= 1");
    }
    // Check every config before the first (long) run starts.
    let names = args
        .configs
        .iter()
        .map(|config| Ok(RunConfig::load(config, &[])?.name))
        .collect::<anyhow::Result<Vec<String>>>()?;
    if out.exists() {
        bail!("{} already exists; choose another --out", out.display());
    }
    let stop = crate::run::stop::install_stop_signals();
    let mut dirs = Vec::new();
    for (config, name) in args.configs.iter().zip(&names) {
        for seed in 1..=args.seeds {
            let mut overrides = vec![format!("seed={seed}")];
            if let Some(frames) = args.frames {
                overrides.push(format!("total_frames={frames}"));
            }
            let targs = TrainArgs {
                config: Some(config.clone()),
                overrides,
                run_dir: Some(out.join(format!("{name}-s{seed}"))),
                resume: false,
                quiet: args.quiet,
            };
            let spec = train::prepare_run(&targs)?;
            println!(
                "training {} seed {seed} → {}",
                config.display(),
                spec.dir.display()
            );
            let limits = Limits {
                seconds: None,
                quiet: args.quiet,
            };
            let summary = train::train(&spec, &limits, &stop)?;
            if summary.interrupted {
                bail!("interrupted; finished runs are in {}", out.display());
            }
            dirs.push(spec.dir);
        }
    }
    Ok(dirs)
}

/// `(lowest, highest)` return an episode of an env can have.
type ReturnRange = (f64, f64);
/// The run directories of one env, and its return range if known.
type EnvRuns = (Vec<String>, Option<ReturnRange>);

/// Reads finished runs and groups them by config name, with their env's return range. An
/// unfinished run (no summary.json, interrupted, or short of its frame budget) is left out with
/// a warning naming it: a partial seed would bias the final returns and AUC. No finished run at
/// all is an error, and so are runs of different envs: one axis cannot hold Breakout's and
/// CartPole's returns (a sweep over games reports each game on its own).
fn read_runs(dirs: &[PathBuf]) -> anyhow::Result<(Vec<ConfigRuns>, Option<ReturnRange>)> {
    let mut by_name: BTreeMap<String, Vec<RunCurve>> = BTreeMap::new();
    // Env label -> the runs of that env, and its return range.
    let mut envs: BTreeMap<String, EnvRuns> = BTreeMap::new();
    let mut left_out = Vec::new();
    for dir in dirs {
        let (cfg, curve) = match finished_curve(dir)? {
            Ok(finished) => finished,
            Err(why) => {
                left_out.push((dir, why));
                continue;
            }
        };
        if curve.points.is_empty() {
            bail!("{}: no finished episodes to compare", dir.display());
        }
        let env = envs
            .entry(env_key(&cfg.env))
            .or_insert_with(|| (Vec::new(), cfg.env.return_range()));
        env.0.push(dir.display().to_string());
        by_name.entry(cfg.name).or_default().push(curve);
    }
    if by_name.is_empty() {
        let list: Vec<String> = left_out
            .iter()
            .map(|(dir, why)| format!("{} ({why})", dir.display()))
            .collect();
        bail!(
            "none of the {} runs given is finished, nothing to compare: {}",
            list.len(),
            list.join(", ")
        );
    }
    if envs.len() > 1 {
        let list: Vec<String> = envs
            .iter()
            .map(|(env, (runs, _))| format!("{env}: {}", runs.join(", ")))
            .collect();
        bail!(
            "the runs are of {} envs, which one axis cannot compare ({}); give the runs of one \
             env at a time, or run a sweep over games (`brims sweep`, one figure per game)",
            envs.len(),
            list.join("; ")
        );
    }
    for (dir, why) in &left_out {
        eprintln!(
            "warning: leaving out {}: unfinished ({why}); finish it with \
             `brims train --run-dir {} --resume`",
            dir.display(),
            dir.display()
        );
    }
    let return_range = envs.into_values().next().and_then(|(_, range)| range);
    let runs = by_name
        .into_iter()
        .map(|(name, runs)| ConfigRuns { name, runs })
        .collect();
    Ok((runs, return_range))
}

/// The env of a run as compare groups them: the Atari game (any spelling of it alike), or the
/// env's kind.
fn env_key(env: &crate::config::run::EnvConfig) -> String {
    match env {
        crate::config::run::EnvConfig::Atari { game, .. } => {
            let key = envs_atari::game_key(game);
            envs_atari::list_games()
                .into_iter()
                .find(|name| envs_atari::game_key(name) == key)
                .map_or(game.clone(), str::to_string)
        }
        other => other.label(),
    }
}

/// A finished run's config and curve (its episodes, steps/s, parameter count), or why the run
/// is not finished.
pub(crate) fn finished_curve(
    dir: &Path,
) -> anyhow::Result<std::result::Result<(RunConfig, RunCurve), String>> {
    let cfg = RunConfig::load(&dir.join(CONFIG_FILE), &[])
        .with_context(|| format!("{} is not a run directory", dir.display()))?;
    let summary = match finished_summary(dir, &cfg)? {
        Ok(summary) => summary,
        Err(why) => return Ok(Err(why)),
    };
    let curve = RunCurve {
        seed: cfg.seed,
        points: read_returns(&dir.join(RETURNS_FILE))?,
        sps: summary.sps,
        param_count: summary.param_count,
    };
    Ok(Ok((cfg, curve)))
}

/// The summary of a finished run, or why the run is not finished.
pub(crate) fn finished_summary(
    dir: &Path,
    cfg: &RunConfig,
) -> anyhow::Result<std::result::Result<RunSummary, String>> {
    let path = dir.join(SUMMARY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(format!("no {SUMMARY_FILE}")))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let summary: RunSummary = serde_json::from_str(&text)
        .with_context(|| format!("{}: malformed summary", path.display()))?;
    let budget = cfg.budget().frames;
    Ok(if summary.interrupted {
        Err(format!("interrupted at {} frames", summary.frames))
    } else if summary.frames < budget {
        Err(format!("{} of {budget} frames", summary.frames))
    } else {
        Ok(summary)
    })
}

/// `(frames, episodic return)` of every finished episode in a run's returns.csv
/// (`global_step,frames,episodic_return,episodic_length`).
fn read_returns(path: &Path) -> anyhow::Result<Vec<(u64, f64)>> {
    crate::compare::report::read_frames_returns(path, 1, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_with_suffixes() {
        assert_eq!(parse_count("2M"), Ok(2_000_000));
        assert_eq!(parse_count("500k"), Ok(500_000));
        assert_eq!(parse_count("1.5M"), Ok(1_500_000));
        assert_eq!(parse_count("1e6"), Ok(1_000_000));
        assert_eq!(parse_count("100000"), Ok(100_000));
        assert!(parse_count("-3").is_err());
        assert!(parse_count("many").is_err());
    }

    #[test]
    fn returns_csv_is_read_and_bad_lines_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(RETURNS_FILE);
        std::fs::write(
            &path,
            "global_step,frames,episodic_return,episodic_length\n10,40,3.5,10\n20,80,-1,12\n",
        )
        .unwrap();
        assert_eq!(read_returns(&path).unwrap(), vec![(40, 3.5), (80, -1.0)]);
        std::fs::write(&path, "header\n10,40,x,10\n").unwrap();
        let err = read_returns(&path).unwrap_err().to_string();
        assert!(err.contains(":2: malformed"), "{err}");
    }

    /// A finished run directory of `config` (a file of configs/) with a few episodes.
    fn fake_run(dir: &Path, config: &str) -> PathBuf {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let cfg = RunConfig::load(&repo.join(config), &[]).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(repo.join(config), dir.join(CONFIG_FILE)).unwrap();
        std::fs::write(
            dir.join(RETURNS_FILE),
            "global_step,frames,episodic_return,episodic_length\n10,40,3,10\n20,80,5,10\n",
        )
        .unwrap();
        let summary = RunSummary {
            run_dir: dir.to_path_buf(),
            frames: cfg.total_frames,
            mean_return_last_20: Some(4.0),
            sps: 1.0,
            rollout_secs: 1.0,
            update_secs: 1.0,
            param_count: 1,
            flops_per_step: 0,
            forward_flops: 0,
            interrupted: false,
        };
        std::fs::write(
            dir.join(SUMMARY_FILE),
            serde_json::to_string(&summary).unwrap(),
        )
        .unwrap();
        dir.to_path_buf()
    }

    /// Issue 24, 18: `compare --runs` put Breakout and CartPole on one axis without a word.
    #[test]
    fn runs_of_different_envs_are_refused_naming_each_env() {
        let tmp = tempfile::tempdir().unwrap();
        let breakout = fake_run(&tmp.path().join("smoke-s1"), "smoke.toml");
        let cartpole = fake_run(&tmp.path().join("cartpole-s1"), "cartpole_lstm.toml");
        let err = read_runs(&[breakout.clone(), cartpole.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 envs"), "{err}");
        assert!(
            err.contains("Breakout: ") && err.contains("CartPole-v1: "),
            "{err}"
        );
        // One env alone is compared, with its return range.
        let (runs, range) = read_runs(&[cartpole]).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(range, Some((0.0, 500.0)));
        let (_, range) = read_runs(&[breakout]).unwrap();
        assert_eq!(range, None, "Breakout has no known bound");
    }
}
