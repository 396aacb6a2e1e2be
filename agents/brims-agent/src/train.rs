//! `brims train`: actor threads + batched policy inference + PPO updates + checkpoints +
//! TensorBoard, until the frame budget is spent or Ctrl-C.
//!
//! This module wires the parts together (see ../shared/ARCHITECTURE.md, "Data flow"): the
//! actor pool steps the envs on its threads ([`pool_envs`]); `ppo::Sampler` acts in them and
//! fills the rollout (the envs split into two groups that alternate, so one group steps while
//! the policy runs for the other; each env's recurrent state travels with it); the learner
//! updates on the rollout; [`run_log`] writes TensorBoard and returns.csv; checkpoints, the
//! run directory's lock and the stop signals make a run survive interruption.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actors::{ActorPool, PoolConfig};
use anyhow::{bail, Context};
use candle_core::Device;
use clap::Args;
use envs_api::{Element, Env};
use ppo::{Learner, ObsElement, Rollout, RunClock, Sampler};
use telemetry::Progress;

use crate::envs::{self, BoxedEnv};
use crate::run_config::RunConfig;
use crate::run_dir;

mod pool_envs;
mod run_log;

use pool_envs::PoolEnvs;
use run_log::RunLog;

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

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RunSummary {
    pub run_dir: PathBuf,
    pub frames: u64,
    pub mean_return_last_20: Option<f64>,
    /// SPS: agent steps per second summed over the envs, over the whole run (resumes included).
    pub sps: f64,
    pub rollout_secs: f64,
    pub update_secs: f64,
    pub param_count: usize,
    /// Training FLOPs per agent step, counted from the network ([`ppo::ForwardFlops`]).
    #[serde(default)]
    pub flops_per_step: u64,
    /// Of which one forward pass (acting); the rest is the update's.
    #[serde(default)]
    pub forward_flops: u64,
    pub interrupted: bool,
}

pub(crate) use run_dir::RETURNS_FILE;
/// Name of the per-run JSON summary.
pub(crate) const SUMMARY_FILE: &str = "summary.json";

/// The stop flag, raised by Ctrl-C (SIGINT), SIGTERM or SIGHUP (how Slurm, systemd, Docker
/// and Kubernetes stop a job): the run abandons the rollout it is collecting (or finishes the
/// update it is in), writes a checkpoint and exits 0. A second signal exits at once (130).
pub(crate) fn install_stop_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "interrupt: stopping (a rollout being collected is dropped, an update in progress \
             finishes), then writing a checkpoint"
        );
    });
    stop
}

/// The environment variable that caps a run's actor threads without changing its config (a
/// sweep gives each of its parallel runs a share of the cores this way).
pub(crate) const ACTOR_THREADS_ENV: &str = "BRIMS_ACTOR_THREADS";

