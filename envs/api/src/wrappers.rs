//! Generic wrappers: a time limit, episode statistics and sign reward clipping.
//!
//! Each wrapper owns the env it wraps and is itself an [`Env`], so they nest:
//! `EpisodeStatistics::new(TimeLimit::new(env, 500))`. Put [`EpisodeStatistics`] inside any
//! reward-changing wrapper (so it sums the raw reward) and outside [`TimeLimit`] (so it sees
//! truncations).

use std::num::NonZeroU64;

use crate::{Env, EnvError, EpisodeStats, Info, RgbFrame, Space, Step};

/// Truncates an episode after `max_steps` steps: the step that reaches the limit returns
/// `truncated = true` (Gymnasium's `TimeLimit`). Observations pass through unchanged.
///
/// Steps are counted from the last `reset` (or from construction, for an env built in a given
/// state). Stepping again after a truncation, without a reset, is [`EnvError::NeedsReset`].
#[derive(Debug)]
pub struct TimeLimit<E: Env> {
    env: E,
    max_steps: u64,
    elapsed: u64,
}

impl<E: Env> TimeLimit<E> {
    /// Wraps `env`; `max_steps` must be at least 1.
    pub fn new(env: E, max_steps: u64) -> Result<Self, EnvError> {
        if max_steps == 0 {
            return Err(EnvError::Invalid {
                what: "max_steps".into(),
                why: "a time limit must allow at least 1 step".into(),
            });
        }
        Ok(Self {
            env,
            max_steps,
            elapsed: 0,
        })
    }
    /// Wraps `env` with a limit known to be positive.
    pub(crate) fn with_limit(env: E, max_steps: NonZeroU64) -> Self {
        Self {
            env,
            max_steps: max_steps.get(),
            elapsed: 0,
        }
    }
    /// Steps taken since the last reset.
    pub fn elapsed_steps(&self) -> u64 {
        self.elapsed
    }
    /// The limit.
    pub fn max_steps(&self) -> u64 {
        self.max_steps
    }
    /// The wrapped env.
    pub fn inner(&self) -> &E {
        &self.env
    }
    /// The wrapped env, mutably.
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.env
    }
    /// Unwraps.
    pub fn into_inner(self) -> E {
        self.env
    }
}

impl<E: Env> Env for TimeLimit<E> {
    type Elem = E::Elem;
    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }
    fn action_space(&self) -> Space {
        self.env.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<E::Elem>, Info), EnvError> {
        let out = self.env.reset(seed)?;
        self.elapsed = 0;
        Ok(out)
    }
    fn step(&mut self, action: usize) -> Result<Step<E::Elem>, EnvError> {
        if self.elapsed >= self.max_steps {
            return Err(EnvError::NeedsReset);
        }
        let mut step = self.env.step(action)?;
        self.elapsed += 1;
        if self.elapsed >= self.max_steps {
            step.truncated = true;
        }
        Ok(step)
    }
    fn render(&self) -> Option<RgbFrame> {
        self.env.render()
    }
    fn ram(&self) -> Option<Vec<u8>> {
        self.env.ram()
    }
}

/// Records each episode's return and length and reports them in `info.episode` on the step
/// where the episode ends (`terminated || truncated`), as Gymnasium's
/// `RecordEpisodeStatistics`.
///
/// The return is the sum of the rewards this wrapper sees, so wrap it *inside* any reward
/// clipping to get the raw score. If the wrapped env already reports `info.episode`, that
/// report is kept. Counters restart on `reset`; an outer wrapper that ends "episodes" without
/// resetting this one (episodic life) therefore leaves the real episode's counts running.
#[derive(Debug)]
pub struct EpisodeStatistics<E: Env> {
    env: E,
    ret: f64,
    len: u64,
}

impl<E: Env> EpisodeStatistics<E> {
    /// Wraps `env`.
    pub fn new(env: E) -> Self {
        Self {
            env,
            ret: 0.0,
            len: 0,
        }
    }
    /// The return and length of the episode so far.
    pub fn current(&self) -> EpisodeStats {
        EpisodeStats {
            ret: self.ret,
            len: self.len,
        }
    }
    /// The wrapped env.
    pub fn inner(&self) -> &E {
        &self.env
    }
    /// The wrapped env, mutably.
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.env
    }
    /// Unwraps.
    pub fn into_inner(self) -> E {
        self.env
    }
}

impl<E: Env> Env for EpisodeStatistics<E> {
    type Elem = E::Elem;
    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }
    fn action_space(&self) -> Space {
        self.env.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<E::Elem>, Info), EnvError> {
        let out = self.env.reset(seed)?;
        self.ret = 0.0;
        self.len = 0;
        Ok(out)
    }
    fn step(&mut self, action: usize) -> Result<Step<E::Elem>, EnvError> {
        let mut step = self.env.step(action)?;
        self.ret += f64::from(step.reward);
        self.len += 1;
        if (step.terminated || step.truncated) && step.info.episode.is_none() {
            step.info.episode = Some(self.current());
        }
        Ok(step)
    }
    fn render(&self) -> Option<RgbFrame> {
        self.env.render()
    }
    fn ram(&self) -> Option<Vec<u8>> {
        self.env.ram()
    }
}

