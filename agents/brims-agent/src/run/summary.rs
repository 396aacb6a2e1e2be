//! A finished run's summary.json: what `brims train` prints last and what compare and sweeps
//! read back.

use std::path::PathBuf;

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RunSummary {
    pub run_dir: PathBuf,
    pub frames: u64,
    pub mean_return_last_20: Option<f64>,
    /// SPS: agent steps per second summed over the envs, over the whole run (resumes included).
    pub sps: f64,
    pub rollout_secs: f64,
    pub update_secs: f64,
    pub param_count: usize,
    /// Training FLOPs per agent step, counted from the network ([`ppo::ForwardFlops`]).
    #[serde(default)]
    pub flops_per_step: u64,
    /// Of which one forward pass (acting); the rest is the update's.
    #[serde(default)]
    pub forward_flops: u64,
    pub interrupted: bool,
}

/// Name of the per-run JSON summary.
pub(crate) const SUMMARY_FILE: &str = "summary.json";
