//! `brims train`: actor threads + batched policy inference + PPO updates + checkpoints +
//! TensorBoard, until the frame budget is spent or Ctrl-C.
//!
//! One PPO iteration (see ../shared/ARCHITECTURE.md, "Data flow"):
//! the envs are split into groups that alternate (double buffering): while group A's envs step
//! on the actor threads, the driver runs the policy for group B, and the other way round. Each
//! env's recurrent state travels with it and is zeroed (by mask, inside the core) at the step
//! after its episode ended. After `T` steps the rollout goes to the learner.

use std::collections::VecDeque;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actors::{ActorPool, GroupStep, PoolConfig};
use anyhow::{bail, Context};
use brims::CoreState;
use candle_core::{Device, Tensor};
use clap::Args;
use envs_api::{Element, Env};
use ppo::{Learner, ObsElement, PolicyStep, Rollout, RunClock, UpdateMetrics};
use telemetry::{Progress, RunLogger};

use crate::activity::{ActivityCollector, DynamicsTracker};
use crate::envs::{self, BoxedEnv};
use crate::run_config::RunConfig;
use crate::run_dir;

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
    pub sps: f64,
    pub rollout_secs: f64,
    pub update_secs: f64,
    pub param_count: usize,
    pub interrupted: bool,
}

/// How far from 1 the first minibatch's ratio may be before the run warns that acting and
/// replay disagree (float noise of the fused paths is far below it).
const RATIO_CANARY_BOUND: f64 = 1e-4;

/// Rollout steps between two samples of the core's scale (a few per update is plenty).
const CORE_SCALE_EVERY: usize = 8;

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
    let spec = prepare_run(args)?;
    let stop = install_stop_signals();
    let limits = Limits {
        seconds: None,
        quiet: args.quiet,
    };
    let summary = train(&spec, &limits, &stop)?;
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
                spec.cfg.total_frames
            );
            return Ok(summary);
        }
    }
    match envs::EnvFactory::from_config(&spec.cfg.env)? {
        envs::EnvFactory::Frames(make) => Driver::<u8>::new(spec, make)?.run(limits, stop),
        envs::EnvFactory::Vectors(make) => Driver::<f32>::new(spec, make)?.run(limits, stop),
    }
}

/// Environment steps of a run's budget.
fn total_steps(cfg: &RunConfig) -> u64 {
    cfg.total_frames / cfg.env.frames_per_step()
}

