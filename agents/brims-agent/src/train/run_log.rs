//! What a training run writes as it goes: TensorBoard (CleanRL's tags, the core's scale and
//! BRIMs module activity), returns.csv, and the recent mean return the progress line shows.
//!
//! Episodes are held until the update that learns from their rollout is done ([`RunLog::hold`]
//! then [`RunLog::log_episodes`]); a rollout abandoned at a stop signal never reaches `hold`, so
//! returns.csv only holds episodes of updates the learner has made (and a resumed run's view
//! matches its checkpoint).

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use brims::CoreState;
use candle_core::Tensor;
use ppo::{ActEvent, Collected, SamplerEvents, UpdateMetrics};
use telemetry::{tags, ActivityBand, RunLogger, StepEvents};

use crate::activity::{ActivityCollector, DynamicsTracker};
use crate::config::run::RunConfig;
use crate::run::dir::{KeptReturns, RETURNS_FILE};

/// Rollout steps between two samples of the core's scale (a few per update is plenty).
const CORE_SCALE_EVERY: usize = 8;

/// Returns averaged for the progress line and summary.json's `mean_return_last_20`.
const RECENT_RETURNS: usize = 20;

/// How far from 1 the first minibatch's ratio may be before the run warns that acting and
/// replay disagree (float noise of the fused paths is far below it).
const RATIO_CANARY_BOUND: f64 = 1e-4;

/// A run's logs: the TensorBoard event file, returns.csv, and what acting reported.
pub(crate) struct RunLog {
    logger: RunLogger,
    returns_csv: std::io::BufWriter<std::fs::File>,
    recent_returns: VecDeque<f64>,
    frames_per_step: u64,
    /// Episodes of the rollout just collected, as `(global_step, return, length)`, until its
    /// update is done.
    held_episodes: Vec<(u64, f64, u64)>,
    acting: ActingTelemetry,
    /// The ratio canary has warned (once per process).
    ratio_warned: bool,
}

