//! Stratified bootstrap confidence intervals (rliable `StratifiedBootstrap`,
//! `StratifiedIndependentBootstrap` and `get_interval_estimates` with `method='percentile'`).
//!
//! A resample keeps the tasks and redraws, for every task independently, its runs with
//! replacement from that task's runs (Agarwal et al. 2021, §3.2: "stratified bootstrap"); the
//! statistic is recomputed on each of `reps` resamples and the interval is the
//! `(1 − c)/2` and `(1 + c)/2` percentiles of those values (NumPy's linear interpolation).
//! Resampling uses `rand_pcg::Pcg64` seeded with [`Bootstrap::seed`], so an interval is a pure
//! function of its inputs; it is not the same sequence as rliable's NumPy draws, so intervals
//! agree with rliable's statistically, not digit for digit.

use rand::SeedableRng;
use rand_pcg::Pcg64;

use crate::aggregate::{fraction_above, probability_of_improvement};
use crate::error::{check_finite, Result, StatsError};
use crate::Scores;

/// The fewest resamples [`Bootstrap`] accepts.
pub const MIN_REPS: usize = 2000;

/// How to bootstrap: number of resamples, interval size and RNG seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    /// Number of bootstrap resamples, at least [`MIN_REPS`] (rliable uses 50,000 for aggregate
    /// metrics and 2,000 for performance profiles).
    pub reps: usize,
    /// Coverage of the interval, in (0, 1).
    pub confidence: f64,
    /// Seed of the resampling RNG (`Pcg64::seed_from_u64`).
    pub seed: u64,
}

