//! Runs [gymnasium-rs](https://crates.io/crates/gymnasium-rs) envs through our [`Env`] trait.
//!
//! Behind the non-default `gymnasium` feature: gymnasium-rs 0.1.1 builds pyo3 0.19, which needs
//! a Python interpreter (3.7–3.11) and its `libpython` at build time.
//!
//! Beware its `CartPole`: it is *not* CartPole-v1. It uses a total mass of 1.0 (Gymnasium: 1.1),
//! the pole's half length 0.5 where Gymnasium uses pole mass × half length 0.05 in the cart's
//! acceleration, f32 state, and reward 0 on the terminating step (Gymnasium: 1). From the same
//! state its trajectories leave ours within one step (the cart accelerates about twice as fast);
//! `tests/gymnasium_interop.rs` measures this. Use [`crate::CartPole`] for Gymnasium's dynamics.

use std::collections::HashMap;
use std::marker::PhantomData;

use gymnasium_rs::core::{Env as GymEnv, Space as GymSpace};

use crate::{Dtype, Env, EnvError, Info, Space, Step};

/// Adapts a gymnasium-rs env with `Discrete(n)` actions (`i32`) and 1-D `f32` vector
/// observations of type `O` (its `ndarray::Array1<f32>`) to [`Env`] with `Elem = f32`.
///
/// Observations are `[d]`, `d` the length of its observation space's bounds. Its per-element
/// bounds become one `low` (their minimum) and one `high` (their maximum). Its info map gives
/// `lives` when it holds a non-negative integer under `"lives"`. Rendering is not forwarded
/// (gymnasium-rs's `CartPole::render` panics). Stepping before a reset or after an episode end
/// is [`EnvError::NeedsReset`], which gymnasium-rs itself does not check.
pub struct GymnasiumEnv<G, O> {
    env: G,
    num_actions: usize,
    obs_size: usize,
    observation_space: Space,
    needs_reset: bool,
    // `fn() -> O`: the adapter never stores an `O`, so it is `Send` whatever `O` is.
    _obs: PhantomData<fn() -> O>,
}

impl<G, O> GymnasiumEnv<G, O>
where
    G: GymEnv<O, i32> + Send,
    O: IntoIterator<Item = f32>,
{
    /// Wraps `env`. Errors unless its action space is `Discrete(n)` with `n >= 1` and its
    /// observation space is a `Box`.
    pub fn new(env: G) -> Result<Self, EnvError> {
        let num_actions = match env.action_space() {
            GymSpace::Discrete(n) if n >= 1 => n as usize,
            other => {
                return Err(EnvError::Invalid {
                    what: "gymnasium-rs action space".into(),
                    why: format!("expected Discrete(n) with n >= 1, got {other:?}"),
                })
            }
        };
        let (obs_size, low, high) = match env.observation_space() {
            GymSpace::Box { low, high } => (
                low.len(),
                low.iter().copied().fold(f32::INFINITY, f32::min),
                high.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            ),
            other => {
                return Err(EnvError::Invalid {
                    what: "gymnasium-rs observation space".into(),
                    why: format!("expected a Box of f32 vectors, got {other:?}"),
                })
            }
        };
        Ok(Self {
            env,
            num_actions,
            obs_size,
            observation_space: Space::Box {
                shape: vec![obs_size],
                dtype: Dtype::F32,
                low,
                high,
            },
            needs_reset: true,
            _obs: PhantomData,
        })
    }
    /// The wrapped env.
    pub fn inner(&self) -> &G {
        &self.env
    }
    /// Unwraps.
    pub fn into_inner(self) -> G {
        self.env
    }
    fn to_obs(&self, obs: O) -> Result<Vec<f32>, EnvError> {
        let obs: Vec<f32> = obs.into_iter().collect();
        if obs.len() != self.obs_size {
            return Err(EnvError::Backend(format!(
                "gymnasium-rs env returned {} values; its observation space has {}",
                obs.len(),
                self.obs_size
            )));
        }
        Ok(obs)
    }
}

fn to_info(info: &HashMap<String, serde_json::Value>) -> Info {
    Info {
        lives: info
            .get("lives")
            .and_then(serde_json::Value::as_u64)
            .and_then(|l| u32::try_from(l).ok()),
        ..Info::default()
    }
}

impl<G, O> Env for GymnasiumEnv<G, O>
where
    G: GymEnv<O, i32> + Send,
    O: IntoIterator<Item = f32>,
{
    type Elem = f32;
    fn observation_space(&self) -> Space {
        self.observation_space.clone()
    }
    fn action_space(&self) -> Space {
        Space::Discrete(self.num_actions)
    }
    /// gymnasium-rs takes `i32` seeds: seeds above `i32::MAX` are [`EnvError::Invalid`].
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<f32>, Info), EnvError> {
        let seed = seed
            .map(|s| {
                i32::try_from(s).map_err(|_| EnvError::Invalid {
                    what: "seed".into(),
                    why: format!("gymnasium-rs takes seeds 0..={}, got {s}", i32::MAX),
                })
            })
            .transpose()?;
        self.needs_reset = true;
        let (obs, info) = self.env.reset(seed, HashMap::new());
        let obs = self.to_obs(obs)?;
        self.needs_reset = false;
        Ok((obs, to_info(&info)))
    }
    fn step(&mut self, action: usize) -> Result<Step<f32>, EnvError> {
        if action >= self.num_actions {
            return Err(EnvError::InvalidAction {
                action,
                n: self.num_actions,
            });
        }
        if self.needs_reset {
            return Err(EnvError::NeedsReset);
        }
        // `action < num_actions <= i32::MAX`, so the cast is exact.
        let (obs, reward, terminated, truncated, info) = self.env.step(action as i32);
        self.needs_reset = terminated || truncated;
        Ok(Step {
            obs: self.to_obs(obs)?,
            reward,
            terminated,
            truncated,
            info: to_info(&info),
        })
    }
}
