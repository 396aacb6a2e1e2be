//! Auto-reset (same-step convention) for one env, and a synchronous vector env built on it.

use crate::{Env, EnvError, EpisodeStats, Info, Space};

/// What [`AutoReset::step`] returns. On the step that ends an episode, `obs` and `info` already
/// belong to the next episode (the env was reset), and the ended episode's last observation
/// and info are in `final_obs` and `final_info`.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoStep<T> {
    /// The observation to act on next, flattened in the space's shape: after an episode end,
    /// the first observation of the new episode.
    pub obs: Vec<T>,
    /// Reward of the step just taken.
    pub reward: f32,
    /// The step just taken reached a terminal state (do not bootstrap).
    pub terminated: bool,
    /// The step just taken was cut by a time limit (bootstrap from `final_obs`).
    pub truncated: bool,
    /// Info of `obs` (the reset info after an episode end).
    pub info: Info,
    /// The ended episode's last observation, `Some` exactly when `terminated || truncated`.
    pub final_obs: Option<Vec<T>>,
    /// The ended episode's last info, `Some` exactly when `terminated || truncated`; its
    /// `episode` field holds the episode's statistics when an [`crate::EpisodeStatistics`]
    /// wrapper is in the stack.
    pub final_info: Option<Info>,
}

impl<T> AutoStep<T> {
    /// `terminated || truncated`.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// Resets its env on the same step an episode ends (see the crate docs for the convention).
///
/// Call [`AutoReset::reset`] once; after that, [`AutoReset::step`] never needs a manual reset.
/// Later resets draw from the env's own random generator (no reseeding).
#[derive(Debug)]
pub struct AutoReset<E: Env> {
    env: E,
    needs_reset: bool,
}

impl<E: Env> AutoReset<E> {
    /// Wraps `env`; call [`AutoReset::reset`] before the first step.
    pub fn new(env: E) -> Self {
        Self {
            env,
            needs_reset: true,
        }
    }
    /// Starts an episode. Returns the observation (flat, in the observation space's shape) and
    /// its info.
    pub fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<E::Elem>, Info), EnvError> {
        self.needs_reset = true;
        let out = self.env.reset(seed)?;
        self.needs_reset = false;
        Ok(out)
    }
    /// Steps, and on an episode end resets at once (same step).
    ///
    /// Errors: [`EnvError::NeedsReset`] before the first `reset` (or after a failed one);
    /// any error of the env (e.g. [`EnvError::InvalidAction`]).
    pub fn step(&mut self, action: usize) -> Result<AutoStep<E::Elem>, EnvError> {
        if self.needs_reset {
            return Err(EnvError::NeedsReset);
        }
        let step = self.env.step(action)?;
        if !(step.terminated || step.truncated) {
            return Ok(AutoStep {
                obs: step.obs,
                reward: step.reward,
                terminated: false,
                truncated: false,
                info: step.info,
                final_obs: None,
                final_info: None,
            });
        }
        self.needs_reset = true;
        let (obs, info) = self.env.reset(None)?;
        self.needs_reset = false;
        Ok(AutoStep {
            obs,
            reward: step.reward,
            terminated: step.terminated,
            truncated: step.truncated,
            info,
            final_obs: Some(step.obs),
            final_info: Some(step.info),
        })
    }
    /// The wrapped env.
    pub fn inner(&self) -> &E {
        &self.env
    }
    /// The wrapped env, mutably (changing its state by hand may break the convention).
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.env
    }
    /// Unwraps.
    pub fn into_inner(self) -> E {
        self.env
    }
}