impl Default for Bootstrap {
    /// 10,000 resamples, 95% intervals, seed 0.
    fn default() -> Self {
        Bootstrap {
            reps: 10_000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

impl Bootstrap {
    fn validate(&self) -> Result<()> {
        if self.reps < MIN_REPS {
            return Err(StatsError::Parameter {
                name: "bootstrap reps",
                value: self.reps.to_string(),
                accepted: "at least 2000 resamples",
            });
        }
        check_confidence(self.confidence)
    }
}

pub(crate) fn check_confidence(confidence: f64) -> Result<()> {
    if confidence > 0.0 && confidence < 1.0 {
        Ok(())
    } else {
        Err(StatsError::Parameter {
            name: "confidence",
            value: confidence.to_string(),
            accepted: "a coverage strictly between 0 and 1, e.g. 0.95",
        })
    }
}

/// A point estimate with a confidence interval `[lower, upper]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The statistic on the data as given.
    pub point: f64,
    /// Lower end of the interval.
    pub lower: f64,
    /// Upper end of the interval.
    pub upper: f64,
}

/// Stratified bootstrap percentile interval of `statistic` (e.g. [`crate::iqm`],
/// [`crate::mean`], `|s| optimality_gap(s, 1.0)`), as rliable's `get_interval_estimates` with
/// `task_bootstrap=False`: runs are resampled with replacement within each task.
///
/// Errors: `cfg` out of range, or the statistic returning a non-finite value.
pub fn stratified_bootstrap_ci(
    scores: &Scores,
    statistic: impl Fn(&Scores) -> f64,
    cfg: &Bootstrap,
) -> Result<Interval> {
    let point = statistic(scores);
    let cis = bootstrap(&[scores], cfg, |s| vec![statistic(&s[0])])?;
    Ok(with_point(point, cis[0]))
}

/// [`probability_of_improvement`] of `x` over `y` with its stratified bootstrap interval:
/// in each resample the runs of `x` and, independently, the runs of `y` are redrawn within
/// each task (rliable `StratifiedIndependentBootstrap`), so `x` and `y` may have different
/// numbers of runs.
pub fn probability_of_improvement_ci(x: &Scores, y: &Scores, cfg: &Bootstrap) -> Result<Interval> {
    let point = probability_of_improvement(x, y)?;
    let cis = bootstrap(&[x, y], cfg, |s| {
        // Same shapes as x and y, checked above.
        vec![probability_of_improvement(&s[0], &s[1]).unwrap_or(f64::NAN)]
    })?;
    Ok(with_point(point, cis[0]))
}

/// Performance profile with bootstrap bands: for each threshold `τ` in `taus`, the fraction of
/// all `runs × tasks` scores strictly above `τ` ([`fraction_above`]), with its stratified
/// bootstrap interval (rliable `create_performance_profile` with `use_score_distribution=True`;
/// every `τ` uses the same resamples). A profile that lies above another everywhere is
/// stochastically dominant (Agarwal et al. 2021, §4).
pub fn performance_profile(
    scores: &Scores,
    taus: &[f64],
    cfg: &Bootstrap,
) -> Result<Vec<Interval>> {
    check_finite("performance profile: taus", taus)?;
    let cis = bootstrap(&[scores], cfg, |s| {
        taus.iter().map(|&t| fraction_above(&s[0], t)).collect()
    })?;
    Ok(taus
        .iter()
        .zip(cis)
        .map(|(&t, ci)| with_point(fraction_above(scores, t), ci))
        .collect())
}

/// Sample efficiency: `statistic` (normally [`crate::iqm`]) of the scores at each checkpoint
/// (e.g. frames 1M, 2M, …), each with its stratified bootstrap interval.
///
/// Every checkpoint is bootstrapped from the same seed, so where checkpoints have the same
/// shape they use the same resampled runs, as rliable does when it bootstraps a
/// `runs × tasks × checkpoints` array in one go.
pub fn sample_efficiency(
    checkpoints: &[Scores],
    statistic: impl Fn(&Scores) -> f64,
    cfg: &Bootstrap,
) -> Result<Vec<Interval>> {
    if checkpoints.is_empty() {
        return Err(StatsError::Empty {
            what: "sample efficiency: checkpoints",
        });
    }
    checkpoints
        .iter()
        .map(|s| stratified_bootstrap_ci(s, &statistic, cfg))
        .collect()
}

fn with_point(point: f64, (lower, upper): (f64, f64)) -> Interval {
    Interval {
        point,
        lower,
        upper,
    }
}

/// Runs `cfg.reps` stratified resamples of every matrix in `samples` (each independently) and
/// returns, for each output of `statistic`, its percentile interval.
fn bootstrap<F>(samples: &[&Scores], cfg: &Bootstrap, statistic: F) -> Result<Vec<(f64, f64)>>
where
    F: Fn(&[Scores]) -> Vec<f64>,
{
    cfg.validate()?;
    let mut rng = Pcg64::seed_from_u64(cfg.seed);
    let mut resampled: Vec<Scores> = samples.iter().map(|&s| s.clone()).collect();
    // values[k][rep]: output k of the statistic on resample rep.
    let mut values: Vec<Vec<f64>> = Vec::new();
    for rep in 0..cfg.reps {
        for (r, s) in resampled.iter_mut().zip(samples) {
            r.resample_from(s, &mut rng);
        }
        let out = statistic(&resampled);
        if values.is_empty() {
            values = vec![Vec::with_capacity(cfg.reps); out.len()];
        }
        for (column, v) in values.iter_mut().zip(out) {
            if !v.is_finite() {
                return Err(StatsError::NonFiniteStatistic { rep, value: v });
            }
            column.push(v);
        }
    }
    let tail = 100.0 * (1.0 - cfg.confidence) / 2.0;
    Ok(values
        .iter_mut()
        .map(|column| {
            column.sort_by(f64::total_cmp);
            (percentile(column, tail), percentile(column, 100.0 - tail))
        })
        .collect())
}

/// `numpy.percentile(sorted, q)` with its default linear interpolation; `sorted` non-empty.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q / 100.0;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = h - lo as f64;
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 4.0, 8.0];
        // numpy.percentile([1, 2, 4, 8], [0, 2.5, 50, 97.5, 100]) = 1, 1.075, 3, 7.7, 8
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!((percentile(&v, 2.5) - 1.075).abs() < 1e-12);
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert!((percentile(&v, 97.5) - 7.7).abs() < 1e-12);
        assert_eq!(percentile(&v, 100.0), 8.0);
        assert_eq!(percentile(&[5.0], 2.5), 5.0);
    }

    #[test]
    fn bad_configs_are_refused() {
        let s = Scores::from_rows(&[[1.0], [2.0]]).unwrap();
        let few = Bootstrap {
            reps: 100,
            ..Bootstrap::default()
        };
        assert_eq!(
            stratified_bootstrap_ci(&s, crate::mean, &few)
                .unwrap_err()
                .to_string(),
            "bootstrap reps = 100: at least 2000 resamples"
        );
        for confidence in [0.0, 1.0, f64::NAN, 95.0] {
            let cfg = Bootstrap {
                confidence,
                ..Bootstrap::default()
            };
            assert!(matches!(
                stratified_bootstrap_ci(&s, crate::mean, &cfg),
                Err(StatsError::Parameter { .. })
            ));
        }
        let nan = stratified_bootstrap_ci(&s, |_| f64::NAN, &Bootstrap::default());
        assert!(matches!(
            nan,
            Err(StatsError::NonFiniteStatistic { rep: 0, .. })
        ));
        assert!(matches!(
            performance_profile(&s, &[], &Bootstrap::default()),
            Err(StatsError::Empty { .. })
        ));
        assert!(matches!(
            sample_efficiency(&[], crate::iqm, &Bootstrap::default()),
            Err(StatsError::Empty { .. })
        ));
    }
}
