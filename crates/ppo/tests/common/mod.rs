//! The learning tests' runner: the production [`Sampler`] over a synchronous vector env, and
//! [`Learner::update`]. Only the env side ([`SyncEnvs`]) is test code; acting, recording,
//! truncation bootstrapping and state carrying are the sampler `brims train` uses.
#![allow(dead_code)]

use std::ops::Range;
use std::sync::atomic::AtomicBool;

use envs_api::{Env, EnvError, VecEnv, VecStep};
use ppo::{
    EnvGroups, EpisodeEnd, GroupOutcome, Learner, ObsElement, Rollout, Sampler, UpdateMetrics,
};

/// Envs in groups (one [`VecEnv`] each), stepped on the calling thread when a group's actions
/// arrive. Env `i` (counted over all groups) is reset with seed `seed + i`, as the actor pool
/// seeds its envs.
pub struct SyncEnvs<E: Env> {
    groups: Vec<VecEnv<E>>,
    seed: u64,
    stepped: Vec<Option<VecStep<E::Elem>>>,
}

impl<E: Env> SyncEnvs<E> {
    /// One group of all `envs`.
    pub fn new(envs: Vec<E>, seed: u64) -> Self {
        Self::grouped(vec![envs], seed)
    }

    /// One group per entry of `groups`.
    pub fn grouped(groups: Vec<Vec<E>>, seed: u64) -> Self {
        let groups: Vec<VecEnv<E>> = groups
            .into_iter()
            .map(|envs| VecEnv::new(envs).unwrap())
            .collect();
        let stepped = groups.iter().map(|_| None).collect();
        SyncEnvs {
            groups,
            seed,
            stepped,
        }
    }

    fn start(&self, group: usize) -> usize {
        self.groups[..group].iter().map(|g| g.num_envs()).sum()
    }
}

impl<E: Env> EnvGroups for SyncEnvs<E>
where
    E::Elem: ObsElement,
{
    type Obs = E::Elem;
    type Error = EnvError;

    fn groups(&self) -> Vec<Range<usize>> {
        (0..self.groups.len())
            .map(|g| self.start(g)..self.start(g) + self.groups[g].num_envs())
            .collect()
    }

    fn reset(&mut self) -> Result<Vec<E::Elem>, EnvError> {
        let mut obs = Vec::new();
        for g in 0..self.groups.len() {
            let seed = self.seed.wrapping_add(self.start(g) as u64);
            obs.extend(self.groups[g].reset(Some(seed))?);
        }
        Ok(obs)
    }

    fn send_actions(&mut self, group: usize, actions: &[usize]) -> Result<(), EnvError> {
        self.stepped[group] = Some(self.groups[group].step(actions)?);
        Ok(())
    }

    fn recv(&mut self, group: usize) -> Result<GroupOutcome<E::Elem>, EnvError> {
        let step = self.stepped[group]
            .take()
            .ok_or_else(|| EnvError::Invalid {
                what: format!("group {group}"),
                why: "recv without actions sent".into(),
            })?;
        let env0 = self.start(group);
        let episodes = step
            .episodes
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                e.map(|s| EpisodeEnd {
                    env: env0 + i,
                    ret: s.ret,
                    len: s.len,
                })
            })
            .collect();
        Ok(GroupOutcome {
            obs: step.obs,
            rewards: step.rewards,
            terminated: step.terminated,
            truncated: step.truncated,
            final_obs: step.final_obs,
            episodes,
        })
    }
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

/// Trains `learner` for `updates` updates of `num_steps × num_envs` on `envs`, collecting with
/// the production [`Sampler`]. With `stop = Some((k, target))` it stops early once the mean
/// return of the last `k` episodes reaches `target` ("reaches it within the budget").
pub fn train<E>(
    learner: &mut Learner,
    envs: SyncEnvs<E>,
    updates: usize,
    stop: Option<(usize, f64)>,
) -> Outcome
where
    E: Env,
    E::Elem: ObsElement,
{
    let n: usize = envs.groups.iter().map(|g| g.num_envs()).sum();
    let steps = learner.plan().config.num_steps;
    let shape = learner.net().obs_shape().to_vec();
    let mut sampler = Sampler::new(envs);
    let mut rollout = Rollout::new::<E::Elem>(steps, n, &shape);
    let never = AtomicBool::new(false);
    let mut out = Outcome {
        returns: vec![],
        metrics: vec![],
    };
    for _ in 0..updates {
        let (net, rng) = learner.acting();
        let collected = sampler
            .collect(net, rng, &mut rollout, &never, &mut ())
            .unwrap()
            .expect("never stopped");
        out.returns
            .extend(collected.episodes.iter().map(|(_, e)| e.ret));
        out.metrics.push(learner.update(&rollout).unwrap());
        if let Some((k, target)) = stop {
            if out.mean_last(k) >= target {
                break;
            }
        }
        if std::env::var_os("PPO_TEST_PROGRESS").is_some() && out.metrics.len().is_multiple_of(10) {
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
