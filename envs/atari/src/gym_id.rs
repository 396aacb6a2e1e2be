//! What a Gymnasium / ALE environment id says besides the game: `PongNoFrameskip-v4` is Pong
//! without sticky actions and with a 400,000-frame episode limit, `ALE/Pong-v5` Pong with sticky
//! actions 0.25, a frame skip of 4 and a 108,000-frame limit (ALE's "Version History and Naming
//! Schemes"; Gym's registrations of v0/v4).
//!
//! This crate takes its settings from [`AtariConfig`] only (a run's `[env.atari]` table, which
//! its config.toml records), so an id is accepted where the config already has the id's
//! settings and refused, naming the settings to write, where it does not: the name can then never
//! silently mean something the run does not do.

use crate::env::AtariConfig;
use crate::error::AtariError;

/// The settings a versioned id stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdSettings {
    /// Sticky actions: 0.25 for v0 and v5, 0 for v4.
    pub repeat_action_probability: f32,
    /// Emulator frames per agent step the id fixes (`Deterministic`: 4, 3 for SpaceInvaders;
    /// v5: 4); `None` for `NoFrameskip`, whose skip is the wrappers' (`frame_skip` here).
    pub frame_skip: Option<u32>,
    /// The episode limit in emulator frames (v0/v4 TimeLimits: 100,000 agent steps, 400,000
    /// frames without frame skip; v5: 108,000).
    pub max_episode_frames: u64,
}

impl IdSettings {
    /// Sets `cfg`'s switches to the id's (for callers with no config table of their own).
    pub fn apply_to(&self, cfg: &mut AtariConfig) {
        cfg.repeat_action_probability = self.repeat_action_probability;
        if let Some(skip) = self.frame_skip {
            cfg.frame_skip = skip;
        }
        cfg.max_episode_frames = self.max_episode_frames;
    }

    /// The `[env.atari]` lines of these settings that `cfg` lacks (empty: `cfg` agrees).
    fn differences(&self, cfg: &AtariConfig) -> Vec<String> {
        let mut out = Vec::new();
        if cfg.repeat_action_probability != self.repeat_action_probability {
            out.push(format!(
                "repeat_action_probability = {:?} (not {})",
                self.repeat_action_probability, cfg.repeat_action_probability
            ));
        }
        if let Some(skip) = self.frame_skip.filter(|&s| s != cfg.frame_skip) {
            out.push(format!("frame_skip = {skip} (not {})", cfg.frame_skip));
        }
        if cfg.max_episode_frames != self.max_episode_frames {
            out.push(format!(
                "max_episode_frames = {} (not {})",
                self.max_episode_frames, cfg.max_episode_frames
            ));
        }
        out
    }
}

