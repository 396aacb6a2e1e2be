//! `brims bench train` (see ../shared/ARCHITECTURE.md, "Commands").

use clap::Args;

/// Arguments of `brims bench train`.
#[derive(Args, Debug, Clone)]
pub(crate) struct TrainArgs {}

/// Runs the benchmark; returns the JSON object printed as the last line.
pub(crate) fn run(_args: &TrainArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("bench train is not implemented yet")
}
