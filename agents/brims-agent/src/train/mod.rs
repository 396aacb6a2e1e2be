//! `brims train`: actor threads + batched policy inference + PPO updates + checkpoints +
//! TensorBoard, until the frame budget is spent or Ctrl-C.
//!
//! This module wires the parts together (see ../shared/ARCHITECTURE.md, "Data flow"): the
//! actor pool steps the envs on its threads ([`pool_envs`]); `ppo::Sampler` acts in them and
//! fills the rollout (the envs split into two groups that alternate, so one group steps while
//! the policy runs for the other; each env's recurrent state travels with it); the learner
//! updates on the rollout; [`run_log`] writes TensorBoard and returns.csv; checkpoints, the
//! run directory's lock and the stop signals make a run survive interruption.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::bail;
use clap::Args;

use crate::config::run::RunConfig;
use crate::envs::{self};
use crate::run::dir as run_dir;

mod driver;
pub(crate) mod hparams;
mod pool_envs;
pub(crate) mod preflight;
mod run_log;
pub(crate) mod spec;
pub(crate) mod threads;

use crate::run::stop::install_stop_signals;
use crate::run::summary::{RunSummary, SUMMARY_FILE};
use crate::train::driver::Driver;
use crate::train::spec::{Limits, RunSpec};

/// Arguments of `brims train`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    brims train --config configs/smoke.toml\n  \
    brims train --config configs/breakout_brims.toml --set ppo.learning_rate=1e-4 --set seed=2\n  \
    brims train --run-dir runs/breakout_brims-20261128-091327 --resume")]
pub(crate) struct TrainArgs {
    /// The run's TOML config (not needed with --resume: the run dir holds it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config value, e.g. `--set ppo.learning_rate=1e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run directory (default: runs/<name>-<UTC time>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its latest checkpoint (from its start if it has none;
    /// a finished run is left as it is).
    #[arg(long)]
    pub resume: bool,
    /// No progress bar: plain log lines (for logs and CI).
    #[arg(long)]
    pub quiet: bool,
}

/// `brims train`.
pub(crate) fn run(args: &TrainArgs) -> anyhow::Result<serde_json::Value> {
    run_with_stop(args, &install_stop_signals())
}

/// `brims train` stopped by `stop` (the caller installs the signals and may raise it too).
pub(crate) fn run_with_stop(
    args: &TrainArgs,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<serde_json::Value> {
    let spec = prepare_run(args)?;
    let limits = Limits {
        seconds: None,
        quiet: args.quiet,
    };
    let summary = train(&spec, &limits, stop)?;
    Ok(serde_json::json!({
        "run_dir": summary.run_dir,
        "frames": summary.frames,
        "mean_return_last_20": summary.mean_return_last_20,
    }))
}

/// Resolves the config and the run directory. Writes nothing: a new run's directory is
/// created only once everything it needs has been built (see [`train`]).
pub(crate) fn prepare_run(args: &TrainArgs) -> anyhow::Result<RunSpec> {
    if args.resume {
        let Some(dir) = &args.run_dir else {
            bail!("--resume needs --run-dir DIR (the run to continue)");
        };
        if args.config.is_some() || !args.overrides.is_empty() {
            bail!(
                "--resume continues a run with the config in its run dir; drop --config and --set"
            );
        }
        run_dir::check_resumable(dir)?;
        let path = dir.join(run_dir::CONFIG_FILE);
        let cfg = RunConfig::load(&path, &[])?;
        return Ok(RunSpec {
            cfg,
            dir: dir.clone(),
            resume: true,
            config_source: path.display().to_string(),
        });
    }
    let Some(path) = &args.config else {
        bail!("--config FILE is required (see configs/), or --resume with --run-dir");
    };
    let cfg = RunConfig::load(path, &args.overrides)?;
    let dir = run_dir::choose(args.run_dir.as_deref(), &cfg.name);
    run_dir::check_new(&dir)?;
    Ok(RunSpec {
        cfg,
        dir,
        resume: false,
        config_source: path.display().to_string(),
    })
}

/// Trains the run `spec` names: a new one, or the continuation of one from its latest
/// checkpoint (from its start when it has none). A resumed run that is already finished (its
/// checkpoint covers the budget and its summary.json says so) is left as it is.
pub(crate) fn train(
    spec: &RunSpec,
    limits: &Limits,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<RunSummary> {
    if spec.resume {
        if let Some(summary) = finished_run(spec)? {
            eprintln!(
                "{} is finished ({} of {} frames); nothing to do",
                spec.dir.display(),
                summary.frames,
                spec.cfg.budget().frames
            );
            return Ok(summary);
        }
    }
    match envs::EnvFactory::from_config(&spec.cfg.env)? {
        envs::EnvFactory::Frames(make) => Driver::<u8>::new(spec, make)?.run(limits, stop),
        envs::EnvFactory::Vectors(make) => Driver::<f32>::new(spec, make)?.run(limits, stop),
    }
}

/// The summary of a finished run (its latest checkpoint covers the budget and its summary.json
/// describes that checkpoint, not an interruption); reads only.
fn finished_run(spec: &RunSpec) -> anyhow::Result<Option<RunSummary>> {
    let Some(latest) = ppo::latest_checkpoint(&spec.dir.join(run_dir::CHECKPOINT_DIR))? else {
        return Ok(None);
    };
    // An unreadable newest header is not a finished run: the resume falls back past it.
    let Ok(header) = ppo::read_header(&latest) else {
        return Ok(None);
    };
    if header.global_step < spec.cfg.budget().steps {
        return Ok(None);
    }
    let Ok(text) = std::fs::read_to_string(spec.dir.join(SUMMARY_FILE)) else {
        return Ok(None);
    };
    let Ok(summary) = serde_json::from_str::<RunSummary>(&text) else {
        return Ok(None);
    };
    let frames = header.global_step * spec.cfg.env.frames_per_step();
    Ok((summary.frames == frames && !summary.interrupted).then_some(summary))
}
