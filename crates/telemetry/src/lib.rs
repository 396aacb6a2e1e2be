//! TensorBoard event files, PNG summaries, the module-activity picture and the progress bar.
//!
//! A leaf crate: it takes plain numbers and writes them; it knows nothing of tensors or envs.
//!
//! ```no_run
//! # fn main() -> Result<(), telemetry::TelemetryError> {
//! let mut log = telemetry::RunLogger::create(std::path::Path::new("runs/demo"))?;
//! log.scalar("charts/episodic_return", 21.0, 10_000)?;
//! log.text("config", "| key | value |\n|---|---|\n| core | brims |", 0)?;
//! log.flush()?;
//! # Ok(()) }
//! ```
//!
//! # Standard tags
//! Scalars follow CleanRL's names so curves line up with CleanRL and openrlbenchmark:
//! [`tags::EPISODIC_RETURN`] … [`tags::EXPLAINED_VARIANCE`]. BRIMs adds, per layer `l` and module
//! `j`, the scalar [`tags::module_active_rate`] (`brims/layer{l}/module{j}_active_rate`), the
//! histogram [`tags::null_attention`] (`brims/layer{l}/null_attention`) and the image
//! [`tags::MODULE_ACTIVITY`] (`brims/module_activity`); [`RunLogger::brims_activity`] writes
//! all three from a list of [`ActivityBand`]s.
//!
//! One `RunLogger` per run directory: TensorBoard polls only the newest event file of a
//! directory for new data while it runs, so a second live writer there would look stalled.
#![deny(missing_docs)]

mod activity;
mod error;
mod logger;
mod progress;
mod record;
pub mod tags;

pub use activity::{
    labelled_activity_image, labelled_module_activity_image, module_activity_image,
    module_activity_image_sized, ActivityBand, RgbImage, StepEvents, ACTIVE_COLOUR, GUTTER_PX,
};
pub use error::TelemetryError;
pub use logger::{HParamValue, RunLogger};
pub use progress::{Progress, PROGRESS_SECS_ENV};
