//! Rollout storage `[T, N, …]`, allocated once and poison-filled, and GAE.

use brims::CoreState;
use candle_core::{Device, Tensor};

use crate::error::{PpoError, Result};

/// Observation buffer `[T, N, …]`: frames stay `u8`, vectors are `f32`.
#[derive(Clone, Debug)]
pub enum Observations {
    /// Bytes (Atari frames), scaled to [0, 1] by the network.
    U8(Vec<u8>),
    /// Floats, fed as they are.
    F32(Vec<f32>),
}

/// An observation element the rollout can store (`u8` or `f32`).
pub trait ObsElement: Copy + candle_core::WithDType {
    /// The buffer of this element type, if `obs` holds this type.
    fn buffer(obs: &mut Observations) -> Option<&mut Vec<Self>>;
    /// A fresh buffer of `len` elements of this type.
    fn new_buffer(len: usize) -> Observations;
}

impl ObsElement for u8 {
    fn buffer(obs: &mut Observations) -> Option<&mut Vec<u8>> {
        match obs {
            Observations::U8(v) => Some(v),
            Observations::F32(_) => None,
        }
    }
    fn new_buffer(len: usize) -> Observations {
        Observations::U8(vec![0; len])
    }
}

impl ObsElement for f32 {
    fn buffer(obs: &mut Observations) -> Option<&mut Vec<f32>> {
        match obs {
            Observations::F32(v) => Some(v),
            Observations::U8(_) => None,
        }
    }
    fn new_buffer(len: usize) -> Observations {
        Observations::F32(vec![f32::NAN; len])
    }
}

/// One PPO segment: `T` steps of `N` envs, CleanRL's storage (`obs`, `actions`, `logprobs`,
/// `rewards`, `dones`, `values`) plus truncation handling and the core state at the segment start.
///
/// Every slot starts as poison (NaN, `u32::MAX`, or "not written" for u8 frames) and
/// [`Rollout::validate`] (called by the learner) refuses a rollout with an unwritten slot.
///
/// Filling it, per step `t` (envs may be written in groups with `env0` = first env of the group):
/// 1. [`Rollout::record_policy`]: the observation the policy saw, the reset flags it saw
///    (1.0 = episode started at this step), the sampled actions, their log-probs and values;
/// 2. [`Rollout::record_outcome`]: reward, terminated, truncated of that action;
/// 3. for each truncated env, [`Rollout::record_final_value`]: V(final observation), computed
///    with the state after step `t` and no reset;
///
/// and after step `T − 1`, [`Rollout::record_next_values`]: V(observation after the last step).
/// Call [`Rollout::begin`] with the core state before step 0 to start the next segment.
#[derive(Clone, Debug)]
pub struct Rollout {
    num_steps: usize,
    num_envs: usize,
    obs_shape: Vec<usize>,
    obs_size: usize,
    obs: Observations,
    obs_written: Vec<bool>,
    resets: Vec<f32>,
    actions: Vec<u32>,
    logprobs: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<f32>,
    truncated: Vec<f32>,
    final_values: Vec<f32>,
    next_values: Vec<f32>,
    start_state: Option<CoreState>,
}

/// What the policy saw and did at one step for `k` envs (see [`Rollout::record_policy`]).
#[derive(Clone, Copy, Debug)]
pub struct PolicyStep<'a, E> {
    /// `k` flat observations, `k · obs_size` elements.
    pub obs: &'a [E],
    /// `k` reset flags as acting used them (1.0 = episode started at this step).
    pub resets: &'a [f32],
    /// `k` sampled actions.
    pub actions: &'a [u32],
    /// `k` log-probabilities of those actions.
    pub logprobs: &'a [f32],
    /// `k` value estimates.
    pub values: &'a [f32],
}

const ACTION_POISON: u32 = u32::MAX;

