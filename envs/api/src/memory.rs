//! A cue-recall task that needs memory: a feed-forward policy cannot beat a coin flip.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

use crate::{Dtype, Env, EnvError, EpisodeStatistics, Info, Space, Step};

/// A T-maze-like memory task: remember a cue shown only at the first step.
///
/// An episode has `delay + 2` steps. Observations are `[2]` f32: `[cue, answer_now]`.
/// - step 0 (the reset observation): `[c, 0]` with the cue `c = ±1` drawn uniformly;
/// - the next `delay` observations: `[0, 0]`;
/// - the last observation: `[0, 1]`, asking for the answer.
///
/// Actions are `Discrete(2)`. Actions before the answer are ignored (reward 0). The answer
/// ends the episode (`terminated`) with reward `+1` if it names the cue (action `1` for
/// `c = +1`, action `0` for `c = -1`), else `-1`. The episode return is therefore ±1.
///
/// The answer observation is the same for both cues, so any policy that sees only the current
/// observation has expected return exactly 0; a policy with memory can reach 1. The task
/// counts as solved at a mean return of at least [`MemoryCue::SUCCESS_RETURN`] (0.8, i.e.
/// 90% correct answers) over at least 100 episodes. With the default delay of 4, episodes are
/// 6 steps long, so PPO with an LSTM learns it in a few thousand steps.
#[derive(Clone, Debug)]
pub struct MemoryCue {
    delay: usize,
    rng: Pcg64,
    cue: f32,
    /// Observations shown so far in this episode minus one (0 = the cue observation).
    t: usize,
    needs_reset: bool,
}

impl MemoryCue {
    /// The delay used by [`MemoryCue::default`]: 6-step episodes.
    pub const DEFAULT_DELAY: usize = 4;
    /// Mean return (over >= 100 episodes) at which the task counts as solved.
    pub const SUCCESS_RETURN: f64 = 0.8;

    /// A task with `delay` blank observations between the cue and the answer (0 allowed:
    /// the answer is asked right after the cue). The generator is seeded from the OS until
    /// `reset` gets a seed.
    pub fn new(delay: usize) -> Self {
        Self {
            delay,
            rng: Pcg64::from_entropy(),
            cue: 0.0,
            t: 0,
            needs_reset: true,
        }
    }
    /// Blank observations between the cue and the answer.
    pub fn delay(&self) -> usize {
        self.delay
    }
    /// Steps per episode: `delay + 2`.
    pub fn episode_len(&self) -> usize {
        self.delay + 2
    }
    /// The current episode's cue, `+1` or `-1` (`0` before the first reset).
    pub fn cue(&self) -> f32 {
        self.cue
    }
    fn answer_step(&self) -> usize {
        self.delay + 1
    }
    fn obs(&self) -> Vec<f32> {
        let cue = if self.t == 0 { self.cue } else { 0.0 };
        let answer_now = if self.t == self.answer_step() {
            1.0
        } else {
            0.0
        };
        vec![cue, answer_now]
    }
}

impl Default for MemoryCue {
    fn default() -> Self {
        Self::new(Self::DEFAULT_DELAY)
    }
}

impl Env for MemoryCue {
    type Elem = f32;
    fn observation_space(&self) -> Space {
        Space::Box {
            shape: vec![2],
            dtype: Dtype::F32,
            low: -1.0,
            high: 1.0,
        }
    }
    fn action_space(&self) -> Space {
        Space::Discrete(2)
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<f32>, Info), EnvError> {
        if let Some(seed) = seed {
            self.rng = Pcg64::seed_from_u64(seed);
        }
        self.cue = if self.rng.gen_bool(0.5) { 1.0 } else { -1.0 };
        self.t = 0;
        self.needs_reset = false;
        Ok((self.obs(), Info::default()))
    }
    fn step(&mut self, action: usize) -> Result<Step<f32>, EnvError> {
        if action >= 2 {
            return Err(EnvError::InvalidAction { action, n: 2 });
        }
        if self.needs_reset {
            return Err(EnvError::NeedsReset);
        }
        if self.t < self.answer_step() {
            self.t += 1;
            return Ok(Step {
                obs: self.obs(),
                reward: 0.0,
                terminated: false,
                truncated: false,
                info: Info::default(),
            });
        }
        let says_plus = action == 1;
        let reward = if says_plus == (self.cue > 0.0) {
            1.0
        } else {
            -1.0
        };
        self.needs_reset = true;
        Ok(Step {
            obs: vec![0.0, 0.0],
            reward,
            terminated: true,
            truncated: false,
            info: Info::default(),
        })
    }
}

