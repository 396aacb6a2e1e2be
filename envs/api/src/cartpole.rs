//! CartPole-v1 with Gymnasium's exact dynamics.

use std::num::NonZeroU64;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

use crate::{Dtype, Env, EnvError, EpisodeStatistics, Info, Space, Step, TimeLimit};

// Gymnasium 1.x `CartPoleEnv` constants; derived ones are computed the way Python computes
// them so every f64 bit matches.
const GRAVITY: f64 = 9.8;
const MASSCART: f64 = 1.0;
const MASSPOLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASSPOLE + MASSCART;
/// Half the pole's length.
const LENGTH: f64 = 0.5;
const POLEMASS_LENGTH: f64 = MASSPOLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
/// Seconds between state updates.
const TAU: f64 = 0.02;
const THETA_THRESHOLD_RADIANS: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_THRESHOLD: f64 = 2.4;
/// Gymnasium's registered `max_episode_steps` for CartPole-v1.
pub const CARTPOLE_V1_MAX_STEPS: u64 = 500;
const V1_LIMIT: NonZeroU64 = match NonZeroU64::new(CARTPOLE_V1_MAX_STEPS) {
    Some(n) => n,
    None => panic!("the CartPole-v1 limit is not zero"),
};

/// The classic cart-pole (Barto, Sutton & Anderson 1983) as Gymnasium's `CartPoleEnv`, without
/// a time limit (see [`cartpole_v1`]).
///
/// State `[x, x_dot, theta, theta_dot]` in f64, advanced by the explicit Euler integrator;
/// observations are that state cast to f32, shape `[4]`. Actions: `0` pushes left, `1` right.
/// Reward 1 on every step, the terminating one included. Terminates when `|x| > 2.4` or
/// `|theta| > 12°`. `reset` draws each state variable uniformly in `[-0.05, 0.05)` from a
/// Pcg64 generator (seeded from the OS until a seed is given); this draw is not numpy's.
#[derive(Clone, Debug)]
pub struct CartPole {
    state: [f64; 4],
    rng: Pcg64,
    needs_reset: bool,
}

impl Default for CartPole {
    fn default() -> Self {
        Self::new()
    }
}

impl CartPole {
    /// A new env; call `reset` before stepping.
    pub fn new() -> Self {
        Self {
            state: [0.0; 4],
            rng: Pcg64::from_entropy(),
            needs_reset: true,
        }
    }
    /// An env placed in the exact internal state `[x, x_dot, theta, theta_dot]`, ready to step
    /// (for replaying recorded trajectories).
    pub fn from_state(state: [f64; 4]) -> Self {
        Self {
            state,
            rng: Pcg64::from_entropy(),
            needs_reset: false,
        }
    }
    /// The internal state `[x, x_dot, theta, theta_dot]`.
    pub fn state(&self) -> [f64; 4] {
        self.state
    }
    fn obs(&self) -> Vec<f32> {
        self.state.iter().map(|&v| v as f32).collect()
    }
}