impl RunLog {
    /// Opens the logs of the run in `dir` at `step`: a new run logs its config; a resumed one
    /// purges TensorBoard records after `step` (what earlier processes logged after the
    /// checkpoint is not the run's) and continues returns.csv, already cut to `kept`.
    pub(crate) fn open(
        dir: &Path,
        cfg: &RunConfig,
        resume: bool,
        step: u64,
        kept: &KeptReturns,
    ) -> anyhow::Result<Self> {
        let mut logger = RunLogger::create(dir)?;
        if resume {
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
        let recent_returns = kept.returns[kept.returns.len().saturating_sub(RECENT_RETURNS)..]
            .iter()
            .copied()
            .collect();
        Ok(RunLog {
            logger,
            returns_csv,
            recent_returns,
            frames_per_step: cfg.env.frames_per_step(),
            held_episodes: Vec::new(),
            acting: ActingTelemetry::default(),
            ratio_warned: false,
        })
    }

    /// What the sampler reports while acting goes here.
    pub(crate) fn acting(&mut self) -> &mut ActingTelemetry {
        &mut self.acting
    }

    /// Holds the episodes of a rollout collected from `step0` by `num_envs` envs until
    /// [`RunLog::log_episodes`] (an episode ended at rollout step `t` is logged at
    /// `step0 + (t + 1) · num_envs`).
    pub(crate) fn hold(&mut self, step0: u64, num_envs: usize, collected: &Collected) {
        self.held_episodes.clear();
        for (t, e) in &collected.episodes {
            let step = step0 + ((t + 1) * num_envs) as u64;
            self.held_episodes.push((step, e.ret, e.len));
        }
    }

    /// Logs the held episodes (TensorBoard, returns.csv, the recent mean) and flushes
    /// returns.csv.
    pub(crate) fn log_episodes(&mut self) -> anyhow::Result<()> {
        for (step, ret, len) in std::mem::take(&mut self.held_episodes) {
            self.logger.scalar(tags::EPISODIC_RETURN, ret, step)?;
            self.logger
                .scalar(tags::EPISODIC_LENGTH, len as f64, step)?;
            writeln!(
                self.returns_csv,
                "{step},{},{ret},{len}",
                step * self.frames_per_step
            )?;
            if self.recent_returns.len() == RECENT_RETURNS {
                self.recent_returns.pop_front();
            }
            self.recent_returns.push_back(ret);
        }
        self.returns_csv.flush()?;
        Ok(())
    }

    /// The mean of the last 20 episodic returns, once there is one.
    pub(crate) fn mean_recent_return(&self) -> Option<f64> {
        (!self.recent_returns.is_empty())
            .then(|| self.recent_returns.iter().sum::<f64>() / self.recent_returns.len() as f64)
    }

    /// Logs an update's metrics, SPS (agent steps per second), and what acting reported since
    /// the last update (core scale, attention, module activity); flushes.
    pub(crate) fn log_update(
        &mut self,
        m: &UpdateMetrics,
        step: u64,
        sps: f64,
    ) -> anyhow::Result<()> {
        let scalars = [
            (tags::SPS, sps),
            (tags::LEARNING_RATE, m.learning_rate),
            (tags::VALUE_LOSS, m.v_loss),
            (tags::POLICY_LOSS, m.pg_loss),
            (tags::ENTROPY, m.entropy),
            (tags::OLD_APPROX_KL, m.old_approx_kl),
            (tags::APPROX_KL, m.approx_kl),
            (tags::CLIPFRAC, m.clipfrac),
            (tags::EXPLAINED_VARIANCE, m.explained_variance),
            (tags::GRAD_NORM, m.grad_norm),
            (tags::GRAD_NORM_ENCODER, m.grad_norm_parts[0]),
            (tags::GRAD_NORM_CORE, m.grad_norm_parts[1]),
            (tags::GRAD_NORM_HEADS, m.grad_norm_parts[2]),
            (tags::FIRST_RATIO_DEVIATION, m.first_ratio_deviation),
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
        for (l, (rms, spread)) in self.acting.core_scale.take().into_iter().enumerate() {
            self.logger
                .scalar(&format!("core/layer{l}/h_rms"), rms, step)?;
            self.logger
                .scalar(&format!("core/layer{l}/h_spread"), spread, step)?;
        }
        for (l, (switch_rate, run)) in self.acting.dynamics.take().into_iter().enumerate() {
            self.logger
                .scalar(&format!("brims/layer{l}/switch_rate"), switch_rate, step)?;
            self.logger
                .scalar(&format!("brims/layer{l}/mean_run_length"), run, step)?;
        }
        for (l, a) in self
            .acting
            .activity
            .take_attention()
            .into_iter()
            .enumerate()
        {
            self.logger.scalar(
                &format!("brims/layer{l}/attention_entropy"),
                a.entropy,
                step,
            )?;
            self.logger
                .scalar(&format!("brims/layer{l}/read_rms"), a.read_rms, step)?;
        }
        let bands = self.acting.activity.take_bands();
        if !bands.is_empty() {
            self.logger.brims_activity(&bands, step, false)?;
        }
        self.returns_csv.flush()?;
        self.logger.flush()?;
        Ok(())
    }

    /// Logs one evaluation episode's module activity (per-module rates and null-attention
    /// histograms) and its steps × modules picture with the episode's `events` (rewards, lives
    /// lost).
    pub(crate) fn log_activity_image(
        &mut self,
        bands: &[ActivityBand],
        events: &StepEvents,
        step: u64,
    ) -> anyhow::Result<()> {
        if !bands.is_empty() {
            self.logger.brims_activity(bands, step, false)?;
            self.logger
                .brims_activity_image(bands, Some(events), step)?;
        }
        Ok(())
    }

    /// Logs the run's hyperparameters against its final return (TensorBoard's HParams tab).
    pub(crate) fn log_hparams(&mut self, cfg: &RunConfig) -> anyhow::Result<()> {
        self.logger.hparams(
            &crate::train::hparams::of_config(cfg),
            &[tags::EPISODIC_RETURN],
        )?;
        Ok(())
    }

    /// Writes everything buffered.
    pub(crate) fn flush(&mut self) -> anyhow::Result<()> {
        self.returns_csv.flush()?;
        self.logger.flush()?;
        Ok(())
    }
}

/// What the sampler reports while acting, gathered between two updates: BRIMs module activity,
/// attention and dynamics (from the core's traces), and the scale of the core's state.
#[derive(Default)]
pub(crate) struct ActingTelemetry {
    activity: ActivityCollector,
    /// Per layer, how often the active set switches and how long modules stay active.
    dynamics: DynamicsTracker,
    core_scale: CoreScale,
}

impl SamplerEvents for ActingTelemetry {
    fn on_act(&mut self, event: &ActEvent<'_>) -> ppo::Result<()> {
        if let Some(trace) = event.trace {
            self.activity.add(trace, None);
            self.dynamics.add(event.group, trace, event.resets);
        }
        if event.t.is_multiple_of(CORE_SCALE_EVERY) {
            self.core_scale.add(event.next_state)?;
        }
        Ok(())
    }
}

/// Per layer of the core (`h` = state part `2l`): sums of the RMS and of the spread across a
/// group's envs (mean over units of the std over envs) of every sampled acting step, and their
/// count. A core whose output does not depend on the screen has a spread near 0.
#[derive(Default)]
struct CoreScale {
    sums: Vec<(f64, f64)>,
    count: usize,
}

impl CoreScale {
    fn add(&mut self, state: &CoreState) -> candle_core::Result<()> {
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
