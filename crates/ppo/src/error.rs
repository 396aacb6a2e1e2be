//! Errors of the PPO learner.

use std::path::PathBuf;

/// Everything the learner can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PpoError {
    /// A configuration value is out of range.
    #[error("invalid config `{field}` = {value}: {why}")]
    Config {
        /// The field (its name in the config file).
        field: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        why: String,
    },
    /// A tensor has the wrong shape or the inputs disagree with each other.
    #[error("shape mismatch in {op}: {why}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What was expected and what was found.
        why: String,
    },
    /// The rollout has slots that were never written (still poison).
    #[error("rollout incomplete: {what} at step {step}, env {env} was never written")]
    RolloutIncomplete {
        /// Which buffer.
        what: &'static str,
        /// Step index `t`.
        step: usize,
        /// Env index `n`.
        env: usize,
    },
    /// A loss or gradient became NaN or infinite; training must stop.
    #[error("non-finite {what} ({value}) at update {update}, epoch {epoch}: training stopped, no checkpoint written")]
    NonFinite {
        /// `loss` or `grad_norm`.
        what: &'static str,
        /// The value seen.
        value: f64,
        /// Update index (1-based).
        update: u64,
        /// Epoch within the update (0-based).
        epoch: usize,
    },
    /// A checkpoint file is missing, unreadable, truncated or of another format.
    #[error("checkpoint {path}: {why}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// A checkpoint holds tensors of another network shape.
    #[error(
        "checkpoint {path}: tensor `{name}` has shape {found:?}, this network needs {expected:?}"
    )]
    CheckpointShape {
        /// The safetensors file.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// Shape in the network.
        expected: Vec<usize>,
        /// Shape in the file (empty when missing).
        found: Vec<usize>,
    },
    /// A checkpoint holds NaN or infinite values (the run diverged, or the file is damaged).
    #[error("checkpoint {path}: tensor `{tensor}` has {count} non-finite values (NaN or inf) of {total}; refusing to load it (use an earlier checkpoint)")]
    NonFiniteCheckpoint {
        /// The safetensors file.
        path: PathBuf,
        /// The first tensor (by name) with a non-finite value.
        tensor: String,
        /// How many of its values are not finite.
        count: usize,
        /// How many values it has.
        total: usize,
    },
    /// I/O on a checkpoint directory or file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The recurrent core could not be built or run.
    #[error(transparent)]
    Core(#[from] brims::BrimsError),
    /// The encoder's convolution failed.
    #[error(transparent)]
    Conv(#[from] fastconv::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The envs the sampler steps failed (an env's error or panic, a lost thread).
    #[error(transparent)]
    Envs(Box<dyn std::error::Error + Send + Sync>),
    /// The sampler was used out of order.
    #[error("sampler: {0}")]
    Sampler(String),
}

impl PpoError {
    /// Wraps an error of the envs ([`PpoError::Envs`]).
    pub fn envs(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        PpoError::Envs(Box::new(err))
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, PpoError>;