/// What [`VecEnv::step`] returns for `N` envs; per-env vectors are indexed by env.
#[derive(Clone, Debug, PartialEq)]
pub struct VecStep<T> {
    /// `[N * obs_size]`: env `i`'s next observation at `i * obs_size..(i + 1) * obs_size` (a
    /// reset observation where env `i`'s episode just ended).
    pub obs: Vec<T>,
    /// `[N]` rewards of the step just taken.
    pub rewards: Vec<f32>,
    /// `[N]` terminal flags of the step just taken.
    pub terminated: Vec<bool>,
    /// `[N]` truncation flags of the step just taken.
    pub truncated: Vec<bool>,
    /// `[N]`: `Some([obs_size])`, the ended episode's last observation, exactly where
    /// `terminated[i] || truncated[i]`.
    pub final_obs: Vec<Option<Vec<T>>>,
    /// `[N]`: the statistics of a real episode that ended on this step (needs an
    /// [`crate::EpisodeStatistics`] wrapper in each env's stack; reported once per episode).
    pub episodes: Vec<Option<EpisodeStats>>,
}

/// `N` envs stepped in turn on the calling thread, each with [`AutoReset`]'s same-step
/// convention. Observations are concatenated: `[N * obs_size]`.
#[derive(Debug)]
pub struct VecEnv<E: Env> {
    envs: Vec<AutoReset<E>>,
    observation_space: Space,
    action_space: Space,
    obs_size: usize,
    num_actions: usize,
}

impl<E: Env> VecEnv<E> {
    /// Takes ownership of `envs`. Errors if there are none, if their spaces differ, or if the
    /// action space is not `Discrete`.
    pub fn new(envs: Vec<E>) -> Result<Self, EnvError> {
        let first = envs.first().ok_or_else(|| EnvError::Invalid {
            what: "envs".into(),
            why: "a vector env needs at least one env".into(),
        })?;
        let observation_space = first.observation_space();
        let action_space = first.action_space();
        let num_actions = action_space.n().ok_or_else(|| EnvError::Invalid {
            what: "action space".into(),
            why: format!("expected Discrete(n), got {action_space:?}"),
        })?;
        for (i, env) in envs.iter().enumerate().skip(1) {
            let (obs, act) = (env.observation_space(), env.action_space());
            if obs != observation_space || act != action_space {
                return Err(EnvError::Invalid {
                    what: format!("env {i}"),
                    why: format!(
                        "its spaces ({obs:?}, {act:?}) differ from env 0's \
                         ({observation_space:?}, {action_space:?})"
                    ),
                });
            }
        }
        let obs_size = observation_space.flat_size();
        Ok(Self {
            envs: envs.into_iter().map(AutoReset::new).collect(),
            observation_space,
            action_space,
            obs_size,
            num_actions,
        })
    }
    /// `N`.
    pub fn num_envs(&self) -> usize {
        self.envs.len()
    }
    /// The observation space of one env.
    pub fn observation_space(&self) -> Space {
        self.observation_space.clone()
    }
    /// The action space of one env.
    pub fn action_space(&self) -> Space {
        self.action_space.clone()
    }
    /// Resets every env; env `i` gets seed `seed + i` (wrapping). Returns `[N * obs_size]`.
    pub fn reset(&mut self, seed: Option<u64>) -> Result<Vec<E::Elem>, EnvError> {
        let mut obs = Vec::with_capacity(self.envs.len() * self.obs_size);
        for (i, env) in self.envs.iter_mut().enumerate() {
            let (o, _info) = env.reset(seed.map(|s| s.wrapping_add(i as u64)))?;
            check_len(i, o.len(), self.obs_size)?;
            obs.extend_from_slice(&o);
        }
        Ok(obs)
    }
    /// Steps env `i` with `actions[i]`. All actions are checked before any env moves: a wrong
    /// count is [`EnvError::Invalid`], an out-of-range action [`EnvError::InvalidAction`].
    pub fn step(&mut self, actions: &[usize]) -> Result<VecStep<E::Elem>, EnvError> {
        let n = self.envs.len();
        if actions.len() != n {
            return Err(EnvError::Invalid {
                what: "actions".into(),
                why: format!("got {} actions for {n} envs", actions.len()),
            });
        }
        if let Some(&action) = actions.iter().find(|&&a| a >= self.num_actions) {
            return Err(EnvError::InvalidAction {
                action,
                n: self.num_actions,
            });
        }
        let mut out = VecStep {
            obs: Vec::with_capacity(n * self.obs_size),
            rewards: Vec::with_capacity(n),
            terminated: Vec::with_capacity(n),
            truncated: Vec::with_capacity(n),
            final_obs: Vec::with_capacity(n),
            episodes: Vec::with_capacity(n),
        };
        for (i, (env, &action)) in self.envs.iter_mut().zip(actions).enumerate() {
            let s = env.step(action)?;
            check_len(i, s.obs.len(), self.obs_size)?;
            out.obs.extend_from_slice(&s.obs);
            out.rewards.push(s.reward);
            out.terminated.push(s.terminated);
            out.truncated.push(s.truncated);
            out.final_obs.push(s.final_obs);
            out.episodes
                .push(s.final_info.and_then(|info| info.episode));
        }
        Ok(out)
    }
    /// Env `i`, if `i < N`.
    pub fn env(&self, i: usize) -> Option<&E> {
        self.envs.get(i).map(AutoReset::inner)
    }
}