/// A [`MemoryCue`] with `delay` that reports `info.episode` at each episode end.
pub fn memory_cue(delay: usize) -> EpisodeStatistics<MemoryCue> {
    EpisodeStatistics::new(MemoryCue::new(delay))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VecEnv;

    /// Plays one episode; `policy(obs, first_obs)` sees the current and the first observation.
    fn play(
        env: &mut MemoryCue,
        seed: Option<u64>,
        policy: impl Fn(&[f32], &[f32]) -> usize,
    ) -> f32 {
        let (first, _) = env.reset(seed).unwrap();
        let mut obs = first.clone();
        let mut ret = 0.0;
        loop {
            let s = env.step(policy(&obs, &first)).unwrap();
            ret += s.reward;
            if s.terminated {
                return ret;
            }
            obs = s.obs;
        }
    }

    #[test]
    fn episode_layout_is_cue_blanks_answer() {
        let mut env = MemoryCue::new(2);
        let (obs, _) = env.reset(Some(1)).unwrap();
        let c = env.cue();
        assert!(c == 1.0 || c == -1.0);
        assert_eq!(obs, [c, 0.0]);
        let mut seen = vec![obs];
        let mut rewards = vec![];
        for _ in 0..env.episode_len() {
            let s = env.step(0).unwrap();
            rewards.push(s.reward);
            assert_eq!(s.terminated, rewards.len() == env.episode_len());
            seen.push(s.obs);
        }
        assert_eq!(seen[1..4], [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]);
        assert_eq!(
            rewards[..3],
            [0.0; 3],
            "actions before the answer are ignored"
        );
        assert_eq!(rewards[3], if c < 0.0 { 1.0 } else { -1.0 });
        assert!(matches!(env.step(0), Err(EnvError::NeedsReset)));
        assert!(matches!(
            env.step(2),
            Err(EnvError::InvalidAction { action: 2, n: 2 })
        ));
    }

    #[test]
    fn a_policy_with_memory_scores_one() {
        for delay in [0, 1, 4, 10] {
            let mut env = MemoryCue::new(delay);
            for seed in 0..50 {
                let ret = play(&mut env, Some(seed), |_, first| usize::from(first[0] > 0.0));
                assert_eq!(ret, 1.0, "delay {delay}, seed {seed}");
            }
        }
    }

    #[test]
    fn memoryless_policies_average_zero() {
        // What a feed-forward policy sees after the cue does not depend on the cue...
        let mut plus = MemoryCue::new(4);
        let mut minus = MemoryCue::new(4);
        let trace = |env: &mut MemoryCue, seed| {
            let (first, _) = env.reset(Some(seed)).unwrap();
            let rest: Vec<Vec<f32>> = (0..5).map(|_| env.step(0).unwrap().obs).collect();
            (first[0], rest)
        };
        let (seeds_plus, seeds_minus): (Vec<u64>, Vec<u64>) =
            (0..20).partition(|&s| trace(&mut plus, s).0 > 0.0);
        assert!(!seeds_plus.is_empty() && !seeds_minus.is_empty());
        assert_eq!(
            trace(&mut plus, seeds_plus[0]).1,
            trace(&mut minus, seeds_minus[0]).1
        );
        // ...and the cue is a fair coin, so each fixed answer averages ~0 (binomial: 1000
        // episodes, sd of the mean ~0.032; 0.15 is ~5 sd).
        let mut envs = VecEnv::new((0..10).map(|_| memory_cue(4)).collect()).unwrap();
        for answer in [0, 1] {
            envs.reset(Some(100 * answer as u64)).unwrap();
            let mut returns = vec![];
            while returns.len() < 1000 {
                let s = envs.step(&[answer; 10]).unwrap();
                returns.extend(s.episodes.iter().flatten().map(|e| e.ret));
            }
            let mean = returns.iter().sum::<f64>() / returns.len() as f64;
            assert!(mean.abs() < 0.15, "answer {answer}: mean return {mean}");
            assert!(returns.iter().all(|r| r.abs() == 1.0));
        }
    }
}
