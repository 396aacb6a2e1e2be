use std::path::PathBuf;

/// Everything that can be wrong with the input of a statistic, or with drawing a plot.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// An input had no values (no runs, no tasks, no thresholds, no checkpoints, …).
    #[error("{what}: no values; at least one is needed")]
    Empty {
        /// Which input.
        what: &'static str,
    },
    /// An input had fewer values than the statistic needs.
    #[error("{what}: {got} values; at least {need} are needed")]
    TooFew {
        /// Which input.
        what: &'static str,
        /// How many the statistic needs.
        need: usize,
        /// How many there were.
        got: usize,
    },
    /// A value was NaN or infinite.
    #[error("{what}: value {index} is {value}; every value must be finite")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// The value's position in the input (row-major for a matrix).
        index: usize,
        /// The value.
        value: f64,
    },
    /// Inputs that must agree in shape or length did not.
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        /// Which inputs.
        what: &'static str,
        /// The shape or length required.
        expected: String,
        /// The shape or length given.
        got: String,
    },
    /// A parameter was outside the values it accepts.
    #[error("{name} = {value}: {accepted}")]
    Parameter {
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        accepted: &'static str,
    },
    /// A statistic returned NaN or infinity on a bootstrap resample.
    #[error("the statistic returned {value} on bootstrap resample {rep}; it must be finite")]
    NonFiniteStatistic {
        /// The resample (0-based).
        rep: usize,
        /// The value it returned.
        value: f64,
    },
    /// Drawing or writing a plot failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// The PNG being written.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// `Result` with [`StatsError`].
pub type Result<T> = std::result::Result<T, StatsError>;

/// Checks that `values` is non-empty and finite.
pub(crate) fn check_finite(what: &'static str, values: &[f64]) -> Result<()> {
    if values.is_empty() {
        return Err(StatsError::Empty { what });
    }
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(StatsError::NonFinite {
            what,
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}