/// The flat layout needs every observation to have the space's size.
fn check_len(env: usize, got: usize, want: usize) -> Result<(), EnvError> {
    if got == want {
        return Ok(());
    }
    Err(EnvError::Backend(format!(
        "env {env} returned an observation of {got} elements; its space has {want}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_env::Counter;
    use crate::{EpisodeStatistics, TimeLimit};

    #[test]
    fn auto_reset_returns_final_obs_and_reset_obs_on_the_same_step() {
        let mut env = AutoReset::new(EpisodeStatistics::new(Counter::new(2)));
        assert!(matches!(env.step(0), Err(EnvError::NeedsReset)));
        let (obs, _) = env.reset(Some(5)).unwrap();
        assert_eq!(obs, [0.0, 0.0]);
        let s1 = env.step(0).unwrap();
        assert_eq!((s1.obs.clone(), s1.done()), (vec![0.0, 1.0], false));
        assert_eq!((s1.final_obs, s1.final_info), (None, None));
        let s2 = env.step(0).unwrap();
        assert!(s2.terminated && !s2.truncated);
        assert_eq!(s2.reward, 2.0, "the reward of the ending step is kept");
        assert_eq!(s2.final_obs, Some(vec![0.0, 2.0]), "last obs of episode 0");
        assert_eq!(s2.obs, [1.0, 0.0], "first obs of episode 1");
        let final_info = s2.final_info.unwrap();
        assert_eq!(final_info.episode, Some(EpisodeStats { ret: 3.0, len: 2 }));
        assert_eq!(final_info.lives, Some(3));
        assert_eq!(s2.info, Info::default(), "info is the reset info");
        // The new episode continues from the reset obs; stats are not reported again.
        let s3 = env.step(0).unwrap();
        assert_eq!(s3.obs, [1.0, 1.0]);
        assert_eq!(s3.info.episode, None);
        // Only the first reset is seeded; auto-resets draw from the env's own generator.
        assert_eq!(env.inner().inner().seeds, [Some(5), None]);
    }

    #[test]
    fn auto_reset_flags_truncation_and_keeps_the_final_obs_to_bootstrap_from() {
        let mut counter = Counter::new(0);
        counter.terminate = false;
        let mut env = AutoReset::new(TimeLimit::new(counter, 3).unwrap());
        env.reset(None).unwrap();
        env.step(1).unwrap();
        env.step(1).unwrap();
        let s = env.step(1).unwrap();
        assert!(s.truncated && !s.terminated);
        assert_eq!(s.final_obs, Some(vec![0.0, 3.0]));
        assert_eq!(s.obs, [1.0, 0.0]);
        // The time limit restarted with the new episode.
        assert_eq!(env.inner().elapsed_steps(), 0);
    }

    #[test]
    fn auto_reset_passes_env_errors_through() {
        let mut env = AutoReset::new(Counter::new(2));
        env.reset(None).unwrap();
        assert!(matches!(
            env.step(3),
            Err(EnvError::InvalidAction { action: 3, n: 3 })
        ));
        assert_eq!(
            env.step(0).unwrap().obs,
            [0.0, 1.0],
            "the bad action changed nothing"
        );
    }

    fn counters(lens: &[u64]) -> Vec<EpisodeStatistics<Counter>> {
        lens.iter()
            .map(|&len| EpisodeStatistics::new(Counter::new(len)))
            .collect()
    }

    #[test]
    fn vec_env_follows_the_same_step_convention_per_env() {
        let mut envs = VecEnv::new(counters(&[1, 2, 3])).unwrap();
        assert_eq!(envs.num_envs(), 3);
        let obs = envs.reset(Some(10)).unwrap();
        assert_eq!(obs, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let mut episodes_seen = [0u32; 3];
        let mut prev = obs;
        for _ in 0..6 {
            let s = envs.step(&[0, 1, 0]).unwrap();
            assert_eq!(s.obs.len(), 3 * 2);
            for i in 0..3 {
                let done = s.terminated[i] || s.truncated[i];
                let obs_i = &s.obs[i * 2..][..2];
                let prev_i = &prev[i * 2..][..2];
                assert_eq!(done, s.final_obs[i].is_some());
                assert_eq!(done, s.episodes[i].is_some());
                if done {
                    episodes_seen[i] += 1;
                    let last = s.final_obs[i].as_ref().unwrap();
                    // The final obs continues the old episode; obs starts the next one.
                    assert_eq!(last[0], prev_i[0]);
                    assert_eq!(last[1], prev_i[1] + 1.0);
                    assert_eq!(obs_i, [prev_i[0] + 1.0, 0.0]);
                    let len = (i + 1) as u64;
                    let ret = (len * (len + 1) / 2) as f64;
                    assert_eq!(s.episodes[i], Some(EpisodeStats { ret, len }));
                } else {
                    assert_eq!(obs_i, [prev_i[0], prev_i[1] + 1.0]);
                }
            }
            prev = s.obs;
        }
        // Episode lengths 1, 2, 3 over 6 steps: each episode reported exactly once.
        assert_eq!(episodes_seen, [6, 3, 2]);
        for i in 0..3 {
            let seeds = &envs.env(i).unwrap().inner().seeds;
            assert_eq!(
                seeds[0],
                Some(10 + i as u64),
                "env i is seeded with seed + i"
            );
            assert!(seeds[1..].iter().all(Option::is_none));
        }
    }

    #[test]
    fn vec_env_rejects_bad_input_without_stepping() {
        assert!(matches!(
            VecEnv::<Counter>::new(vec![]),
            Err(EnvError::Invalid { .. })
        ));
        let mut envs = VecEnv::new(counters(&[5, 5])).unwrap();
        assert!(matches!(envs.step(&[0, 0]), Err(EnvError::NeedsReset)));
        envs.reset(None).unwrap();
        assert!(matches!(envs.step(&[0]), Err(EnvError::Invalid { .. })));
        assert!(matches!(
            envs.step(&[0, 0, 0]),
            Err(EnvError::Invalid { .. })
        ));
        assert!(matches!(
            envs.step(&[0, 7]),
            Err(EnvError::InvalidAction { action: 7, n: 3 })
        ));
        // No env moved on the rejected calls.
        assert_eq!(envs.step(&[0, 0]).unwrap().obs, [0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn vec_env_rejects_mismatched_spaces() {
        let envs: Vec<Box<dyn Env<Elem = f32>>> =
            vec![Box::new(Counter::new(1)), Box::new(crate::CartPole::new())];
        let Err(err) = VecEnv::new(envs) else {
            panic!("spaces differ, yet VecEnv::new succeeded");
        };
        assert!(err.to_string().contains("env 1"), "{err}");
    }
}
