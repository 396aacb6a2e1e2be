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
use ppo::{Learner, ObsElement, PolicyStep, Rollout, UpdateMetrics};
use telemetry::{Progress, RunLogger};

use crate::activity::ActivityCollector;
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
    /// Continue the run in --run-dir from its latest checkpoint.
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

/// Rollout steps between two samples of the core's scale (a few per update is plenty).
const CORE_SCALE_EVERY: usize = 8;

/// Name of the per-run CSV of finished episodes (`compare` reads it).
pub(crate) const RETURNS_FILE: &str = "returns.csv";
/// Name of the per-run JSON summary.
pub(crate) const SUMMARY_FILE: &str = "summary.json";

/// The Ctrl-C flag: the first Ctrl-C finishes the current update, checkpoints and exits 0; a
/// second one exits at once.
pub(crate) fn install_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("interrupt: finishing the current update, then writing a checkpoint");
    });
    stop
}

/// `brims train`.
pub(crate) fn run(args: &TrainArgs) -> anyhow::Result<serde_json::Value> {
    let (cfg, dir) = prepare_run(args)?;
    let stop = install_ctrl_c();
    let limits = Limits {
        seconds: None,
        quiet: args.quiet,
    };
    let summary = train(&cfg, &dir, args.resume, &limits, &stop)?;
    Ok(serde_json::json!({
        "run_dir": summary.run_dir,
        "frames": summary.frames,
        "mean_return_last_20": summary.mean_return_last_20,
    }))
}

/// Resolves the config and the run directory, creating it (and recording the effective config
/// and what produced the run) for a new run.
pub(crate) fn prepare_run(args: &TrainArgs) -> anyhow::Result<(RunConfig, PathBuf)> {
    if args.resume {
        let Some(dir) = &args.run_dir else {
            bail!("--resume needs --run-dir DIR (the run to continue)");
        };
        if args.config.is_some() || !args.overrides.is_empty() {
            bail!(
                "--resume continues a run with the config in its run dir; drop --config and --set"
            );
        }
        run_dir::prepare(dir, true)?;
        let cfg = RunConfig::load(&dir.join(run_dir::CONFIG_FILE), &[])?;
        return Ok((cfg, dir.clone()));
    }
    let Some(path) = &args.config else {
        bail!("--config FILE is required (see configs/), or --resume with --run-dir");
    };
    let cfg = RunConfig::load(path, &args.overrides)?;
    let dir = run_dir::choose(args.run_dir.as_deref(), &cfg.name);
    run_dir::prepare(&dir, false)?;
    run_dir::write_atomic(&dir.join(run_dir::CONFIG_FILE), cfg.to_toml()?.as_bytes())?;
    let meta = run_dir::metadata(cfg.seed, &path.display().to_string());
    run_dir::write_atomic(
        &dir.join(run_dir::META_FILE),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )?;
    Ok((cfg, dir))
}

/// Extra limits on a run (the benchmark stops after some seconds).
pub(crate) struct Limits {
    pub seconds: Option<f64>,
    pub quiet: bool,
}

