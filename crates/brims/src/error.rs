//! The crate's error type.

/// Everything that can go wrong building or running a core, or checking a fixture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrimsError {
    /// The input's last dimension is not the core's input width.
    #[error(
        "input width mismatch: the core expects {expected} features per env, got shape {got:?}"
    )]
    InputWidth {
        /// The core's input width `E`.
        expected: usize,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// The state passed to a step does not fit the core.
    #[error("state mismatch: expected {expected}, got {got}")]
    State {
        /// What the core expects.
        expected: String,
        /// What was passed.
        got: String,
    },
    /// A BRIMs config without layers.
    #[error("a BRIMs core needs at least one layer (L = 0 given)")]
    NoLayers,
    /// A size that must be positive is zero.
    #[error("{what} must be positive, got 0")]
    ZeroSize {
        /// Which size.
        what: String,
    },
    /// The module count does not divide the layer's hidden size.
    #[error("layer {layer}: {modules} modules do not divide hidden size {hidden}")]
    ModulesNotDividing {
        /// Layer index.
        layer: usize,
        /// Hidden size `N_l`.
        hidden: usize,
        /// Module count `M_l`.
        modules: usize,
    },
    /// More active modules than modules.
    #[error("layer {layer}: k = {active} active modules but only M = {modules} modules (need 1 <= k <= M)")]
    ActiveOutOfRange {
        /// Layer index.
        layer: usize,
        /// Active count `k_l`.
        active: usize,
        /// Module count `M_l`.
        modules: usize,
    },
    /// A dropout probability outside `[0, 1)`.
    #[error("{what} dropout must be in [0, 1), got {value}")]
    Dropout {
        /// Which dropout site.
        what: String,
        /// The value given.
        value: f32,
    },
    /// A weight tensor with the wrong shape (loading reference weights or a fixture).
    #[error("tensor `{name}`: expected shape {expected:?}, got {got:?}")]
    WeightShape {
        /// Tensor name.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Actual shape.
        got: Vec<usize>,
    },
    /// A tensor that should be present is missing.
    #[error("tensor `{name}` is missing")]
    MissingTensor {
        /// Tensor name.
        name: String,
    },
    /// The JSON that describes a fixture is missing or unreadable.
    #[error("fixture description {path}: {reason}")]
    FixtureJson {
        /// The JSON path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The fixture's JSON disagrees with its tensors.
    #[error("fixture mismatch: {0}")]
    FixtureMismatch(String),
    /// An I/O error with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl BrimsError {
    /// This error as a candle error (what the `Core` trait methods return).
    pub(crate) fn into_candle(self) -> candle_core::Error {
        candle_core::Error::wrap(self)
    }
}
