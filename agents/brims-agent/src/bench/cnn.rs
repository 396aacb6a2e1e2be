//! `brims bench cnn` (see ../shared/ARCHITECTURE.md, "Commands").

use clap::Args;

/// Arguments of `brims bench cnn`.
#[derive(Args, Debug, Clone)]
pub(crate) struct CnnArgs {}

/// Runs the benchmark; returns the JSON object printed as the last line.
pub(crate) fn run(_args: &CnnArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("bench cnn is not implemented yet")
}