impl Rollout {
    /// Storage for `num_steps` × `num_envs` steps of observations of `obs_shape` with element
    /// type `E` (`u8` or `f32`), all poison.
    pub fn new<E: ObsElement>(num_steps: usize, num_envs: usize, obs_shape: &[usize]) -> Self {
        let obs_size: usize = obs_shape.iter().product();
        let n = num_steps * num_envs;
        Rollout {
            num_steps,
            num_envs,
            obs_shape: obs_shape.to_vec(),
            obs_size,
            obs: E::new_buffer(n * obs_size),
            obs_written: vec![false; n],
            resets: vec![f32::NAN; n],
            actions: vec![ACTION_POISON; n],
            logprobs: vec![f32::NAN; n],
            values: vec![f32::NAN; n],
            rewards: vec![f32::NAN; n],
            terminated: vec![f32::NAN; n],
            truncated: vec![f32::NAN; n],
            final_values: vec![f32::NAN; n],
            next_values: vec![f32::NAN; num_envs],
            start_state: None,
        }
    }

    /// Starts a new segment: every slot becomes poison again and `start_state` (the core state
    /// before step 0, parts `[N, width]`; detached) is stored.
    pub fn begin(&mut self, start_state: &CoreState) -> Result<()> {
        let b = start_state.batch_size()?;
        if !start_state.parts.is_empty() && b != self.num_envs {
            return Err(PpoError::Shape {
                op: "Rollout::begin",
                why: format!(
                    "start state has batch {b}, the rollout has {} envs",
                    self.num_envs
                ),
            });
        }
        self.obs_written.fill(false);
        if let Observations::F32(v) = &mut self.obs {
            v.fill(f32::NAN);
        }
        for buf in [
            &mut self.resets,
            &mut self.logprobs,
            &mut self.values,
            &mut self.rewards,
            &mut self.terminated,
            &mut self.truncated,
            &mut self.final_values,
            &mut self.next_values,
        ] {
            buf.fill(f32::NAN);
        }
        self.actions.fill(ACTION_POISON);
        self.start_state = Some(start_state.detach());
        Ok(())
    }

    /// Steps per env `T`.
    pub fn num_steps(&self) -> usize {
        self.num_steps
    }
    /// Envs `N`.
    pub fn num_envs(&self) -> usize {
        self.num_envs
    }
    /// Shape of one observation.
    pub fn obs_shape(&self) -> &[usize] {
        &self.obs_shape
    }

    fn range(
        &self,
        what: &'static str,
        t: usize,
        env0: usize,
        k: usize,
        len: usize,
        per: usize,
    ) -> Result<std::ops::Range<usize>> {
        if t >= self.num_steps || env0 + k > self.num_envs || len != k * per {
            return Err(PpoError::Shape {
                op: "Rollout::record",
                why: format!(
                    "{what}: step {t} (of {}), envs {env0}..{} (of {}), {len} values for {k} envs × {per}",
                    self.num_steps,
                    env0 + k,
                    self.num_envs
                ),
            });
        }
        let start = t * self.num_envs + env0;
        Ok(start..start + k)
    }

    /// Records what the policy saw and did at step `t` for envs `env0..env0+k` (`k` =
    /// `step.resets.len()`).
    pub fn record_policy<E: ObsElement>(
        &mut self,
        t: usize,
        env0: usize,
        step: PolicyStep<'_, E>,
    ) -> Result<()> {
        let PolicyStep {
            obs,
            resets,
            actions,
            logprobs,
            values,
        } = step;
        let k = resets.len();
        let slots = self.range("obs", t, env0, k, obs.len(), self.obs_size)?;
        for (what, len) in [
            ("actions", actions.len()),
            ("logprobs", logprobs.len()),
            ("values", values.len()),
        ] {
            self.range(what, t, env0, k, len, 1)?;
        }
        let size = self.obs_size;
        let buf = E::buffer(&mut self.obs).ok_or(PpoError::Shape {
            op: "Rollout::record_policy",
            why: "observation element type differs from the one the rollout was created with"
                .into(),
        })?;
        buf[slots.start * size..slots.end * size].copy_from_slice(obs);
        self.obs_written[slots.clone()].fill(true);
        self.resets[slots.clone()].copy_from_slice(resets);
        self.actions[slots.clone()].copy_from_slice(actions);
        self.logprobs[slots.clone()].copy_from_slice(logprobs);
        self.values[slots].copy_from_slice(values);
        Ok(())
    }

