//! Errors of environments.

/// Everything an environment can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The action is not in the action space.
    #[error("action {action} is out of range: the action space is Discrete({n})")]
    InvalidAction {
        /// The action given.
        action: usize,
        /// Number of actions.
        n: usize,
    },
    /// `step` was called before `reset`, or after the episode ended without a reset.
    #[error("step called on an env that needs reset (call reset first)")]
    NeedsReset,
    /// A bad argument or configuration value.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The argument or setting.
        what: String,
        /// What was wrong and what is accepted.
        why: String,
    },
    /// The backend (e.g. the emulator) failed.
    #[error("{0}")]
    Backend(String),
    /// I/O while loading something (a ROM, a file).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
