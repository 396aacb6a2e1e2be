//! Errors of the Atari environments.

use envs_api::EnvError;

/// Everything creating or running an Atari environment can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AtariError {
    /// The game name matches no bundled ROM.
    #[error("unknown Atari game `{name}`{}; `brims list-games` lists all", suggest(.suggestions))]
    UnknownGame {
        /// The name given.
        name: String,
        /// Bundled games whose names are close to it (edit distance).
        suggestions: Vec<&'static str>,
    },
    /// A ROM file that ALE must not see (it would `exit(1)` or run garbage).
    #[error("bad ROM {path}: {why}")]
    BadRom {
        /// The ROM file.
        path: String,
        /// What was wrong and what is accepted.
        why: String,
    },
    /// Reading or writing a ROM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A Gymnasium/ALE id whose settings the config does not have (or cannot have).
    #[error("game = \"{id}\": {why}")]
    GymId {
        /// The id as given.
        id: String,
        /// What the id stands for and what to write instead.
        why: String,
    },
    /// A configuration value out of range.
    #[error("invalid Atari setting {what}: {why}")]
    Config {
        /// The setting.
        what: &'static str,
        /// What was wrong and what is accepted.
        why: String,
    },
    /// The action is not in the action space.
    #[error("action {action} is out of range: the action space is Discrete({n})")]
    InvalidAction {
        /// The action given.
        action: usize,
        /// Number of actions.
        n: usize,
    },
    /// `step` before `reset`, or after the episode ended.
    #[error("step called on an env that needs reset (call reset first)")]
    NeedsReset,
}

fn suggest(suggestions: &[&'static str]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", suggestions.join(", "))
    }
}

impl From<AtariError> for EnvError {
    fn from(e: AtariError) -> Self {
        match e {
            AtariError::InvalidAction { action, n } => EnvError::InvalidAction { action, n },
            AtariError::NeedsReset => EnvError::NeedsReset,
            AtariError::Io { path, source } => EnvError::Io { path, source },
            AtariError::Config { what, why } => EnvError::Invalid {
                what: what.to_string(),
                why,
            },
            other => EnvError::Backend(other.to_string()),
        }
    }
}
