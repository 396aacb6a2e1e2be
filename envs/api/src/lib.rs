//! The Env API: Gymnasium's semantics in an owned, `Send` trait; spaces; generic wrappers;
//! a vector env with auto-reset; and small fast envs for tests (CartPole-v1, a memory task).
#![deny(missing_docs)]

mod env;
mod error;
mod space;

pub use env::{Element, Env, EpisodeStats, Info, RgbFrame, Step};
pub use error::EnvError;
pub use space::{Dtype, Space};
