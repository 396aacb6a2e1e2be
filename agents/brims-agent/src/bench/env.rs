//! `brims bench env` (see ../shared/ARCHITECTURE.md, "Commands").

use clap::Args;

/// Arguments of `brims bench env`.
#[derive(Args, Debug, Clone)]
pub(crate) struct EnvArgs {}

/// Runs the benchmark; returns the JSON object printed as the last line.
pub(crate) fn run(_args: &EnvArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("bench env is not implemented yet")
}
