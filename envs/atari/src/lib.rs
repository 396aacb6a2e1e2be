//! Atari 2600 games on the Arcade Learning Environment with the standard preprocessing.
//!
//! ```no_run
//! use envs_api::Env;
//! use envs_atari::{make_atari, AtariConfig};
//! let mut env = make_atari("ALE/Breakout-v5", &AtariConfig::default(), 0).unwrap();
//! let (obs, _info) = env.reset(None).unwrap(); // u8 [1, 84, 84]
//! let step = env.step(1).unwrap();
//! ```
//!
//! ALE (built from source by ale-sys) is GPL-2.0.
#![deny(missing_docs)]

mod ale;
mod env;
mod error;
mod preprocess;
mod roms;

pub use env::{make_atari, raw_frames_per_sec, AtariConfig, AtariEnv, OBS_SIZE};
pub use error::AtariError;
pub use roms::{list_games, reference_scores};
