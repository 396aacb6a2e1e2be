//! The Env API: Gymnasium's semantics in an owned, `Send` trait; spaces; generic wrappers;
//! a vector env with auto-reset; and small fast envs for tests (CartPole-v1, a memory task).
//!
//! # Auto-reset convention: same step
//!
//! [`AutoReset`] (one env) and [`VecEnv`] (`N` envs) reset an env on the very step its episode
//! ends (`terminated || truncated`), like Gymnasium's `AutoresetMode.SAME_STEP`:
//!
//! - `obs` is the first observation of the *new* episode, so the next action is always taken
//!   on `obs`, and `info` is its reset info;
//! - `reward`, `terminated` and `truncated` belong to the step just taken (the *old* episode);
//! - the old episode's last observation is in `final_obs` (bootstrap a truncated step from
//!   it: `V(final_obs)`, never `V(obs)`), and its last info in `final_info`, whose `episode`
//!   field carries the ended episode's statistics ([`VecStep::episodes`] for a vector env).
//!
//! No step is wasted and no action is dropped, unlike next-step auto-reset (EnvPool's), where
//! the step after a `done` ignores the action and returns the reset observation.
//!
//! # Envs and features
//!
//! [`cartpole_v1`] (Gymnasium's CartPole-v1, checked bit for bit against recorded trajectories)
//! and [`MemoryCue`] (needs memory: feed-forward policies average 0, recurrent ones reach 1)
//! are small and fast, for tests of the learner. The non-default `gymnasium` feature adds
//! `GymnasiumEnv`, an adapter for gymnasium-rs envs (its build needs Python for pyo3).
//!
//! # Example
//!
//! ```
//! use envs_api::{cartpole_v1, VecEnv};
//! let mut envs = VecEnv::new((0..4).map(|_| cartpole_v1()).collect())?;
//! let obs = envs.reset(Some(7))?; // [4 * 4]: env i seeded with 7 + i
//! assert_eq!(obs.len(), 16);
//! let step = envs.step(&[0, 1, 0, 1])?;
//! for (i, ended) in step.final_obs.iter().enumerate() {
//!     if let Some(last) = ended {
//!         // `last` is env i's final observation; step.obs[i * 4..][..4] starts a new episode.
//!         assert_eq!(last.len(), 4);
//!     }
//! }
//! # Ok::<(), envs_api::EnvError>(())
//! ```
#![deny(missing_docs)]

mod cartpole;
mod env;
mod error;
#[cfg(feature = "gymnasium")]
mod gymnasium;
mod memory;
mod space;
mod vector;
mod wrappers;

pub use cartpole::{cartpole_v1, cartpole_v1_from, CartPole, CartPoleV1, CARTPOLE_V1_MAX_STEPS};
pub use env::{Element, Env, EpisodeStats, Info, RgbFrame, Step};
pub use error::EnvError;
#[cfg(feature = "gymnasium")]
pub use gymnasium::GymnasiumEnv;
pub use memory::{memory_cue, MemoryCue};
pub use space::{Dtype, Space};
pub use vector::{AutoReset, AutoStep, VecEnv, VecStep};
pub use wrappers::{ClipReward, EpisodeStatistics, TimeLimit};

#[cfg(test)]
pub(crate) mod test_env;
