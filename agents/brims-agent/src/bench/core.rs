//! `brims bench core` (see ../shared/ARCHITECTURE.md, "Commands").

use clap::Args;

/// Arguments of `brims bench core`.
#[derive(Args, Debug, Clone)]
pub(crate) struct CoreArgs {}

/// Runs the benchmark; returns the JSON object printed as the last line.
pub(crate) fn run(_args: &CoreArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("bench core is not implemented yet")
}
