//! The learner: network + Adam + RNG + counters; one PPO update per rollout.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_pcg::Pcg64;

use crate::adam::Adam;
use crate::checkpoint::{self, CheckpointHeader, RunClock};
use crate::config::{PpoConfig, PpoPlan};
use crate::error::{PpoError, Result};
use crate::loss::{explained_variance, ppo_loss, LossInputs};
use crate::network::{ActorCritic, NetworkConfig};
use crate::rollout::Rollout;

/// Diagnostics of one update (CleanRL's `losses/*` and `charts/learning_rate`).
/// Loss terms and KLs are those of the last minibatch, as CleanRL logs them.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateMetrics {
    /// Update index, 1-based.
    pub update: u64,
    /// Environment steps consumed so far (after this update).
    pub global_step: u64,
    /// `losses/policy_loss`.
    pub pg_loss: f64,
    /// `losses/value_loss`.
    pub v_loss: f64,
    /// `losses/entropy`.
    pub entropy: f64,
    /// `losses/approx_kl` (`mean((r − 1) − log r)`).
    pub approx_kl: f64,
    /// `losses/old_approx_kl` (`mean(−log r)`).
    pub old_approx_kl: f64,
    /// `losses/clipfrac`: mean over all minibatches of this update.
    pub clipfrac: f64,
    /// `losses/explained_variance` of the rollout's values against its returns.
    pub explained_variance: f64,
    /// Mean global gradient norm (before clipping) over the minibatches.
    pub grad_norm: f64,
    /// Mean gradient norm of each part over the minibatches (before clipping): `[encoder,
    /// core, heads]`. A core that passes too little of its input through shows up as an
    /// encoder norm orders of magnitude below the heads'.
    pub grad_norm_parts: [f64; 3],
    /// `charts/learning_rate` used by this update.
    pub learning_rate: f64,
    /// Epochs run (fewer than `update_epochs` when the target-KL stop fired).
    pub epochs: usize,
    /// `max |r − 1|` on the first minibatch of the first epoch: ~0 when replay matches acting.
    pub first_ratio_deviation: f64,
}

/// Owns the network, its parameters, Adam, the RNG (minibatch shuffles; also lendable for
/// action sampling) and the counters, so a checkpoint of it resumes a run exactly.
pub struct Learner {
    plan: PpoPlan,
    network: NetworkConfig,
    varmap: VarMap,
    net: ActorCritic,
    adam: Adam,
    rng: Pcg64,
    updates: u64,
    global_step: u64,
}

impl Learner {
    /// A fresh learner: network for `obs_shape` / `n_actions` on `device`, initialised from
    /// `plan.config.seed`.
    pub fn new(
        plan: PpoPlan,
        network: NetworkConfig,
        obs_shape: &[usize],
        n_actions: usize,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = Pcg64::seed_from_u64(plan.config.seed);
        let mut varmap = VarMap::new();
        let net = ActorCritic::new(
            &network,
            obs_shape,
            n_actions,
            &mut varmap,
            device,
            &mut rng,
        )?;
        let adam = Adam::new(&varmap, plan.config.adam_eps)?;
        Ok(Learner {
            plan,
            network,
            varmap,
            net,
            adam,
            rng,
            updates: 0,
            global_step: 0,
        })
    }