/// The settings of `game` when it is a versioned Gymnasium/ALE id (`…-v0`, `…-v4`, `…-v5`, with
/// or without `ALE/`, `NoFrameskip` or `Deterministic`); `None` for a bare name or a path. An id
/// whose settings this crate cannot reproduce (a random frame skip, an unknown version) is an
/// error.
pub fn id_settings(game: &str) -> Result<Option<IdSettings>, AtariError> {
    let name = game.trim();
    let name = if name.len() >= 4 && name[..4].eq_ignore_ascii_case("ale/") {
        &name[4..]
    } else {
        name
    };
    let Some((base, version)) = name.rsplit_once("-v") else {
        return Ok(None);
    };
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit()) {
        return Ok(None);
    }
    let refuse = |why: String| AtariError::GymId {
        id: game.to_string(),
        why,
    };
    let (bare, variant) = if let Some(b) = base.strip_suffix("NoFrameskip") {
        (b, "NoFrameskip")
    } else if let Some(b) = base.strip_suffix("Deterministic") {
        (b, "Deterministic")
    } else {
        (base, "")
    };
    let deterministic_skip = if bare.eq_ignore_ascii_case("SpaceInvaders") {
        3
    } else {
        4
    };
    let settings = match (version, variant) {
        ("5", "") => IdSettings {
            repeat_action_probability: 0.25,
            frame_skip: Some(4),
            max_episode_frames: 108_000,
        },
        ("0" | "4", "NoFrameskip") => IdSettings {
            repeat_action_probability: if version == "0" { 0.25 } else { 0.0 },
            frame_skip: None,
            max_episode_frames: 400_000,
        },
        ("0" | "4", "Deterministic") => IdSettings {
            repeat_action_probability: if version == "0" { 0.25 } else { 0.0 },
            frame_skip: Some(deterministic_skip),
            max_episode_frames: 100_000 * u64::from(deterministic_skip),
        },
        ("0" | "4", _) => {
            return Err(refuse(format!(
                "its frame skip is drawn at random from 2 to 4 each step, which this crate does \
                 not do; use game = \"{bare}\" with the [env.atari] settings you want (e.g. \
                 {bare}NoFrameskip-v4's: repeat_action_probability = {}, max_episode_frames = \
                 400000)",
                if version == "0" { "0.25" } else { "0.0" }
            )))
        }
        _ => {
            return Err(refuse(format!(
                "not a Gymnasium/ALE Atari id (v0 and v4, with NoFrameskip or Deterministic, \
                 or v5); use game = \"{bare}\" and set [env.atari]"
            )))
        }
    };
    Ok(Some(settings))
}

/// Refuses `game` when it is an id whose settings `cfg` does not have, naming what to write.
pub(crate) fn check_id(game: &str, cfg: &AtariConfig) -> Result<(), AtariError> {
    let Some(settings) = id_settings(game)? else {
        return Ok(());
    };
    let missing = settings.differences(cfg);
    if missing.is_empty() {
        return Ok(());
    }
    Err(AtariError::GymId {
        id: game.to_string(),
        why: format!(
            "the id stands for settings the config does not have, and settings come from \
             [env.atari] only: set {} there (or use the bare game name)",
            missing.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stand_for_their_documented_settings() {
        let v4 = id_settings("PongNoFrameskip-v4").unwrap().unwrap();
        assert_eq!(
            (
                v4.repeat_action_probability,
                v4.frame_skip,
                v4.max_episode_frames
            ),
            (0.0, None, 400_000)
        );
        let v5 = id_settings("ALE/Pong-v5").unwrap().unwrap();
        assert_eq!(
            (
                v5.repeat_action_probability,
                v5.frame_skip,
                v5.max_episode_frames
            ),
            (0.25, Some(4), 108_000)
        );
        let det = id_settings("SpaceInvadersDeterministic-v0")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                det.repeat_action_probability,
                det.frame_skip,
                det.max_episode_frames
            ),
            (0.25, Some(3), 300_000)
        );
        assert_eq!(id_settings("Pong").unwrap(), None);
        assert_eq!(id_settings("roms/pong.bin").unwrap(), None);
        assert!(id_settings("Pong-v4").is_err());
        assert!(id_settings("Pong-v7").is_err());
    }

    /// Item 12 of issue 24: an id whose settings the config lacks is refused, naming them; one
    /// the config agrees with is accepted.
    #[test]
    fn an_id_is_refused_unless_the_config_has_its_settings() {
        let defaults = AtariConfig::default();
        let err = check_id("PongNoFrameskip-v4", &defaults)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("repeat_action_probability = 0.0")
                && err.contains("max_episode_frames = 400000"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        check_id("ALE/Pong-v5", &defaults).unwrap();
        let mut cleanrl = AtariConfig::default();
        id_settings("PongNoFrameskip-v4")
            .unwrap()
            .unwrap()
            .apply_to(&mut cleanrl);
        check_id("PongNoFrameskip-v4", &cleanrl).unwrap();
        assert!(check_id("ALE/Pong-v5", &cleanrl).is_err());
    }
}
