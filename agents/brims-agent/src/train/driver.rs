//! The training loop: sample a rollout, update, log, checkpoint, until the budget is spent or
//! a stop signal arrives.

use crate::config::run::RunConfig;
use crate::envs::{self, BoxedEnv};
use crate::eval::spaces::check_spaces;
use crate::run::dir as run_dir;
use crate::run::dir::RETURNS_FILE;
use crate::run::summary::{RunSummary, SUMMARY_FILE};
use crate::train::pool_envs::PoolEnvs;
use crate::train::run_log::RunLog;
use crate::train::spec::{Limits, RunSpec};
use crate::train::threads::actor_threads;
use actors::{ActorPool, PoolConfig};
use anyhow::{bail, Context};
use candle_core::Device;
use envs_api::{Element, Env};
use ppo::{Learner, ObsElement, Rollout, RunClock, Sampler};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use telemetry::Progress;

/// The newest checkpoint on disk: the update count it was written at, and its path.
type LastCheckpoint = Option<(u64, PathBuf)>;

/// The learner a run starts from: on resume, the newest readable checkpoint (checked against
/// the run's network, spaces and env), with its clock and `(updates, path)`; otherwise a fresh one.
fn resume_or_new_learner(
    spec: &RunSpec,
    checkpoint_dir: &Path,
    obs_shape: &[usize],
    n_actions: usize,
    device: &Device,
) -> anyhow::Result<(Learner, RunClock, LastCheckpoint)> {
    let (cfg, dir) = (&spec.cfg, spec.dir.as_path());
    let latest = if spec.resume {
        // Under the lock no one else writes here: a temp file is a write a kill cut short.
        for stale in ppo::remove_temp_files(checkpoint_dir)? {
            eprintln!(
                "removed {}, left by a checkpoint write that was cut short",
                stale.display()
            );
        }
        crate::eval::checkpoint::load_newest(checkpoint_dir, device)
            .context("cannot resume the run")?
    } else {
        None
    };
    Ok(match latest {
        Some((latest, learner)) => {
            if learner.network_config() != &cfg.network {
                bail!(
                    "{}: the checkpoint's network differs from the run's config",
                    latest.display()
                );
            }
            check_spaces(&learner, &latest, &cfg.env, obs_shape, n_actions)?;
            crate::eval::checkpoint::check_same_env(
                &latest,
                crate::eval::checkpoint::embedded_config(&latest)?.as_ref(),
                &cfg.env,
                &dir.join(run_dir::CONFIG_FILE),
            )?;
            let clock = ppo::read_header(&latest)?.clock.unwrap_or_default();
            let updates = learner.updates();
            (learner, clock, Some((updates, latest)))
        }
        None => {
            let plan = cfg.ppo.validate()?;
            let learner = Learner::new(plan, cfg.network.clone(), obs_shape, n_actions, device)?;
            (learner, RunClock::default(), None)
        }
    })
}

/// Env seeds of a resumed run are offset by `updates × RESUME_SEED_STRIDE` (a prime, so runs
/// resumed at different points do not share seeds).
const RESUME_SEED_STRIDE: u64 = 1_000_003;

/// The activity picture's evaluation episode plays with `seed ^ ACTIVITY_EPISODE_SEED_MASK`, so
/// it is not one of the training envs' episodes.
const ACTIVITY_EPISODE_SEED_MASK: u64 = 0xE7A1;

/// The training loop for observations of element type `T`: the sampler fills a rollout from
/// the actor pool's envs, the learner updates on it, the run log records both.
pub(crate) struct Driver<'a, T: Element + ObsElement> {
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
    last_checkpoint: LastCheckpoint,
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
    pub(crate) fn new(spec: &'a RunSpec, make_env: envs::MakeEnv<T>) -> anyhow::Result<Self> {
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
        let (learner, clock, last_checkpoint) =
            resume_or_new_learner(spec, &checkpoint_dir, &obs_shape, n_actions, &device)?;
        let params: usize = learner
            .parameters()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum();
        crate::train::preflight::check(
            cfg,
            &obs_shape,
            std::mem::size_of::<T>() as u64,
            params as u64,
        )?;

        let num_envs = cfg.ppo.num_envs;
        // A resumed run must not replay the same env trajectories: offset the seeds by progress.
        let env_seed = cfg
            .seed
            .wrapping_add(learner.updates().wrapping_mul(RESUME_SEED_STRIDE));
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

    pub(crate) fn run(
        mut self,
        limits: &Limits,
        stop: &Arc<AtomicBool>,
    ) -> anyhow::Result<RunSummary> {
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
            if self
                .learner
                .updates()
                .is_multiple_of(self.cfg.run.checkpoint_every)
            {
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
            self.say_interrupted(summary.frames);
        }
        Ok(summary)
    }

    /// Tells how an interrupted run continues, and from which checkpoint.
    fn say_interrupted(&self, frames: u64) {
        let resume = format!(
            "`brims train --run-dir {} --resume` continues",
            self.dir.display()
        );
        match &self.last_checkpoint {
            Some((_, path)) => eprintln!(
                "interrupted at {} frames: checkpoint {}; {resume}",
                frames,
                path.display()
            ),
            None => eprintln!(
                "interrupted before the first update: no checkpoint written; {resume} \
                 (from the start)"
            ),
        }
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
            self.cfg.seed ^ ACTIVITY_EPISODE_SEED_MASK,
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
