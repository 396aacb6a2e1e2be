//! The `brims` command as a library: one module per role, so tests call functions instead of
//! spawning the binary where a process is not the point. `main.rs` only calls [`cli::main`].
//!
//! - [`run`]: a run's directory (naming, lock, summary, atomic writes);
//! - [`train`]: `brims train` (arguments, preparation, the driver, telemetry, preflight);
//! - [`eval`]: `brims eval` and the checkpoint loading analyze, lesion and probe share;
//! - [`compare`]: `brims compare` and its report;
//! - [`sweep`]: `brims sweep` (spec, manifest, local pool, Slurm, report);
//! - [`analyze`]: `brims analyze`, `lesion`, `probe` (studies of a trained agent);
//! - [`bench`]: `brims bench …`;
//! - [`play`]: `brims play`, `brims list-games`;
//! - [`config`]: config files, `--set` overrides, the typed run config; [`envs`]: env factories.

pub mod activity;
pub mod analyze;
pub mod bench;
pub mod cli;
pub mod compare;
pub mod config;
pub mod envs;
pub mod eval;
pub mod play;
pub mod run;
pub mod sweep;
pub mod train;
