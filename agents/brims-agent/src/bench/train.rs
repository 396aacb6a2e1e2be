//! `brims bench train --config F --seconds S`: real training on the config for S seconds,
//! reporting steps/s, the rollout/update split and peak memory.

use std::path::PathBuf;

use clap::Args;

use crate::train::{self, Limits};

/// Arguments of `brims bench train`.
#[derive(Args, Debug, Clone)]
pub(crate) struct TrainArgs {
    /// The run's TOML config.
    #[arg(long)]
    pub config: PathBuf,
    /// Stop after this many seconds (the last update started finishes).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Runs the benchmark; returns the JSON object printed as the last line.
pub(crate) fn run(args: &TrainArgs) -> anyhow::Result<serde_json::Value> {
    if args.seconds.is_nan() || args.seconds <= 0.0 {
        anyhow::bail!("--seconds must be > 0");
    }
    let tmp = tempfile::tempdir()?;
    let targs = train::TrainArgs {
        config: Some(args.config.clone()),
        overrides: args.overrides.clone(),
        run_dir: Some(tmp.path().join("bench")),
        resume: false,
        quiet: true,
    };
    let spec = train::prepare_run(&targs)?;
    let stop = train::install_stop_signals();
    let limits = Limits {
        seconds: Some(args.seconds),
        quiet: true,
    };
    let summary = train::train(&spec, &limits, &stop)?;
    let total = summary.rollout_secs + summary.update_secs;
    let peak_rss_mb = peak_rss_mb();
    println!(
        "config {}: {} frames in {:.1} s",
        args.config.display(),
        summary.frames,
        total
    );
    println!(
        "steps/s {:.1}  (rollout {:.1} s = {:.0}%, update {:.1} s = {:.0}%)",
        summary.sps,
        summary.rollout_secs,
        100.0 * summary.rollout_secs / total.max(1e-9),
        summary.update_secs,
        100.0 * summary.update_secs / total.max(1e-9)
    );
    println!("peak RSS {:.0} MiB", peak_rss_mb.unwrap_or(f64::NAN));
    Ok(serde_json::json!({
        "sps": summary.sps,
        "rollout_secs": summary.rollout_secs,
        "update_secs": summary.update_secs,
        "peak_rss_mb": peak_rss_mb,
    }))
}

/// The process's peak resident set size (VmHWM), Linux only.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