/// Replaces each reward by its sign: `+1`, `-1`, or `0` for a zero reward (Atari training,
/// Mnih et al. 2015). `info.episode` passes through untouched, so raw returns recorded by an
/// inner [`EpisodeStatistics`] survive.
#[derive(Debug)]
pub struct ClipReward<E: Env> {
    env: E,
}

impl<E: Env> ClipReward<E> {
    /// Wraps `env`.
    pub fn new(env: E) -> Self {
        Self { env }
    }
    /// The wrapped env.
    pub fn inner(&self) -> &E {
        &self.env
    }
    /// The wrapped env, mutably.
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.env
    }
    /// Unwraps.
    pub fn into_inner(self) -> E {
        self.env
    }
}

/// The sign of `r`, with `sign(0) = 0` (unlike `f32::signum`) and NaN kept as NaN.
pub(crate) fn reward_sign(r: f32) -> f32 {
    if r > 0.0 {
        1.0
    } else if r < 0.0 {
        -1.0
    } else {
        r * 0.0
    }
}

impl<E: Env> Env for ClipReward<E> {
    type Elem = E::Elem;
    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }
    fn action_space(&self) -> Space {
        self.env.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<E::Elem>, Info), EnvError> {
        self.env.reset(seed)
    }
    fn step(&mut self, action: usize) -> Result<Step<E::Elem>, EnvError> {
        let mut step = self.env.step(action)?;
        step.reward = reward_sign(step.reward);
        Ok(step)
    }
    fn render(&self) -> Option<RgbFrame> {
        self.env.render()
    }
    fn ram(&self) -> Option<Vec<u8>> {
        self.env.ram()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_env::Counter;

    #[test]
    fn time_limit_truncates_at_max_steps_then_needs_reset() {
        let mut counter = Counter::new(0);
        counter.terminate = false;
        let mut env = TimeLimit::new(counter, 3).unwrap();
        env.reset(None).unwrap();
        let flags: Vec<bool> = (0..3).map(|_| env.step(0).unwrap().truncated).collect();
        assert_eq!(flags, [false, false, true]);
        assert!(matches!(env.step(0), Err(EnvError::NeedsReset)));
        env.reset(None).unwrap();
        assert_eq!(env.elapsed_steps(), 0);
        assert!(!env.step(0).unwrap().truncated);
    }

    #[test]
    fn time_limit_rejects_zero_and_keeps_termination() {
        assert!(matches!(
            TimeLimit::new(Counter::new(2), 0),
            Err(EnvError::Invalid { .. })
        ));
        let mut env = TimeLimit::new(Counter::new(2), 2).unwrap();
        env.reset(None).unwrap();
        env.step(0).unwrap();
        let last = env.step(0).unwrap();
        // Both flags, as Gymnasium's TimeLimit reports when the limit and a terminal coincide.
        assert!(last.terminated && last.truncated);
    }

    #[test]
    fn episode_statistics_reports_raw_return_once_at_episode_end() {
        // Clipping outside the statistics: the return stays raw (1 + 2 + 3), rewards are signs.
        let mut env = ClipReward::new(EpisodeStatistics::new(Counter::new(3)));
        env.reset(None).unwrap();
        let steps: Vec<_> = (0..3).map(|_| env.step(0).unwrap()).collect();
        assert!(steps.iter().all(|s| s.reward == 1.0));
        assert_eq!(steps[0].info.episode, None);
        assert_eq!(steps[1].info.episode, None);
        assert_eq!(
            steps[2].info.episode,
            Some(EpisodeStats { ret: 6.0, len: 3 })
        );
        assert_eq!(steps[2].info.lives, Some(3), "other info passes through");
        // The next episode counts from zero.
        env.reset(None).unwrap();
        env.step(2).unwrap();
        env.step(0).unwrap();
        let end = env.step(0).unwrap();
        assert_eq!(
            end.info.episode,
            Some(EpisodeStats {
                ret: -5.0 + 2.0 + 3.0,
                len: 3
            })
        );
    }

    #[test]
    fn episode_statistics_sees_truncation_when_outside_time_limit() {
        let mut counter = Counter::new(0);
        counter.terminate = false;
        let mut env = EpisodeStatistics::new(TimeLimit::new(counter, 2).unwrap());
        env.reset(None).unwrap();
        assert_eq!(env.step(0).unwrap().info.episode, None);
        let end = env.step(0).unwrap();
        assert!(end.truncated);
        assert_eq!(end.info.episode, Some(EpisodeStats { ret: 3.0, len: 2 }));
    }

    #[test]
    fn reward_sign_maps_zero_to_zero() {
        assert_eq!(reward_sign(0.0), 0.0);
        assert_eq!(reward_sign(-0.0), 0.0);
        assert_eq!(reward_sign(0.01), 1.0);
        assert_eq!(reward_sign(-400.0), -1.0);
        assert!(reward_sign(f32::NAN).is_nan());
    }
}
