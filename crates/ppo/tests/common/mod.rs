//! A small synchronous training loop over a `VecEnv`, used by the learning tests. It drives
//! the same public pieces a threaded driver uses: `ActorCritic::act`, `sample_actions`,
//! `Rollout`, `Learner::update`.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use envs_api::{Env, VecEnv};
use ppo::{sample_actions, Learner, ObsElement, PolicyStep, Rollout, UpdateMetrics};

/// Deliberate bugs, to show the learning tests catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// The correct loop.
    None,
    /// The core state is not carried between acting steps (zero state every step).
    NoCarry,
    /// The learner replays each segment from a zero state instead of the stored start state.
    ZeroStart,
}

/// What a run produced.
pub struct Outcome {
    /// Returns of finished episodes, in order.
    pub returns: Vec<f64>,
    /// Metrics of every update.
    pub metrics: Vec<UpdateMetrics>,
}

impl Outcome {
    /// Mean return of the last `k` episodes (NaN with fewer than `k`).
    pub fn mean_last(&self, k: usize) -> f64 {
        if self.returns.len() < k {
            return f64::NAN;
        }
        self.returns[self.returns.len() - k..].iter().sum::<f64>() / k as f64
    }
}

fn tensor<T: ObsElement>(data: &[T], lead: usize, shape: &[usize]) -> Tensor {
    let mut dims = vec![lead];
    dims.extend_from_slice(shape);
    Tensor::from_slice(data, dims, &Device::Cpu).unwrap()
}

/// Trains `learner` for `updates` updates of `num_steps × num_envs` on `envs` (reset with
/// `seed`), CleanRL's loop with same-step auto-reset and truncation bootstrapping. With
/// `stop = Some((k, target))` it stops early once the mean return of the last `k` episodes
/// reaches `target` ("reaches it within the budget").
pub fn train_sync<E>(
    learner: &mut Learner,
    envs: &mut VecEnv<E>,
    updates: usize,
    seed: u64,
    sabotage: Sabotage,
    stop: Option<(usize, f64)>,
) -> Outcome
where
    E: Env,
    E::Elem: ObsElement,
{
    let n = envs.num_envs();
    let steps = learner.plan().config.num_steps;
    let shape = learner.net().obs_shape().to_vec();
    let size: usize = shape.iter().product();
    let mut obs = envs.reset(Some(seed)).unwrap();
    let mut resets = vec![1.0f32; n];
    let zero = learner.net().zero_state(n).unwrap();
    let mut state = zero.clone();
    let mut rollout = Rollout::new::<E::Elem>(steps, n, &shape);
    let mut out = Outcome {
        returns: vec![],
        metrics: vec![],
    };
    for _ in 0..updates {
        rollout
            .begin(if sabotage == Sabotage::ZeroStart {
                &zero
            } else {
                &state
            })
            .unwrap();
        for t in 0..steps {
            let reset_t = Tensor::from_slice(&resets, n, &Device::Cpu).unwrap();
            let (logits, values, next) = learner
                .net()
                .act(&tensor(&obs, n, &shape), &state, &reset_t)
                .unwrap();
            let (actions, logprobs) = sample_actions(&logits, learner.rng_mut()).unwrap();
            let values = values.to_vec1::<f32>().unwrap();
            let record = PolicyStep {
                obs: &obs,
                resets: &resets,
                actions: &actions,
                logprobs: &logprobs,
                values: &values,
            };
            rollout.record_policy(t, 0, record).unwrap();
            let acts: Vec<usize> = actions.iter().map(|&a| a as usize).collect();
            let step = envs.step(&acts).unwrap();
            rollout
                .record_outcome(t, 0, &step.rewards, &step.terminated, &step.truncated)
                .unwrap();
            if step
                .truncated
                .iter()
                .zip(&step.terminated)
                .any(|(&u, &d)| u && !d)
            {
                // V(final obs) with the state after this step, no reset (the episode goes on).
                let mut finals = step.obs.clone();
                for (e, f) in step.final_obs.iter().enumerate() {
                    if let Some(f) = f {
                        finals[e * size..(e + 1) * size].copy_from_slice(f);
                    }
                }
                let no_reset = Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu).unwrap();
                let (_, v, _) = learner
                    .net()
                    .act(&tensor(&finals, n, &shape), &next, &no_reset)
                    .unwrap();
                let v = v.to_vec1::<f32>().unwrap();
                for (e, &value) in v.iter().enumerate() {
                    if step.truncated[e] && !step.terminated[e] {
                        rollout.record_final_value(t, e, value).unwrap();
                    }
                }
            }
            out.returns
                .extend(step.episodes.iter().flatten().map(|s| s.ret));
            resets = (0..n)
                .map(|e| f32::from(u8::from(step.terminated[e] || step.truncated[e])))
                .collect();
            obs = step.obs;
            state = if sabotage == Sabotage::NoCarry {
                zero.clone()
            } else {
                next
            };
        }
        let reset_t = Tensor::from_slice(&resets, n, &Device::Cpu).unwrap();
        let (_, next_values, _) = learner
            .net()
            .act(&tensor(&obs, n, &shape), &state, &reset_t)
            .unwrap();
        rollout
            .record_next_values(0, &next_values.to_vec1::<f32>().unwrap())
            .unwrap();
        out.metrics.push(learner.update(&rollout).unwrap());
        if let Some((k, target)) = stop {
            if out.mean_last(k) >= target {
                break;
            }
        }
        if std::env::var_os("PPO_TEST_PROGRESS").is_some() && out.metrics.len() % 10 == 0 {
            eprintln!(
                "update {}: mean of last 20 episodes {:.1}",
                out.metrics.len(),
                out.mean_last(20)
            );
        }
    }
    out
}

/// Multiplies rewards by a constant (after the episode statistics, which keep raw returns),
/// so value targets stay O(1) and the shared trunk is not dominated by the value gradient.
pub struct ScaleReward<E: Env> {
    /// The wrapped env.
    pub env: E,
    /// The factor.
    pub scale: f32,
}

impl<E: Env> Env for ScaleReward<E> {
    type Elem = E::Elem;
    fn observation_space(&self) -> envs_api::Space {
        self.env.observation_space()
    }
    fn action_space(&self) -> envs_api::Space {
        self.env.action_space()
    }
    fn reset(
        &mut self,
        seed: Option<u64>,
    ) -> Result<(Vec<E::Elem>, envs_api::Info), envs_api::EnvError> {
        self.env.reset(seed)
    }
    fn step(&mut self, action: usize) -> Result<envs_api::Step<E::Elem>, envs_api::EnvError> {
        let mut s = self.env.step(action)?;
        s.reward *= self.scale;
        Ok(s)
    }
}