    /// Records the outcome of step `t`'s actions for envs `env0..env0+k`.
    pub fn record_outcome(
        &mut self,
        t: usize,
        env0: usize,
        rewards: &[f32],
        terminated: &[bool],
        truncated: &[bool],
    ) -> Result<()> {
        let k = rewards.len();
        let slots = self.range("rewards", t, env0, k, rewards.len(), 1)?;
        self.range("terminated", t, env0, k, terminated.len(), 1)?;
        self.range("truncated", t, env0, k, truncated.len(), 1)?;
        self.rewards[slots.clone()].copy_from_slice(rewards);
        for (i, s) in slots.enumerate() {
            self.terminated[s] = f32::from(u8::from(terminated[i]));
            self.truncated[s] = f32::from(u8::from(truncated[i]));
        }
        Ok(())
    }

    /// Records V(final observation) of env `env` whose episode was truncated at step `t`.
    pub fn record_final_value(&mut self, t: usize, env: usize, value: f32) -> Result<()> {
        let slots = self.range("final value", t, env, 1, 1, 1)?;
        self.final_values[slots.start] = value;
        Ok(())
    }

    /// Records V(observation after step `T − 1`) for envs `env0..env0+k` (the bootstrap value).
    pub fn record_next_values(&mut self, env0: usize, values: &[f32]) -> Result<()> {
        self.range("next values", 0, env0, values.len(), values.len(), 1)?;
        self.next_values[env0..env0 + values.len()].copy_from_slice(values);
        Ok(())
    }

    /// Checks that every slot GAE and the update read was written.
    pub fn validate(&self) -> Result<()> {
        let n = self.num_envs;
        let first_bad =
            |what: &'static str, bad: &dyn Fn(usize) -> bool, len: usize| -> Result<()> {
                match (0..len).find(|&i| bad(i)) {
                    Some(i) => Err(PpoError::RolloutIncomplete {
                        what,
                        step: i / n,
                        env: i % n,
                    }),
                    None => Ok(()),
                }
            };
        let len = self.num_steps * n;
        first_bad("obs", &|i| !self.obs_written[i], len)?;
        first_bad("resets", &|i| self.resets[i].is_nan(), len)?;
        first_bad("actions", &|i| self.actions[i] == ACTION_POISON, len)?;
        first_bad("logprobs", &|i| self.logprobs[i].is_nan(), len)?;
        first_bad("values", &|i| self.values[i].is_nan(), len)?;
        first_bad("rewards", &|i| self.rewards[i].is_nan(), len)?;
        first_bad("terminated", &|i| self.terminated[i].is_nan(), len)?;
        first_bad("truncated", &|i| self.truncated[i].is_nan(), len)?;
        first_bad(
            "final value (truncated step)",
            &|i| {
                self.truncated[i] > 0.5 && self.terminated[i] < 0.5 && self.final_values[i].is_nan()
            },
            len,
        )?;
        let last = (self.num_steps - 1) * n;
        first_bad(
            "next value (bootstrap after the last step)",
            &|i| {
                i >= last
                    && self.terminated[i] < 0.5
                    && self.truncated[i] < 0.5
                    && self.next_values[i - last].is_nan()
            },
            len,
        )?;
        if self.start_state.is_none() {
            return Err(PpoError::RolloutIncomplete {
                what: "start state (call begin)",
                step: 0,
                env: 0,
            });
        }
        Ok(())
    }

    /// GAE over this rollout: `(advantages, returns)`, each `[T·N]` (t-major).
    pub fn advantages(&self, gamma: f64, lambda: f64) -> (Vec<f32>, Vec<f32>) {
        gae(
            &GaeInputs {
                num_envs: self.num_envs,
                rewards: &self.rewards,
                values: &self.values,
                terminated: &self.terminated,
                truncated: &self.truncated,
                final_values: &self.final_values,
                next_values: &self.next_values,
            },
            gamma,
            lambda,
        )
    }

    /// The core state before step 0 (parts `[N, width]`).
    pub fn start_state(&self) -> Option<&CoreState> {
        self.start_state.as_ref()
    }

    /// Observations as a `[T, N, …]` tensor (u8 or f32) on `device`.
    pub fn obs_tensor(&self, device: &Device) -> Result<Tensor> {
        let mut shape = vec![self.num_steps, self.num_envs];
        shape.extend_from_slice(&self.obs_shape);
        Ok(match &self.obs {
            Observations::U8(v) => Tensor::from_slice(v, shape, device)?,
            Observations::F32(v) => Tensor::from_slice(v, shape, device)?,
        })
    }

    /// Reset flags `[T, N]` (as acting saw them), actions `[T, N]` u32, old log-probs and old
    /// values `[T, N]` f32.
    pub(crate) fn policy_tensors(
        &self,
        device: &Device,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let s = (self.num_steps, self.num_envs);
        Ok((
            Tensor::from_slice(&self.resets, s, device)?,
            Tensor::from_slice(&self.actions, s, device)?,
            Tensor::from_slice(&self.logprobs, s, device)?,
            Tensor::from_slice(&self.values, s, device)?,
        ))
    }

    /// Old values `[T·N]` (t-major), what acting predicted.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