/// `threads`, capped by [`ACTOR_THREADS_ENV`] when it is set to a positive number.
fn actor_threads(threads: usize) -> usize {
    std::env::var(ACTOR_THREADS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&cap| cap > 0)
        .map_or(threads, |cap| threads.min(cap))
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

/// A run to start or continue.
pub(crate) struct RunSpec {
    pub cfg: RunConfig,
    pub dir: PathBuf,
    /// Continue the run in `dir` (else create `dir` for a new one).
    pub resume: bool,
    /// Where the config came from (recorded in run.json of a new run).
    pub config_source: String,
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

/// Extra limits on a run (the benchmark stops after some seconds).
pub(crate) struct Limits {
    pub seconds: Option<f64>,
    pub quiet: bool,
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

/// The training loop for observations of element type `T`: the sampler fills a rollout from
/// the actor pool's envs, the learner updates on it, the run log records both.
struct Driver<'a, T: Element + ObsElement> {
    cfg: &'a RunConfig,
    dir: PathBuf,
    learner: Learner,
    sampler: Sampler<PoolEnvs<BoxedEnv<T>>>,
    obs_shape: Vec<usize>,
    log: RunLog,
    frames_per_step: u64,
    /// Whether the core reports module activity (BRIMs).
    trace_cores: bool,
    /// Time spent before this process, from the checkpoint resumed.
    clock: RunClock,
    /// The global step this process started from.
    start_step: u64,
    /// The newest checkpoint on disk and the update it holds.
    last_checkpoint: Option<(u64, PathBuf)>,
    /// The effective config as TOML, recorded in every checkpoint's header.
    config_toml: String,
    /// The run directory's lock, held until the driver is dropped.
    _lock: run_dir::RunLock,
}

impl<'a, T: Element + ObsElement> Driver<'a, T> {
    /// Builds everything the run needs, in an order that leaves nothing behind on a failure: the
    /// envs and the learner are built and the run checked against the machine's memory before
    /// a new run's directory exists; a resumed run is locked before its checkpoint is read, and
    /// its files change only once everything is built.
    fn new(spec: &'a RunSpec, make_env: envs::MakeEnv<T>) -> anyhow::Result<Self> {
        let (cfg, dir) = (&spec.cfg, spec.dir.as_path());
        // Probe one env on this thread: a bad game name fails here, before any thread starts.
        let probe = make_env(0).map_err(|e| anyhow::anyhow!("{e}"))?;
        let obs_shape = probe.observation_space().shape().to_vec();
        let Some(n_actions) = probe.action_space().n() else {
            bail!("the env's action space is not discrete");
        };
        drop(probe);

        let device = Device::Cpu;
        let lock = if spec.resume {
            Some(run_dir::RunLock::acquire(dir)?)
        } else {
            None
        };
        let checkpoint_dir = dir.join(run_dir::CHECKPOINT_DIR);
        let latest = if spec.resume {
            // Under the lock no one else writes here: a temp file is a write a kill cut short.
            for stale in ppo::remove_temp_files(&checkpoint_dir)? {
                eprintln!(
                    "removed {}, left by a checkpoint write that was cut short",
                    stale.display()
                );
            }
            crate::eval::load_newest(&checkpoint_dir, &device).context("cannot resume the run")?
        } else {
            None
        };
        let (learner, clock, last_checkpoint) = match latest {
            Some((latest, learner)) => {
                if learner.network_config() != &cfg.network {
                    bail!(
                        "{}: the checkpoint's network differs from the run's config",
                        latest.display()
                    );
                }
                check_spaces(&learner, &latest, &cfg.env, &obs_shape, n_actions)?;
                crate::eval::check_same_env(
                    &latest,
                    crate::eval::embedded_config(&latest)?.as_ref(),
                    &cfg.env,
                    &dir.join(run_dir::CONFIG_FILE),
                )?;
                let clock = ppo::read_header(&latest)?.clock.unwrap_or_default();
                let updates = learner.updates();
                (learner, clock, Some((updates, latest)))
            }
            None => {
                let plan = cfg.ppo.validate()?;
                let learner =
                    Learner::new(plan, cfg.network.clone(), &obs_shape, n_actions, &device)?;
                (learner, RunClock::default(), None)
            }
        };
        let params: usize = learner
            .parameters()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum();
        crate::preflight::check(
            cfg,
            &obs_shape,
            std::mem::size_of::<T>() as u64,
            params as u64,
        )?;

        let num_envs = cfg.ppo.num_envs;
        // A resumed run must not replay the same env trajectories: offset the seeds by progress.
        let env_seed = cfg
            .seed
            .wrapping_add(learner.updates().wrapping_mul(1_000_003));
        let pool = ActorPool::new(
            PoolConfig {
                num_envs,
                num_threads: actor_threads(cfg.actors.threads).min(num_envs),
                double_buffer: cfg.actors.double_buffer && num_envs >= 2,
                seed: env_seed,
            },
            make_env,
        )?;

        // Everything is built: from here on the run directory is written.
        let lock = match lock {
            Some(lock) => lock,
            None => run_dir::create(
                dir,
                &cfg.to_toml()?,
                &run_dir::metadata(cfg.seed, &spec.config_source),
            )?,
        };
        // Said once the run starts (a start that fails says only why).
        if let Some(warning) = cfg.budget_rounding_warning() {
            eprintln!("{warning}");
        }
        let step = learner.global_step();
        let kept = run_dir::cut_returns(dir, step)?;
        if spec.resume {
            match &last_checkpoint {
                Some((_, path)) => eprintln!(
                    "resuming from {} ({} frames)",
                    path.display(),
                    step * cfg.env.frames_per_step()
                ),
                None => eprintln!(
                    "no checkpoint in {}: starting the run from its beginning",
                    checkpoint_dir.display()
                ),
            }
            if kept.dropped > 0 {
                eprintln!(
                    "{RETURNS_FILE}: dropped {} episodes logged after that point",
                    kept.dropped
                );
            }
        }
        let log = RunLog::open(dir, cfg, spec.resume, step, &kept)?;
        let trace_cores = matches!(cfg.network.core, Some(brims::CoreConfig::Brims(_)));
        Ok(Driver {
            cfg,
            dir: dir.to_path_buf(),
            learner,
            sampler: Sampler::new(PoolEnvs(pool)).traced(trace_cores),
            obs_shape,
            log,
            frames_per_step: cfg.env.frames_per_step(),
            trace_cores,
            clock,
            start_step: step,
            last_checkpoint,
            config_toml: cfg.to_toml()?,
            _lock: lock,
        })
    }

    fn run(mut self, limits: &Limits, stop: &Arc<AtomicBool>) -> anyhow::Result<RunSummary> {
        let (num_steps, num_envs) = (self.cfg.ppo.num_steps, self.cfg.ppo.num_envs);
        let budget = self.cfg.budget();
        let param_count: usize = self
            .learner
            .parameters()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum();
        let mut progress = Progress::new(budget.frames, self.frames_per_step, limits.quiet);
        let started = Instant::now();
        let start_step = self.learner.global_step();
        let (mut rollout_secs, mut update_secs) = (0.0, 0.0);
        // This process's time up to the end of its last update: the time of a rollout dropped
        // at a stop (or of a process stopped before its first update) is lost work, not counted.
        let mut worked_secs = 0.0;
        let mut rollout = Rollout::new::<T>(num_steps, num_envs, &self.obs_shape);
        let mut interrupted = false;

        while self.learner.updates() < budget.updates {
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            if limits
                .seconds
                .is_some_and(|s| started.elapsed().as_secs_f64() >= s)
            {
                break;
            }
            let t0 = Instant::now();
            let step0 = self.learner.global_step();
            let (net, rng) = self.learner.acting();
            let collected =
                self.sampler
                    .collect(net, rng, &mut rollout, stop, self.log.acting())?;
            let Some(collected) = collected else {
                // A stop signal: the rollout is abandoned (the checkpoint precedes it).
                interrupted = true;
                break;
            };
            self.log.hold(step0, num_envs, &collected);
            let t1 = Instant::now();
            let metrics = self.learner.update(&rollout)?;
            let t2 = Instant::now();
            rollout_secs += (t1 - t0).as_secs_f64();
            update_secs += (t2 - t1).as_secs_f64();
            worked_secs = (t2 - started).as_secs_f64();

            let global_step = self.learner.global_step();
            let sps = (global_step - start_step) as f64 / started.elapsed().as_secs_f64();
            self.log.log_episodes()?;
            self.log.log_update(&metrics, global_step, sps)?;
            progress.update(global_step * self.frames_per_step, sps);
            if let Some(mean) = self.log.mean_recent_return() {
                progress.set_mean_return(mean);
            }
            if self.learner.updates() % self.cfg.run.checkpoint_every == 0 {
                let clock = self.clock_now(worked_secs, rollout_secs, update_secs);
                let path = self.checkpoint(clock)?;
                // The activity picture at every checkpoint, so the hierarchy can be watched
                // forming and an interrupted run has one.
                if self.trace_cores {
                    self.log_activity_image()?;
                }
                progress.println(&format!("checkpoint {}", path.display()));
            }
        }
        // The final state, unless it is on disk already (or there is none: no update made).
        let unsaved = match &self.last_checkpoint {
            Some((updates, _)) => *updates != self.learner.updates(),
            None => self.learner.updates() > 0,
        };
        if unsaved {
            let clock = self.clock_now(worked_secs, rollout_secs, update_secs);
            let path = self.checkpoint(clock)?;
            progress.println(&format!("checkpoint {}", path.display()));
        }
        progress.finish();
        if self.trace_cores && !interrupted {
            self.log_activity_image()?;
        }
        let clock = self.clock_now(worked_secs, rollout_secs, update_secs);
        let forward = self.learner.net().forward_flops();
        let summary = RunSummary {
            run_dir: self.dir.clone(),
            frames: self.learner.global_step() * self.frames_per_step,
            mean_return_last_20: self.log.mean_recent_return(),
            sps: if clock.wall_secs > 0.0 {
                clock.steps as f64 / clock.wall_secs
            } else {
                0.0
            },
            rollout_secs: clock.rollout_secs,
            update_secs: clock.update_secs,
            param_count,
            flops_per_step: forward.per_training_step(self.learner.plan().config.update_epochs),
            forward_flops: forward.total,
            interrupted,
        };
        if summary.mean_return_last_20.is_some() {
            self.log.log_hparams(self.cfg)?;
        }
        self.log.flush()?;
        run_dir::write_atomic(
            &self.dir.join(SUMMARY_FILE),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
        if interrupted {
            let resume = format!(
                "`brims train --run-dir {} --resume` continues",
                self.dir.display()
            );
            match &self.last_checkpoint {
                Some((_, path)) => eprintln!(
                    "interrupted at {} frames: checkpoint {}; {resume}",
                    summary.frames,
                    path.display()
                ),
                None => eprintln!(
                    "interrupted before the first update: no checkpoint written; {resume} \
                     (from the start)"
                ),
            }
        }
        Ok(summary)
    }

    /// The run's time so far: what the resumed checkpoint recorded plus this process's
    /// `worked_secs` (its time up to the end of its last update).
    fn clock_now(&self, worked_secs: f64, rollout_secs: f64, update_secs: f64) -> RunClock {
        let steps_here = self.learner.global_step() - self.start_step;
        RunClock {
            steps: self.clock.steps + steps_here,
            wall_secs: self.clock.wall_secs + worked_secs,
            rollout_secs: self.clock.rollout_secs + rollout_secs,
            update_secs: self.clock.update_secs + update_secs,
        }
    }

    /// Plays one evaluation episode (at most 1,000 steps) and logs its module activity as the
    /// steps × modules picture: the hierarchy made visible.
    fn log_activity_image(&mut self) -> anyhow::Result<()> {
        let episode = crate::eval::evaluate(
            self.learner.net(),
            &self.cfg.env,
            1,
            self.cfg.seed ^ 0xE7A1,
            crate::eval::Recording::Activity,
            Some(1000),
        )?;
        let bands = crate::activity::bands(&episode[0].traces);
        self.log
            .log_activity_image(&bands, &episode[0].events, self.learner.global_step())
    }

    /// Writes a checkpoint of the learner with the run's `clock`.
    fn checkpoint(&mut self, clock: RunClock) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join(run_dir::CHECKPOINT_DIR);
        // The effective config travels inside the header: the checkpoint describes itself.
        let path = self.learner.save_checkpoint_described(
            &dir,
            self.cfg.run.keep_checkpoints,
            Some(clock),
            Some(&self.config_toml),
        )?;
        self.last_checkpoint = Some((self.learner.updates(), path.clone()));
        Ok(path)
    }
}

/// Refuses a checkpoint whose network was built for other observations or another action count
/// than the run's env has (a checkpoint of another game).
pub(crate) fn check_spaces(
    learner: &Learner,
    checkpoint: &Path,
    env: &crate::run_config::EnvConfig,
    obs_shape: &[usize],
    n_actions: usize,
) -> anyhow::Result<()> {
    let net = learner.net();
    let what = match env {
        crate::run_config::EnvConfig::Atari { game, .. } => game.clone(),
        other => format!("{other:?}").to_lowercase(),
    };
    if net.n_actions() != n_actions {
        bail!(
            "{}: the checkpoint's policy has {} actions but {what} has {n_actions}; \
             it was trained on another game (check the run's {})",
            checkpoint.display(),
            net.n_actions(),
            run_dir::CONFIG_FILE
        );
    }
    if net.obs_shape() != obs_shape {
        bail!(
            "{}: the checkpoint's policy reads observations of shape {:?} but {what} gives {:?} \
             (check the run's {})",
            checkpoint.display(),
            net.obs_shape(),
            obs_shape,
            run_dir::CONFIG_FILE
        );
    }
    Ok(())
}
