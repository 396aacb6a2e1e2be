//! Atari 2600 games on the Arcade Learning Environment (ALE 0.6, built from source by
//! ale-sys) with the standard preprocessing of Machado et al. 2018 / CleanRL.
//!
//! ```no_run
//! use envs_api::Env;
//! use envs_atari::{make_atari, AtariConfig};
//! let mut env = make_atari("ALE/Breakout-v5", &AtariConfig::default(), 0).unwrap();
//! let (obs, _info) = env.reset(None).unwrap(); // u8 [1, 84, 84]
//! let step = env.step(1).unwrap(); // obs, clipped reward, terminated, truncated, info
//! ```
//!
//! - Games: the ROMs bundled by the `ale` crate by name ([`list_games`]; `Breakout`,
//!   `breakout`, `ALE/Breakout-v5`, `BreakoutNoFrameskip-v4` all work; an id only where the
//!   config has the settings it stands for, see [`id_settings`]), or a ROM file by path.
//!   User ROMs are checked (size, MD5) before ALE sees them, because ALE calls `exit(1)` on a
//!   ROM it cannot load. The bundled Defender dump is refused: it hangs ALE's `loadROM`.
//! - Episodes: with `episodic_life`, a lost life returns `terminated` (a training signal);
//!   `reset(None)` then continues the same game. `info.episode` (raw score, length in agent
//!   steps) appears only when the real game ends (game over, or truncation at
//!   `max_episode_frames`).
//! - Threads: an [`AtariEnv`] is `Send` and is used by one thread at a time. Creating,
//!   reseeding and dropping envs take a process-wide lock (ALE's static state is not
//!   thread-safe while ROMs load); stepping takes none.
//! - Determinism: the same seed gives the same trajectory (sticky actions included); ALE is
//!   always given a non-zero seed derived from the user's (ALE's 0 means "use the clock").
//!
//! Licence: ALE is GPL-2.0, so binaries that link this crate are GPL-2.0.
#![deny(missing_docs)]

mod ale;
mod env;
mod error;
mod gym_id;
mod preprocess;
mod roms;

pub use env::{make_atari, raw_frames_per_sec, AtariConfig, AtariEnv, RawAle, OBS_SIZE};
pub use error::AtariError;
pub use gym_id::{id_settings, IdSettings};
pub use roms::{game_key, list_games, reference_scores, return_range};