/// The summary of a finished run (its latest checkpoint covers the budget and its summary.json
/// describes that checkpoint, not an interruption); reads only.
fn finished_run(spec: &RunSpec) -> anyhow::Result<Option<RunSummary>> {
    let Some(latest) = ppo::latest_checkpoint(&spec.dir.join(run_dir::CHECKPOINT_DIR))? else {
        return Ok(None);
    };
    let header = ppo::read_header(&latest)?;
    if header.global_step < total_steps(&spec.cfg) {
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

/// The training loop for observations of element type `T`.
struct Driver<'a, T: Element + ObsElement> {
    cfg: &'a RunConfig,
    dir: PathBuf,
    learner: Learner,
    pool: ActorPool<BoxedEnv<T>>,
    groups: Vec<Range<usize>>,
    obs_shape: Vec<usize>,
    obs_size: usize,
    device: Device,
    logger: RunLogger,
    returns_csv: std::io::BufWriter<std::fs::File>,
    recent_returns: VecDeque<f64>,
    /// Episodes finished in the rollout being collected, as `(global_step, return, length)`:
    /// logged once its update is done, dropped with a rollout abandoned at a stop signal, so
    /// returns.csv only holds episodes of updates the learner has made.
    pending_episodes: Vec<(u64, f64, u64)>,
    frames_per_step: u64,
    /// Whether the core reports module activity (BRIMs), gathered into `activity`.
    trace_cores: bool,
    activity: ActivityCollector,
    /// Per layer, how often the active set switches and how long modules stay active.
    dynamics: DynamicsTracker,
    /// The ratio canary has warned (once per process).
    ratio_warned: bool,
    /// Time spent before this process, from the checkpoint resumed.
    clock: RunClock,
    /// The global step this process started from.
    start_step: u64,
    /// The newest checkpoint on disk and the update it holds.
    last_checkpoint: Option<(u64, PathBuf)>,
    /// The run directory's lock, held until the driver is dropped.
    _lock: run_dir::RunLock,
    /// Scale of each layer's `h` while acting, logged per update.
    core_scale: CoreScale,
}

/// Per layer of the core (`h` = state part `2l`): sums of the RMS and of the spread across a
/// group's envs (mean over units of the std over envs) of every acting step, and their count.
/// A core whose output does not depend on the screen has a spread near 0.
#[derive(Default)]
struct CoreScale {
    sums: Vec<(f64, f64)>,
    count: usize,
}

impl CoreScale {
    fn add(&mut self, state: &CoreState) -> anyhow::Result<()> {
        let hs: Vec<&Tensor> = state.parts.iter().step_by(2).collect();
        self.sums.resize(hs.len(), (0.0, 0.0));
        for (h, sums) in hs.into_iter().zip(&mut self.sums) {
            let h = h.to_dtype(candle_core::DType::F64)?;
            sums.0 += h.sqr()?.mean_all()?.to_scalar::<f64>()?.sqrt();
            if h.dim(0)? > 1 {
                let centred = h.broadcast_sub(&h.mean_keepdim(0)?)?;
                sums.1 += centred
                    .sqr()?
                    .mean(0)?
                    .sqrt()?
                    .mean_all()?
                    .to_scalar::<f64>()?;
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Per layer `(mean rms, mean spread)` since the last call, and a fresh start.
    fn take(&mut self) -> Vec<(f64, f64)> {
        let n = self.count.max(1) as f64;
        self.count = 0;
        std::mem::take(&mut self.sums)
            .into_iter()
            .map(|(rms, spread)| (rms / n, spread / n))
            .collect()
    }
}

/// Per-group acting state: the group's current observations, reset flags and core state.
struct GroupState<T> {
    obs: Vec<T>,
    resets: Vec<f32>,
    state: CoreState,
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
            ppo::latest_checkpoint(&checkpoint_dir)?
        } else {
            None
        };
        let (learner, clock, last_checkpoint) = match latest {
            Some(latest) => {
                let learner = Learner::resume(&latest, &device)
                    .with_context(|| format!("cannot resume from {}", latest.display()))?;
                if learner.network_config() != &cfg.network {
                    bail!(
                        "{}: the checkpoint's network differs from the run's config",
                        latest.display()
                    );
                }
                check_spaces(&learner, &latest, &cfg.env, &obs_shape, n_actions)?;
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
        let obs_size: usize = obs_shape.iter().product();
        crate::preflight::check(
            cfg,
            (obs_size * std::mem::size_of::<T>()) as u64,
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
        let groups = (0..pool.num_groups()).map(|g| pool.group_envs(g)).collect();

        // Everything is built: from here on the run directory is written.
        let lock = match lock {
            Some(lock) => lock,
            None => run_dir::create(
                dir,
                &cfg.to_toml()?,
                &run_dir::metadata(cfg.seed, &spec.config_source),
            )?,
        };
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
        let mut logger = RunLogger::create(dir)?;
        if spec.resume {
            // TensorBoard: what earlier processes logged after this point is not the run's.
            logger.purge_from(step + 1)?;
        } else {
            logger.text("config", &format!("```toml\n{}\n```", cfg.to_toml()?), 0)?;
        }
        let csv_path = dir.join(RETURNS_FILE);
        let returns_csv = std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&csv_path)
                .with_context(|| format!("cannot write {}", csv_path.display()))?,
        );
        let recent_returns = kept.returns[kept.returns.len().saturating_sub(20)..]
            .iter()
            .copied()
            .collect();
        Ok(Driver {
            cfg,
            dir: dir.to_path_buf(),
            learner,
            pool,
            groups,
            obs_shape,
            obs_size,
            device,
            logger,
            returns_csv,
            recent_returns,
            pending_episodes: Vec::new(),
            frames_per_step: cfg.env.frames_per_step(),
            trace_cores: matches!(cfg.network.core, Some(brims::CoreConfig::Brims(_))),
            activity: ActivityCollector::default(),
            dynamics: DynamicsTracker::default(),
            ratio_warned: false,
            clock,
            start_step: step,
            last_checkpoint,
            _lock: lock,
            core_scale: CoreScale::default(),
        })
    }

    fn run(mut self, limits: &Limits, stop: &Arc<AtomicBool>) -> anyhow::Result<RunSummary> {
        let (num_steps, num_envs) = (self.cfg.ppo.num_steps, self.cfg.ppo.num_envs);
        let total_steps = total_steps(self.cfg);
        let param_count: usize = self
            .learner
            .parameters()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum();
        let mut progress = Progress::new(self.cfg.total_frames, limits.quiet);
        let started = Instant::now();
        let start_step = self.learner.global_step();
        let (mut rollout_secs, mut update_secs) = (0.0, 0.0);
        let mut rollout = Rollout::new::<T>(num_steps, num_envs, &self.obs_shape);
        let mut groups = self.reset_groups()?;
        let mut interrupted = false;

        while self.learner.global_step() < total_steps {
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
            if !self.collect(&mut rollout, &mut groups, stop)? {
                // A stop signal: the rollout is abandoned (the checkpoint precedes it).
                interrupted = true;
                break;
            }
            let t1 = Instant::now();
            let metrics = self.learner.update(&rollout)?;
            let t2 = Instant::now();
            rollout_secs += (t1 - t0).as_secs_f64();
            update_secs += (t2 - t1).as_secs_f64();

            let global_step = self.learner.global_step();
            let sps = (global_step - start_step) as f64 / started.elapsed().as_secs_f64();
            self.log_episodes()?;
            self.log_update(&metrics, global_step, sps)?;
            progress.update(
                global_step * self.frames_per_step,
                sps * self.frames_per_step as f64,
            );
            if let Some(mean) = self.mean_recent_return() {
                progress.set_mean_return(mean);
            }
            if self.learner.updates() % self.cfg.run.checkpoint_every == 0 {
                let clock = self.clock_now(started, rollout_secs, update_secs);
                let path = self.checkpoint(clock)?;
                progress.println(&format!("checkpoint {}", path.display()));
            }
        }
        // The final state, unless it is on disk already (or there is none: no update made).
        let unsaved = match &self.last_checkpoint {
            Some((updates, _)) => *updates != self.learner.updates(),
            None => self.learner.updates() > 0,
        };
        if unsaved {
            let clock = self.clock_now(started, rollout_secs, update_secs);
            let path = self.checkpoint(clock)?;
            progress.println(&format!("checkpoint {}", path.display()));
        }
        progress.finish();
        if self.trace_cores && !interrupted {
            self.log_activity_image()?;
        }
        let clock = self.clock_now(started, rollout_secs, update_secs);
        let summary = RunSummary {
            run_dir: self.dir.clone(),
            frames: self.learner.global_step() * self.frames_per_step,
            mean_return_last_20: self.mean_recent_return(),
            sps: if clock.wall_secs > 0.0 {
                clock.steps as f64 / clock.wall_secs
            } else {
                0.0
            },
            rollout_secs: clock.rollout_secs,
            update_secs: clock.update_secs,
            param_count,
            interrupted,
        };
        if summary.mean_return_last_20.is_some() {
            self.logger.hparams(
                &crate::hparams::of_config(self.cfg),
                &["charts/episodic_return"],
            )?;
        }
        self.logger.flush()?;
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

    /// The run's time so far: what the resumed checkpoint recorded plus this process's.
    fn clock_now(&self, started: Instant, rollout_secs: f64, update_secs: f64) -> RunClock {
        let steps_here = self.learner.global_step() - self.start_step;
        RunClock {
            steps: self.clock.steps + steps_here,
            wall_secs: self.clock.wall_secs + started.elapsed().as_secs_f64(),
            rollout_secs: self.clock.rollout_secs + rollout_secs,
            update_secs: self.clock.update_secs + update_secs,
        }
    }

    /// Resets every env and gives each group zero state and "episode starts here" flags.
    fn reset_groups(&mut self) -> anyhow::Result<Vec<GroupState<T>>> {
        let all_obs = self.pool.reset()?;
        self.groups
            .iter()
            .map(|envs| {
                Ok(GroupState {
                    obs: all_obs[envs.start * self.obs_size..envs.end * self.obs_size].to_vec(),
                    resets: vec![1.0; envs.len()],
                    state: self.learner.net().zero_state(envs.len())?,
                })
            })
            .collect()
    }

    /// Fills `rollout` with `T` steps of every env, alternating the groups so one group steps on
    /// the actor threads while the driver runs the policy for the other. Returns `false`, with
    /// the rollout abandoned, when `stop` is raised meanwhile (so a stop signal waits for at most
    /// one update, not a rollout and an update).
    fn collect(
        &mut self,
        rollout: &mut Rollout,
        groups: &mut [GroupState<T>],
        stop: &AtomicBool,
    ) -> anyhow::Result<bool> {
        let num_steps = rollout.num_steps();
        let start_state =
            CoreState::cat(&groups.iter().map(|g| g.state.clone()).collect::<Vec<_>>())?;
        rollout.begin(&start_state)?;
        self.pending_episodes.clear();
        for t in 0..num_steps {
            if stop.load(Ordering::SeqCst) {
                self.pending_episodes.clear();
                return Ok(false);
            }
            for (g, group) in groups.iter_mut().enumerate() {
                if t > 0 {
                    let outcome = self.pool.recv(g)?;
                    self.on_outcome(rollout, t - 1, group, outcome)?;
                }
                self.act(rollout, t, g, group)?;
            }
        }
        for (g, group) in groups.iter_mut().enumerate() {
            let outcome = self.pool.recv(g)?;
            self.on_outcome(rollout, num_steps - 1, group, outcome)?;
        }
        // Bootstrap values: V(observation after the last step), with the state it would act from.
        for (g, group) in groups.iter().enumerate() {
            let (_, values, _) = self.learner.net().act(
                &self.obs_tensor(&group.obs, self.groups[g].len())?,
                &group.state,
                &Tensor::new(group.resets.as_slice(), &self.device)?,
            )?;
            rollout.record_next_values(self.groups[g].start, &values.to_vec1::<f32>()?)?;
        }
        Ok(true)
    }

    /// Runs the policy for group `g` at step `t`, records it, and sends the actions.
    fn act(
        &mut self,
        rollout: &mut Rollout,
        t: usize,
        g: usize,
        group: &mut GroupState<T>,
    ) -> anyhow::Result<()> {
        let envs = self.groups[g].clone();
        let obs = self.obs_tensor(&group.obs, envs.len())?;
        let resets = Tensor::new(group.resets.as_slice(), &self.device)?;
        let (logits, values, next_state, trace) =
            self.learner
                .net()
                .act_traced(&obs, &group.state, &resets, self.trace_cores)?;
        if let Some(trace) = trace {
            self.activity.add(&trace, None);
            self.dynamics.add(g, &trace, &group.resets);
        }
        let (actions, logprobs) = ppo::sample_actions(&logits, self.learner.rng_mut())?;
        rollout.record_policy(
            t,
            envs.start,
            PolicyStep {
                obs: &group.obs,
                resets: &group.resets,
                actions: &actions,
                logprobs: &logprobs,
                values: &values.to_vec1::<f32>()?,
            },
        )?;
        group.state = next_state.detach();
        if t % CORE_SCALE_EVERY == 0 {
            self.core_scale.add(&group.state)?;
        }
        let actions: Vec<usize> = actions.iter().map(|&a| a as usize).collect();
        self.pool.send_actions(g, &actions)?;
        Ok(())
    }

    /// Records what the envs of a group returned for step `t`.
    fn on_outcome(
        &mut self,
        rollout: &mut Rollout,
        t: usize,
        group: &mut GroupState<T>,
        outcome: GroupStep<T>,
    ) -> anyhow::Result<()> {
        let env0 = outcome.envs.start;
        rollout.record_outcome(
            t,
            env0,
            &outcome.rewards,
            &outcome.terminated,
            &outcome.truncated,
        )?;
        // A truncated (not terminated) episode bootstraps from V(final observation), computed
        // from the env's state after step t, without a reset.
        for (i, final_obs) in outcome.final_obs.iter().enumerate() {
            if let (Some(final_obs), true, false) =
                (final_obs, outcome.truncated[i], outcome.terminated[i])
            {
                let row = Tensor::new(&[i as u32], &self.device)?;
                let state = group.state.index_select(&row)?;
                let (_, value, _) = self.learner.net().act(
                    &self.obs_tensor(final_obs, 1)?,
                    &state,
                    &Tensor::zeros(1, candle_core::DType::F32, &self.device)?,
                )?;
                rollout.record_final_value(t, env0 + i, value.to_vec1::<f32>()?[0])?;
            }
        }
        for (i, (&term, &trunc)) in outcome
            .terminated
            .iter()
            .zip(&outcome.truncated)
            .enumerate()
        {
            group.resets[i] = if term || trunc { 1.0 } else { 0.0 };
        }
        group.obs = outcome.obs;
        let step_now = self.learner.global_step() + ((t + 1) * self.cfg.ppo.num_envs) as u64;
        for (_, stats) in outcome.episodes {
            self.pending_episodes.push((step_now, stats.ret, stats.len));
        }
        Ok(())
    }

    /// Logs the episodes of the rollout just learned from (TensorBoard, returns.csv, the recent
    /// mean) and flushes returns.csv.
    fn log_episodes(&mut self) -> anyhow::Result<()> {
        for (step, ret, len) in std::mem::take(&mut self.pending_episodes) {
            self.logger.scalar("charts/episodic_return", ret, step)?;
            self.logger
                .scalar("charts/episodic_length", len as f64, step)?;
            writeln!(
                self.returns_csv,
                "{step},{},{ret},{len}",
                step * self.frames_per_step
            )?;
            if self.recent_returns.len() == 20 {
                self.recent_returns.pop_front();
            }
            self.recent_returns.push_back(ret);
        }
        self.returns_csv.flush()?;
        Ok(())
    }

    /// `k` flat observations → `[k, …obs_shape]` on the device (u8 frames stay u8).
    fn obs_tensor(&self, obs: &[T], k: usize) -> anyhow::Result<Tensor> {
        let mut shape = vec![k];
        shape.extend_from_slice(&self.obs_shape);
        Ok(Tensor::from_slice(obs, shape, &self.device)?)
    }

    fn mean_recent_return(&self) -> Option<f64> {
        (!self.recent_returns.is_empty())
            .then(|| self.recent_returns.iter().sum::<f64>() / self.recent_returns.len() as f64)
    }

    fn log_update(&mut self, m: &UpdateMetrics, step: u64, sps: f64) -> anyhow::Result<()> {
        let scalars = [
            ("charts/SPS", sps),
            ("charts/learning_rate", m.learning_rate),
            ("losses/value_loss", m.v_loss),
            ("losses/policy_loss", m.pg_loss),
            ("losses/entropy", m.entropy),
            ("losses/old_approx_kl", m.old_approx_kl),
            ("losses/approx_kl", m.approx_kl),
            ("losses/clipfrac", m.clipfrac),
            ("losses/explained_variance", m.explained_variance),
            ("losses/grad_norm", m.grad_norm),
            ("losses/grad_norm_encoder", m.grad_norm_parts[0]),
            ("losses/grad_norm_core", m.grad_norm_parts[1]),
            ("losses/grad_norm_heads", m.grad_norm_parts[2]),
            ("losses/first_ratio_deviation", m.first_ratio_deviation),
        ];
        if m.first_ratio_deviation > RATIO_CANARY_BOUND && !self.ratio_warned {
            self.ratio_warned = true;
            eprintln!(
                "warning: update {}: the first minibatch's probability ratio is {:.2e} away from 1 \
                 (bound {RATIO_CANARY_BOUND:.0e}): replaying the rollout does not reproduce acting; \
                 see losses/first_ratio_deviation (warned once)",
                m.update, m.first_ratio_deviation
            );
        }
        for (tag, value) in scalars {
            self.logger.scalar(tag, value, step)?;
        }
        for (l, (rms, spread)) in self.core_scale.take().into_iter().enumerate() {
            self.logger
                .scalar(&format!("core/layer{l}/h_rms"), rms, step)?;
            self.logger
                .scalar(&format!("core/layer{l}/h_spread"), spread, step)?;
        }
        for (l, (switch_rate, run)) in self.dynamics.take().into_iter().enumerate() {
            self.logger
                .scalar(&format!("brims/layer{l}/switch_rate"), switch_rate, step)?;
            self.logger
                .scalar(&format!("brims/layer{l}/mean_run_length"), run, step)?;
        }
        for (l, a) in self.activity.take_attention().into_iter().enumerate() {
            self.logger.scalar(
                &format!("brims/layer{l}/attention_entropy"),
                a.entropy,
                step,
            )?;
            self.logger
                .scalar(&format!("brims/layer{l}/read_rms"), a.read_rms, step)?;
        }
        let bands = self.activity.take_bands();
        if !bands.is_empty() {
            self.logger.brims_activity(&bands, step, false)?;
        }
        self.returns_csv.flush()?;
        self.logger.flush()?;
        Ok(())
    }

    /// Plays one evaluation episode (at most 1,000 steps) and logs its module activity as the
    /// steps × modules picture: the hierarchy made visible.
    fn log_activity_image(&mut self) -> anyhow::Result<()> {
        let episode = crate::eval::evaluate(
            self.learner.net(),
            &self.cfg.env,
            1,
            self.cfg.seed ^ 0xE7A1,
            true,
            Some(1000),
        )?;
        let bands = crate::activity::bands(&episode[0].traces);
        if !bands.is_empty() {
            let step = self.learner.global_step();
            self.logger.brims_activity(&bands, step, false)?;
            self.logger
                .brims_activity_image(&bands, Some(&episode[0].events), step)?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the learner with the run's `clock`.
    fn checkpoint(&mut self, clock: RunClock) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join(run_dir::CHECKPOINT_DIR);
        let path = self.learner.save_checkpoint_with_clock(
            &dir,
            self.cfg.run.keep_checkpoints,
            Some(clock),
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
