//! A run prepared for the driver (config, run directory, resume point) and the limits a caller
//! puts on it.

use crate::config::run::RunConfig;
use std::path::PathBuf;

/// A run to start or continue.
pub(crate) struct RunSpec {
    pub cfg: RunConfig,
    pub dir: PathBuf,
    /// Continue the run in `dir` (else create `dir` for a new one).
    pub resume: bool,
    /// Where the config came from (recorded in run.json of a new run).
    pub config_source: String,
}

/// Extra limits on a run (the benchmark stops after some seconds).
pub(crate) struct Limits {
    pub seconds: Option<f64>,
    pub quiet: bool,
}