/// The arrays GAE reads, each `[T·N]` t-major (`next_values` is `[N]`).
#[derive(Clone, Copy, Debug)]
pub struct GaeInputs<'a> {
    /// Envs `N`.
    pub num_envs: usize,
    /// `r_t`.
    pub rewards: &'a [f32],
    /// `V(s_t)` as acting predicted.
    pub values: &'a [f32],
    /// 1.0 where step `t` ended in a terminal state (no bootstrap).
    pub terminated: &'a [f32],
    /// 1.0 where step `t` was cut by a time limit (bootstrap from `final_values`).
    pub truncated: &'a [f32],
    /// `V(final observation)` at truncated steps (read nowhere else).
    pub final_values: &'a [f32],
    /// `V(s_T)`: value of the observation after the last step, `[N]`.
    pub next_values: &'a [f32],
}

/// Generalised advantage estimation (Schulman et al. 2016), per env, backwards in time:
///
/// `δ_t = r_t + γ·V_next − V(s_t)`, where `V_next` = 0 if terminated, `V(final obs)` if
/// truncated, else `V(s_{t+1})` (`next_values` after the last step);
/// `A_t = δ_t + γλ·(1 − done_t)·A_{t+1}` with `done_t` = terminated or truncated (the next step
/// belongs to another episode). Returns `(advantages, returns = advantages + values)`.
pub fn gae(x: &GaeInputs, gamma: f64, lambda: f64) -> (Vec<f32>, Vec<f32>) {
    let n = x.num_envs;
    let len = x.rewards.len();
    let steps = len.checked_div(n).unwrap_or(0);
    let mut adv = vec![0f32; len];
    for env in 0..n {
        let mut last = 0f64;
        for t in (0..steps).rev() {
            let i = t * n + env;
            let terminated = x.terminated[i] > 0.5;
            let truncated = x.truncated[i] > 0.5;
            let next_value = if terminated {
                0.0
            } else if truncated {
                f64::from(x.final_values[i])
            } else if t + 1 == steps {
                f64::from(x.next_values[env])
            } else {
                f64::from(x.values[i + n])
            };
            let continues = if terminated || truncated { 0.0 } else { 1.0 };
            let delta = f64::from(x.rewards[i]) + gamma * next_value - f64::from(x.values[i]);
            last = delta + gamma * lambda * continues * last;
            adv[i] = last as f32;
        }
    }
    let returns = adv.iter().zip(x.values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    /// One env, 3 steps, γ = 0.5, λ = 0.5, no episode end: by hand,
    /// δ2 = 1 + 0.5·4 − 3 = 0, δ1 = 1 + 0.5·3 − 2 = 0.5, δ0 = 1 + 0.5·2 − 1 = 1;
    /// A2 = 0, A1 = 0.5, A0 = 1 + 0.25·0.5 = 1.125.
    #[test]
    fn gae_without_episode_end() {
        let x = GaeInputs {
            num_envs: 1,
            rewards: &[1.0, 1.0, 1.0],
            values: &[1.0, 2.0, 3.0],
            terminated: &[0.0; 3],
            truncated: &[0.0; 3],
            final_values: &[f32::NAN; 3],
            next_values: &[4.0],
        };
        let (adv, ret) = gae(&x, 0.5, 0.5);
        close(&adv, &[1.125, 0.5, 0.0]);
        close(&ret, &[2.125, 2.5, 3.0]);
    }

    /// Terminated at step 1: no bootstrap there and no flow of A2 into A1.
    /// δ2 = 1 + 0.5·4 − 3 = 0 → A2 = 0; δ1 = 1 − 2 = −1 → A1 = −1;
    /// δ0 = 1 + 0.5·2 − 1 = 1 → A0 = 1 + 0.25·(−1) = 0.75.
    #[test]
    fn terminated_does_not_bootstrap() {
        let x = GaeInputs {
            num_envs: 1,
            rewards: &[1.0, 1.0, 1.0],
            values: &[1.0, 2.0, 3.0],
            terminated: &[0.0, 1.0, 0.0],
            truncated: &[0.0; 3],
            final_values: &[f32::NAN; 3],
            next_values: &[4.0],
        };
        let (adv, _) = gae(&x, 0.5, 0.5);
        close(&adv, &[0.75, -1.0, 0.0]);
    }

    /// Truncated at step 1 with V(final obs) = 10: δ1 = 1 + 0.5·10 − 2 = 4 → A1 = 4 (A2 does not
    /// flow in); A0 = 1 + 0.25·4 = 2. Terminated and truncated together: terminated wins.
    #[test]
    fn truncated_bootstraps_from_final_value() {
        let mut x = GaeInputs {
            num_envs: 1,
            rewards: &[1.0, 1.0, 1.0],
            values: &[1.0, 2.0, 3.0],
            terminated: &[0.0, 0.0, 0.0],
            truncated: &[0.0, 1.0, 0.0],
            final_values: &[f32::NAN, 10.0, f32::NAN],
            next_values: &[4.0],
        };
        let (adv, _) = gae(&x, 0.5, 0.5);
        close(&adv, &[2.0, 4.0, 0.0]);
        x.terminated = &[0.0, 1.0, 0.0];
        let (adv, _) = gae(&x, 0.5, 0.5);
        close(&adv, &[0.75, -1.0, 0.0]);
    }

    /// Two envs interleaved t-major stay independent: env 1 is env 0 of the tests above.
    #[test]
    fn envs_are_independent() {
        let x = GaeInputs {
            num_envs: 2,
            rewards: &[0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
            values: &[0.0, 1.0, 0.0, 2.0, 0.0, 3.0],
            terminated: &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            truncated: &[0.0; 6],
            final_values: &[f32::NAN; 6],
            next_values: &[0.0, 4.0],
        };
        let (adv, _) = gae(&x, 0.5, 0.5);
        close(&[adv[1], adv[3], adv[5]], &[0.75, -1.0, 0.0]);
        close(&[adv[0], adv[2], adv[4]], &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn unwritten_slots_are_reported() {
        let mut r = Rollout::new::<u8>(2, 2, &[3]);
        r.begin(&CoreState { parts: vec![] }).unwrap();
        let step = PolicyStep {
            obs: &[1u8; 6],
            resets: &[1.0, 1.0],
            actions: &[0, 1],
            logprobs: &[-0.5, -0.5],
            values: &[0.0, 0.0],
        };
        r.record_policy(0, 0, step).unwrap();
        r.record_outcome(0, 0, &[1.0, 1.0], &[false, false], &[false, false])
            .unwrap();
        match r.validate().unwrap_err() {
            PpoError::RolloutIncomplete { what, step, env } => {
                assert_eq!((what, step, env), ("obs", 1, 0))
            }
            e => panic!("{e}"),
        }
        // Wrong element type and out-of-range writes are typed errors.
        let step_f32 = PolicyStep {
            obs: &[0.0f32; 0],
            resets: &[0.0, 0.0],
            actions: &[0, 1],
            logprobs: &[0.0, 0.0],
            values: &[0.0, 0.0],
        };
        assert!(matches!(
            r.record_policy(
                1,
                0,
                PolicyStep {
                    obs: &[1.0f32; 6],
                    ..step_f32
                }
            ),
            Err(PpoError::Shape { .. })
        ));
        assert!(r.record_outcome(2, 0, &[1.0], &[false], &[false]).is_err());
        assert!(r
            .record_outcome(1, 1, &[1.0, 1.0], &[false; 2], &[false; 2])
            .is_err());
    }
}