impl Env for CartPole {
    type Elem = f32;
    fn observation_space(&self) -> Space {
        Space::Box {
            shape: vec![4],
            dtype: Dtype::F32,
            low: f32::NEG_INFINITY,
            high: f32::INFINITY,
        }
    }
    fn action_space(&self) -> Space {
        Space::Discrete(2)
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<f32>, Info), EnvError> {
        if let Some(seed) = seed {
            self.rng = Pcg64::seed_from_u64(seed);
        }
        for v in &mut self.state {
            *v = self.rng.gen_range(-0.05..0.05);
        }
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
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if action == 1 { FORCE_MAG } else { -FORCE_MAG };
        let costheta = theta.cos();
        let sintheta = theta.sin();
        // Same operation order as Gymnasium, so results agree bit for bit.
        let temp = (force + POLEMASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS;
        let thetaacc = (GRAVITY * sintheta - costheta * temp)
            / (LENGTH * (4.0 / 3.0 - MASSPOLE * (costheta * costheta) / TOTAL_MASS));
        let xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS;
        let x = x + TAU * x_dot;
        let x_dot = x_dot + TAU * xacc;
        let theta = theta + TAU * theta_dot;
        let theta_dot = theta_dot + TAU * thetaacc;
        self.state = [x, x_dot, theta, theta_dot];
        // Written as Gymnasium writes it: a NaN state does not terminate there, while
        // `!range.contains(&NaN)` would.
        #[allow(clippy::manual_range_contains)]
        let terminated = x < -X_THRESHOLD
            || x > X_THRESHOLD
            || theta < -THETA_THRESHOLD_RADIANS
            || theta > THETA_THRESHOLD_RADIANS;
        self.needs_reset = terminated;
        Ok(Step {
            obs: self.obs(),
            reward: 1.0,
            terminated,
            truncated: false,
            info: Info::default(),
        })
    }
}

/// CartPole-v1 as `gymnasium.make("CartPole-v1")` builds it, plus episode statistics:
/// `EpisodeStatistics(TimeLimit(CartPole, 500))`.
pub type CartPoleV1 = EpisodeStatistics<TimeLimit<CartPole>>;

/// A new [`CartPoleV1`]: truncated at 500 steps, `info.episode` filled at each episode end.
pub fn cartpole_v1() -> CartPoleV1 {
    cartpole_v1_from(CartPole::new())
}

/// Wraps a [`CartPole`] (e.g. from [`CartPole::from_state`]) as [`CartPoleV1`].
pub fn cartpole_v1_from(env: CartPole) -> CartPoleV1 {
    EpisodeStatistics::new(TimeLimit::with_limit(env, V1_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_draws_within_bounds_and_the_seed_fixes_the_draw() {
        let mut a = CartPole::new();
        let mut b = CartPole::new();
        let (oa, _) = a.reset(Some(3)).unwrap();
        let (ob, _) = b.reset(Some(3)).unwrap();
        assert_eq!(oa, ob);
        assert!(a.state().iter().all(|v| (-0.05..0.05).contains(v)));
        let (oc, _) = b.reset(Some(4)).unwrap();
        assert_ne!(oa, oc);
        // Unseeded resets continue the generator: a second episode differs from the first.
        let (od, _) = a.reset(None).unwrap();
        assert_ne!(oa, od);
    }

    #[test]
    fn rejects_bad_actions_and_steps_after_termination() {
        let mut env = CartPole::new();
        assert!(matches!(env.step(0), Err(EnvError::NeedsReset)));
        env.reset(Some(0)).unwrap();
        assert!(matches!(
            env.step(2),
            Err(EnvError::InvalidAction { action: 2, n: 2 })
        ));
        let mut steps = 0;
        while !env.step(1).unwrap().terminated {
            steps += 1;
            assert!(steps < 500, "always pushing right must topple the pole");
        }
        assert!(matches!(env.step(1), Err(EnvError::NeedsReset)));
    }

    #[test]
    fn v1_truncates_at_500_and_reports_the_episode() {
        // A state far from both thresholds cannot be kept up 500 steps by a fixed action, so
        // drive it with a simple balancing controller instead.
        let mut env = cartpole_v1();
        let (mut obs, _) = env.reset(Some(1)).unwrap();
        for t in 1..=CARTPOLE_V1_MAX_STEPS {
            let action = usize::from(obs[2] + 0.5 * obs[3] > 0.0);
            let s = env.step(action).unwrap();
            assert!(!s.terminated, "the controller balances the pole (step {t})");
            assert_eq!(s.truncated, t == CARTPOLE_V1_MAX_STEPS);
            obs = s.obs;
            if s.truncated {
                assert_eq!(
                    s.info.episode,
                    Some(crate::EpisodeStats {
                        ret: 500.0,
                        len: 500
                    })
                );
            }
        }
    }
}