/// Trains `cfg` in `dir` (resuming from its latest checkpoint if `resume`).
pub(crate) fn train(
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
    limits: &Limits,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<RunSummary> {
    match envs::EnvFactory::from_config(&cfg.env)? {
        envs::EnvFactory::Frames(make) => {
            Driver::<u8>::new(cfg, dir, resume, make)?.run(limits, stop)
        }
        envs::EnvFactory::Vectors(make) => {
            Driver::<f32>::new(cfg, dir, resume, make)?.run(limits, stop)
        }
    }
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
    frames_per_step: u64,
    /// Whether the core reports module activity (BRIMs), gathered into `activity`.
    trace_cores: bool,
    activity: ActivityCollector,
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
    fn new(
        cfg: &'a RunConfig,
        dir: &Path,
        resume: bool,
        make_env: envs::MakeEnv<T>,
    ) -> anyhow::Result<Self> {
        // Probe one env on this thread: a bad game name fails here, before any thread starts.
        let probe = make_env(0).map_err(|e| anyhow::anyhow!("{e}"))?;
        let obs_shape = probe.observation_space().shape().to_vec();
        let Some(n_actions) = probe.action_space().n() else {
            bail!("the env's action space is not discrete");
        };
        drop(probe);

        let device = Device::Cpu;
        let checkpoint_dir = dir.join(run_dir::CHECKPOINT_DIR);
        let learner = if resume {
            let Some(latest) = ppo::latest_checkpoint(&checkpoint_dir)? else {
                bail!("--resume: no checkpoint in {}", checkpoint_dir.display());
            };
            let learner = Learner::resume(&latest, &device)
                .with_context(|| format!("cannot resume from {}", latest.display()))?;
            if learner.network_config() != &cfg.network {
                bail!(
                    "{}: the checkpoint's network differs from the run's config",
                    latest.display()
                );
            }
            learner
        } else {
            let plan = cfg.ppo.validate()?;
            Learner::new(plan, cfg.network.clone(), &obs_shape, n_actions, &device)?
        };

        let num_envs = cfg.ppo.num_envs;
        // A resumed run must not replay the same env trajectories: offset the seeds by progress.
        let env_seed = cfg
            .seed
            .wrapping_add(learner.updates().wrapping_mul(1_000_003));
        let pool = ActorPool::new(
            PoolConfig {
                num_envs,
                num_threads: cfg.actors.threads.min(num_envs),
                double_buffer: cfg.actors.double_buffer && num_envs >= 2,
                seed: env_seed,
            },
            make_env,
        )?;
        let groups = (0..pool.num_groups()).map(|g| pool.group_envs(g)).collect();
        let obs_size = obs_shape.iter().product();

        let mut logger = RunLogger::create(dir)?;
        if !resume {
            logger.text("config", &format!("```toml\n{}\n```", cfg.to_toml()?), 0)?;
        }
        let csv_path = dir.join(RETURNS_FILE);
        let new_csv = !csv_path.exists();
        let mut returns_csv = std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&csv_path)
                .with_context(|| format!("cannot write {}", csv_path.display()))?,
        );
        if new_csv {
            writeln!(
                returns_csv,
                "global_step,frames,episodic_return,episodic_length"
            )?;
        }
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
            recent_returns: VecDeque::with_capacity(20),
            frames_per_step: cfg.env.frames_per_step(),
            trace_cores: matches!(cfg.network.core, Some(brims::CoreConfig::Brims(_))),
            activity: ActivityCollector::default(),
            core_scale: CoreScale::default(),
        })
    }

    fn run(mut self, limits: &Limits, stop: &Arc<AtomicBool>) -> anyhow::Result<RunSummary> {
        let (num_steps, num_envs) = (self.cfg.ppo.num_steps, self.cfg.ppo.num_envs);
        let total_steps = self.cfg.total_frames / self.frames_per_step;
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
            self.collect(&mut rollout, &mut groups)?;
            let t1 = Instant::now();
            let metrics = self.learner.update(&rollout)?;
            let t2 = Instant::now();
            rollout_secs += (t1 - t0).as_secs_f64();
            update_secs += (t2 - t1).as_secs_f64();

            let global_step = self.learner.global_step();
            let sps = (global_step - start_step) as f64 / started.elapsed().as_secs_f64();
            self.log_update(&metrics, global_step, sps)?;
            progress.update(
                global_step * self.frames_per_step,
                sps * self.frames_per_step as f64,
            );
            if let Some(mean) = self.mean_recent_return() {
                progress.set_mean_return(mean);
            }
            if self.learner.updates() % self.cfg.run.checkpoint_every == 0 {
                let path = self.checkpoint()?;
                progress.println(&format!("checkpoint {}", path.display()));
            }
        }
        // The final state, unless the last update just wrote it.
        if self.learner.updates() % self.cfg.run.checkpoint_every != 0 {
            let path = self.checkpoint()?;
            progress.println(&format!("checkpoint {}", path.display()));
        }
        progress.finish();
        if self.trace_cores {
            self.log_activity_image()?;
        }
        let steps_done = self.learner.global_step() - start_step;
        let wall = started.elapsed().as_secs_f64();
        let summary = RunSummary {
            run_dir: self.dir.clone(),
            frames: self.learner.global_step() * self.frames_per_step,
            mean_return_last_20: self.mean_recent_return(),
            sps: if wall > 0.0 {
                steps_done as f64 / wall
            } else {
                0.0
            },
            rollout_secs,
            update_secs,
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
            eprintln!("interrupted: checkpoint written to {}", self.dir.display());
        }
        Ok(summary)
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
    /// the actor threads while the driver runs the policy for the other.
    fn collect(
        &mut self,
        rollout: &mut Rollout,
        groups: &mut [GroupState<T>],
    ) -> anyhow::Result<()> {
        let num_steps = rollout.num_steps();
        let start_state =
            CoreState::cat(&groups.iter().map(|g| g.state.clone()).collect::<Vec<_>>())?;
        rollout.begin(&start_state)?;
        for t in 0..num_steps {
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
        Ok(())
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
            self.logger
                .scalar("charts/episodic_return", stats.ret, step_now)?;
            self.logger
                .scalar("charts/episodic_length", stats.len as f64, step_now)?;
            writeln!(
                self.returns_csv,
                "{step_now},{},{},{}",
                step_now * self.frames_per_step,
                stats.ret,
                stats.len
            )?;
            if self.recent_returns.len() == 20 {
                self.recent_returns.pop_front();
            }
            self.recent_returns.push_back(stats.ret);
        }
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
        for (tag, value) in scalars {
            self.logger.scalar(tag, value, step)?;
        }
        for (l, (rms, spread)) in self.core_scale.take().into_iter().enumerate() {
            self.logger
                .scalar(&format!("core/layer{l}/h_rms"), rms, step)?;
            self.logger
                .scalar(&format!("core/layer{l}/h_spread"), spread, step)?;
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
            self.logger
                .brims_activity(&bands, self.learner.global_step(), true)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join(run_dir::CHECKPOINT_DIR);
        Ok(self
            .learner
            .save_checkpoint(&dir, self.cfg.run.keep_checkpoints)?)
    }
}