    /// The network (for acting).
    pub fn net(&self) -> &ActorCritic {
        &self.net
    }
    /// The validated hyperparameters.
    pub fn plan(&self) -> &PpoPlan {
        &self.plan
    }
    /// The network configuration.
    pub fn network_config(&self) -> &NetworkConfig {
        &self.network
    }
    /// Updates done so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }
    /// Environment steps consumed so far.
    pub fn global_step(&self) -> u64 {
        self.global_step
    }
    /// The learner's RNG, checkpointed with it (a synchronous loop samples actions from it).
    pub fn rng_mut(&mut self) -> &mut Pcg64 {
        &mut self.rng
    }
    /// The network and the RNG to sample actions from, together ([`crate::Sampler::collect`]
    /// takes both).
    pub fn acting(&mut self) -> (&ActorCritic, &mut Pcg64) {
        (&self.net, &mut self.rng)
    }
    /// All parameters by name (shapes as in the network).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = match self.varmap.data().lock() {
            Ok(d) => d
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect(),
            Err(p) => p
                .into_inner()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect(),
        };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// One PPO update on `rollout` (`[T, N]` = `num_steps × num_envs` of the plan): GAE, then
    /// `update_epochs` epochs over minibatches of whole env sequences, each replayed through the
    /// core from the rollout's start state with its reset flags.
    ///
    /// A non-finite loss or gradient norm returns [`PpoError::NonFinite`]; the parameters may
    /// then be partly updated, so stop and resume from the last checkpoint.
    pub fn update(&mut self, rollout: &Rollout) -> Result<UpdateMetrics> {
        let c = self.plan.config.clone();
        let (steps, envs) = (rollout.num_steps(), rollout.num_envs());
        self.check_rollout_shape(rollout)?;
        rollout.validate()?;
        let update = self.updates + 1;
        let lr = self.plan.learning_rate_at(update);
        let dev = self.net.device().clone();

        let (advantages, returns) = rollout.advantages(c.gamma, c.gae_lambda);
        let obs = rollout.obs_tensor(&dev)?;
        let (resets, actions, logprobs, values) = rollout.policy_tensors(&dev)?;
        let advantages_t = Tensor::from_slice(&advantages, (steps, envs), &dev)?;
        let returns_t = Tensor::from_slice(&returns, (steps, envs), &dev)?;
        let start = rollout.start_state().ok_or(PpoError::RolloutIncomplete {
            what: "start state (call begin)",
            step: 0,
            env: 0,
        })?;

        let mut envinds: Vec<u32> = (0..envs as u32).collect();
        let mut clipfracs = Vec::new();
        let mut grad_norms = Vec::new();
        let mut part_norms = [0f64; 3];
        let mut last = None;
        let mut first_ratio_deviation = f64::NAN;
        let mut epochs = 0;
        for epoch in 0..c.update_epochs {
            epochs += 1;
            envinds.shuffle(&mut self.rng);
            for mbenvinds in envinds.chunks(self.plan.envs_per_minibatch) {
                let idx = Tensor::from_slice(mbenvinds, mbenvinds.len(), &dev)?;
                let pick = |x: &Tensor| x.index_select(&idx, 1);
                let (newlogprob, entropy, newvalue) = self.net.evaluate_sequence(
                    &pick(&obs)?,
                    &pick(&resets)?,
                    &start.index_select(&idx)?,
                    &pick(&actions)?,
                )?;
                let flat = |x: Tensor| x.flatten_all();
                let mb_logprobs = flat(pick(&logprobs)?)?;
                let newlogprob = flat(newlogprob)?;
                if epoch == 0 && clipfracs.is_empty() {
                    let dev_r = (&newlogprob - &mb_logprobs)?
                        .exp()?
                        .affine(1.0, -1.0)?
                        .abs()?
                        .max(0)?;
                    first_ratio_deviation =
                        f64::from(dev_r.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                }
                let parts = ppo_loss(
                    &LossInputs {
                        newlogprob: &newlogprob,
                        entropy: &flat(entropy)?,
                        newvalue: &flat(newvalue)?,
                        logprobs: &mb_logprobs,
                        advantages: &flat(pick(&advantages_t)?)?,
                        returns: &flat(pick(&returns_t)?)?,
                        values: &flat(pick(&values)?)?,
                    },
                    c.clip_coef,
                    c.clip_vloss,
                    c.norm_adv,
                )?;
                let loss = parts.total(c.ent_coef, c.vf_coef)?;
                let loss_value = f64::from(loss.to_scalar::<f32>()?);
                finite("loss", loss_value, update, epoch)?;
                let grads = loss.backward()?;
                let (norm, parts_norm) = self.adam.grad_norm(&grads)?;
                finite("gradient norm", norm, update, epoch)?;
                self.adam.clipped_step(&grads, norm, c.max_grad_norm, lr)?;
                clipfracs.push(parts.clipfrac);
                grad_norms.push(norm);
                for (sum, n) in part_norms.iter_mut().zip(parts_norm) {
                    *sum += n;
                }
                last = Some(parts);
            }
            if let (Some(target), Some(p)) = (c.target_kl, &last) {
                if p.approx_kl > target {
                    break;
                }
            }
        }
        let last = last.ok_or(PpoError::Shape {
            op: "Learner::update",
            why: "no minibatch ran".into(),
        })?;
        self.updates = update;
        self.global_step += self.plan.batch_size as u64;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        Ok(UpdateMetrics {
            update,
            global_step: self.global_step,
            pg_loss: f64::from(last.pg_loss.to_scalar::<f32>()?),
            v_loss: f64::from(last.v_loss.to_scalar::<f32>()?),
            entropy: f64::from(last.entropy.to_scalar::<f32>()?),
            approx_kl: last.approx_kl,
            old_approx_kl: last.old_approx_kl,
            clipfrac: mean(&clipfracs),
            explained_variance: explained_variance(rollout.values(), &returns),
            grad_norm: mean(&grad_norms),
            grad_norm_parts: part_norms.map(|s| s / grad_norms.len().max(1) as f64),
            learning_rate: lr,
            epochs,
            first_ratio_deviation,
        })
    }

    /// The rollout has the learner's steps × envs of its observation shape.
    fn check_rollout_shape(&self, rollout: &Rollout) -> Result<()> {
        let c = &self.plan.config;
        let (steps, envs) = (rollout.num_steps(), rollout.num_envs());
        if steps != c.num_steps || envs != c.num_envs || rollout.obs_shape() != self.net.obs_shape()
        {
            return Err(PpoError::Shape {
                op: "Learner::update",
                why: format!(
                    "rollout is {steps} steps × {envs} envs of {:?}, the learner expects {} × {} of {:?}",
                    rollout.obs_shape(),
                    c.num_steps,
                    c.num_envs,
                    self.net.obs_shape()
                ),
            });
        }
        Ok(())
    }

    /// Adds environment steps to the counter without an update (e.g. steps a driver discarded).
    pub fn add_global_steps(&mut self, steps: u64) {
        self.global_step += steps;
    }

    /// Writes a checkpoint (`ckpt-<update>.safetensors` + `ckpt-<update>.json`) into `dir`
    /// atomically and keeps only the newest `keep` (≥ 1). Returns the header's path.
    pub fn save_checkpoint(&self, dir: &Path, keep: usize) -> Result<PathBuf> {
        self.save_checkpoint_with_clock(dir, keep, None)
    }

    /// [`Learner::save_checkpoint`], recording the driver's `clock` (read it back with
    /// [`crate::read_header`]).
    pub fn save_checkpoint_with_clock(
        &self,
        dir: &Path,
        keep: usize,
        clock: Option<RunClock>,
    ) -> Result<PathBuf> {
        self.save_checkpoint_described(dir, keep, clock, None)
    }

    /// [`Learner::save_checkpoint_with_clock`], also recording the run's effective config
    /// (`run_config`, e.g. its TOML) in the header, so the checkpoint describes itself.
    pub fn save_checkpoint_described(
        &self,
        dir: &Path,
        keep: usize,
        clock: Option<RunClock>,
        run_config: Option<&str>,
    ) -> Result<PathBuf> {
        let mut tensors = self.adam.state_tensors();
        for (name, t) in self.parameters() {
            tensors.insert(format!("model.{name}"), t);
        }
        let header = CheckpointHeader {
            format_version: checkpoint::FORMAT_VERSION,
            ppo: self.plan.config.clone(),
            network: self.network.clone(),
            obs_shape: self.net.obs_shape().to_vec(),
            n_actions: self.net.n_actions(),
            global_step: self.global_step,
            updates: self.updates,
            adam_step: self.adam.step,
            rng: self.rng.clone(),
            tensors_file: String::new(),
            tensors_bytes: 0,
            clock,
            run_config: run_config.map(str::to_string),
        };
        checkpoint::write(dir, header, &tensors, keep)
    }

    /// Restores parameters, Adam moments, RNG and counters from the checkpoint whose header is
    /// `header_path`. Everything is checked (format, every tensor present with this network's
    /// shape) before anything in `self` changes.
    pub fn restore(&mut self, header_path: &Path) -> Result<()> {
        let header = checkpoint::read_header(header_path)?;
        let (tensors_path, tensors) = checkpoint::read_tensors(header_path, &header)?;
        let mut expected: Vec<(String, Vec<usize>)> = self
            .parameters()
            .into_iter()
            .map(|(n, t)| (format!("model.{n}"), t.dims().to_vec()))
            .collect();
        expected.extend(self.adam.expected());
        for (name, shape) in &expected {
            let found = tensors.get(name).map(|t| t.dims().to_vec());
            if found.as_ref() != Some(shape) {
                return Err(PpoError::CheckpointShape {
                    path: tensors_path,
                    name: name.clone(),
                    expected: shape.clone(),
                    found: found.unwrap_or_default(),
                });
            }
        }
        let dev = self.net.device().clone();
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(&dev)?)))
            .collect::<Result<std::collections::HashMap<_, _>>>()?;
        for (name, t) in self.parameters() {
            let _ = t; // the Var shares storage with the network; set it through the map
            self.varmap
                .set_one(&name, &tensors[&format!("model.{name}")])?;
        }
        self.adam.load_state(&tensors, header.adam_step)?;
        self.rng = header.rng;
        self.updates = header.updates;
        self.global_step = header.global_step;
        Ok(())
    }

    /// A learner rebuilt from the checkpoint `header_path` (its own PPO and network config) on
    /// `device`, continuing exactly where the saved run stopped.
    pub fn resume(header_path: &Path, device: &Device) -> Result<Self> {
        let header = checkpoint::read_header(header_path)?;
        let plan = header.ppo.validate()?;
        let mut learner = Learner::new(
            plan,
            header.network.clone(),
            &header.obs_shape,
            header.n_actions,
            device,
        )?;
        learner.restore(header_path)?;
        Ok(learner)
    }

    /// The config a checkpoint was written with (without loading its tensors).
    pub fn checkpoint_config(header_path: &Path) -> Result<(PpoConfig, NetworkConfig)> {
        let h = checkpoint::read_header(header_path)?;
        Ok((h.ppo, h.network))
    }
}

/// `value` (the update's `what`) is finite, or the update stops with [`PpoError::NonFinite`].
fn finite(what: &'static str, value: f64, update: u64, epoch: usize) -> Result<()> {
    if value.is_finite() {
        return Ok(());
    }
    Err(PpoError::NonFinite {
        what,
        value,
        update,
        epoch,
    })
}
