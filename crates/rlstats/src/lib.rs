//! Statistics for comparing RL algorithms over several tasks and seeds, following rliable:
//! R. Agarwal, M. Schwarzer, P. S. Castro, A. Courville, M. G. Bellemare, "Deep Reinforcement
//! Learning at the Edge of the Statistical Precipice", NeurIPS 2021
//! (<https://github.com/google-research/rliable>).
//!
//! The scores of one algorithm are a [`Scores`] matrix, `runs × tasks` (seeds × games), e.g.
//! human-normalised final returns. Across tasks:
//! - point estimates: [`mean`], [`median`] (of per-task means), [`iqm`] (interquartile mean,
//!   the 25% trimmed mean of all scores), [`optimality_gap`], [`fraction_above`];
//! - [`stratified_bootstrap_ci`]: a percentile interval for any of them, resampling runs with
//!   replacement within each task ([`Bootstrap`]: resamples, coverage, seed);
//! - [`probability_of_improvement`] of one algorithm over another, and
//!   [`probability_of_improvement_ci`];
//! - [`performance_profile`]: fraction of runs with score > τ over a grid of τ, with bands;
//! - [`sample_efficiency`]: a statistic (IQM) at each training checkpoint, with intervals;
//! - plots of the last two: [`plot_performance_profiles`], [`plot_sample_efficiency`].
//!
//! Per task: [`t_interval`] (mean ± Student-t interval over seeds), [`auc`] (normalised area
//! under a learning curve) and [`human_normalized`].
//!
//! Everything is deterministic: bootstraps draw from `Pcg64` seeded by [`Bootstrap::seed`].
//! Bad input (empty, non-finite, mismatched shapes, parameters out of range) is a
//! [`StatsError`], never a panic. The point estimates are tested against rliable 1.2.0 / SciPy
//! (fixtures/stats/rliable_reference.json, made by scripts/stats_fixture.py).
//!
//! ```
//! use rlstats::{iqm, probability_of_improvement, stratified_bootstrap_ci, Bootstrap, Scores};
//! // 3 seeds × 2 games.
//! let lstm = Scores::from_rows(&[[0.2, 1.1], [0.4, 0.9], [0.3, 1.4]])?;
//! let brims = Scores::from_rows(&[[0.5, 1.0], [0.6, 1.2], [0.1, 1.5]])?;
//! let ci = stratified_bootstrap_ci(&brims, iqm, &Bootstrap::default())?;
//! assert!(ci.lower <= ci.point && ci.point <= ci.upper);
//! let p = probability_of_improvement(&brims, &lstm)?;
//! assert!(p > 0.5);
//! # Ok::<(), rlstats::StatsError>(())
//! ```
#![deny(missing_docs)]

mod aggregate;
mod bootstrap;
mod error;
mod per_task;
mod plot;
mod scores;

pub use aggregate::{
    fraction_above, iqm, mean, median, optimality_gap, probability_of_improvement,
};
pub use bootstrap::{
    performance_profile, probability_of_improvement_ci, sample_efficiency, stratified_bootstrap_ci,
    Bootstrap, Interval, MIN_REPS,
};
pub use error::{Result, StatsError};
pub use per_task::{auc, human_normalized, t_interval};
pub use plot::{
    core_label, font_family, plot_performance_profiles, plot_sample_efficiency, series_colour,
    Band, CORE_COLOURS, FAMILY,
};
pub use scores::Scores;
