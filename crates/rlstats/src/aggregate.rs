//! Point estimates over a whole [`Scores`] matrix, with rliable's definitions
//! (`rliable/metrics.py`, Agarwal et al. 2021, §4 and Appendix A).

use crate::error::{Result, StatsError};
use crate::Scores;

/// Mean over tasks of the per-task mean over runs (rliable `aggregate_mean`). With the same
/// number of runs on every task this is the mean of all scores.
pub fn mean(scores: &Scores) -> f64 {
    let means = scores.task_means();
    means.iter().sum::<f64>() / means.len() as f64
}

/// Median over tasks of the per-task mean over runs (rliable `aggregate_median`): the mean of
/// the two middle task means when the number of tasks is even.
pub fn median(scores: &Scores) -> f64 {
    let mut means = scores.task_means();
    means.sort_by(f64::total_cmp);
    let n = means.len();
    if n % 2 == 1 {
        means[n / 2]
    } else {
        (means[n / 2 - 1] + means[n / 2]) / 2.0
    }
}

/// Interquartile mean (rliable `aggregate_iqm`): the 25% trimmed mean of all `runs × tasks`
/// scores pooled together, exactly as `scipy.stats.trim_mean(scores, 0.25, axis=None)`: with
/// `n` scores sorted, `⌊n/4⌋` are dropped at each end and the rest averaged. With fewer than 4
/// scores nothing is dropped. IQM is robust to outlier runs, like the median, yet uses half the
/// data, so its bootstrap interval is much narrower than the median's (Agarwal et al. 2021, §4).
pub fn iqm(scores: &Scores) -> f64 {
    let mut v = scores.values().to_vec();
    v.sort_by(f64::total_cmp);
    let cut = v.len() / 4;
    let kept = &v[cut..v.len() - cut];
    kept.iter().sum::<f64>() / kept.len() as f64
}

/// Optimality gap (rliable `aggregate_optimality_gap`): `γ − mean(min(score, γ))` over all
/// scores, i.e. how far the algorithm falls short of the target `γ` (1 for human-normalised
/// scores), scores above `γ` counting as `γ`. Lower is better.
pub fn optimality_gap(scores: &Scores, gamma: f64) -> f64 {
    let v = scores.values();
    gamma - v.iter().map(|&s| s.min(gamma)).sum::<f64>() / v.len() as f64
}

/// The fraction of all `runs × tasks` scores strictly greater than `tau`: one point of a
/// performance profile, the empirical tail distribution `F̂(τ)` (rliable `run_score_deviation`).
pub fn fraction_above(scores: &Scores, tau: f64) -> f64 {
    let v = scores.values();
    v.iter().filter(|&&s| s > tau).count() as f64 / v.len() as f64
}

/// Average probability of improvement of `x` over `y` (rliable `probability_of_improvement`):
/// the mean over tasks of `P(X_m > Y_m) + ½ P(X_m = Y_m)`, where `X_m` is a random run of `x`
/// on task `m` — the Mann–Whitney U statistic of task `m` divided by `runs_x · runs_y`.
/// 0.5 means neither is better; `P(x over y) + P(y over x) = 1`. The two may have different
/// numbers of runs but must cover the same tasks (in the same order).
pub fn probability_of_improvement(x: &Scores, y: &Scores) -> Result<f64> {
    check_same_tasks(x, y)?;
    let (nx, ny, tasks) = (x.runs(), y.runs(), x.tasks());
    let (xv, yv) = (x.values(), y.values());
    let mut total = 0.0;
    for m in 0..tasks {
        let mut wins = 0.0;
        for i in 0..nx {
            let a = xv[i * tasks + m];
            for j in 0..ny {
                let b = yv[j * tasks + m];
                wins += if a > b {
                    1.0
                } else if a == b {
                    0.5
                } else {
                    0.0
                };
            }
        }
        total += wins / (nx * ny) as f64;
    }
    Ok(total / tasks as f64)
}

fn check_same_tasks(x: &Scores, y: &Scores) -> Result<()> {
    if x.tasks() != y.tasks() {
        return Err(StatsError::Shape {
            what: "probability of improvement: tasks of x and y",
            expected: format!("{} tasks in y, as in x", x.tasks()),
            got: format!("{}", y.tasks()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(v: &[f64]) -> Scores {
        Scores::from_columns(&[v]).unwrap()
    }

    #[test]
    fn iqm_trims_a_quarter_at_each_end() {
        // 8 scores: drop 2 at each end, average 3, 4, 5, 6.
        assert_eq!(iqm(&column(&[8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0])), 4.5);
        // 3 scores: nothing trimmed.
        assert_eq!(iqm(&column(&[1.0, 2.0, 6.0])), 3.0);
        // 5 scores: one trimmed at each end, outlier gone.
        assert_eq!(iqm(&column(&[1.0, 2.0, 2.0, 3.0, 100.0])), 7.0 / 3.0);
    }

    #[test]
    fn median_of_an_even_number_of_tasks_averages_the_middle_two() {
        let s = Scores::from_rows(&[[1.0, 4.0, 10.0, 2.0]]).unwrap();
        assert_eq!(median(&s), 3.0);
        assert_eq!(mean(&s), 4.25);
    }

    #[test]
    fn optimality_gap_clips_at_gamma() {
        assert!((optimality_gap(&column(&[0.5, 2.0]), 1.0) - 0.25).abs() < 1e-15);
    }

    #[test]
    fn probability_of_improvement_is_antisymmetric_and_half_for_identical() {
        let x = Scores::from_rows(&[[1.0, 5.0], [2.0, 5.0], [3.0, 1.0]]).unwrap();
        let y = Scores::from_rows(&[[2.0, 5.0], [0.0, 0.0]]).unwrap();
        let pxy = probability_of_improvement(&x, &y).unwrap();
        let pyx = probability_of_improvement(&y, &x).unwrap();
        assert!((pxy + pyx - 1.0).abs() < 1e-15);
        assert_eq!(probability_of_improvement(&x, &x).unwrap(), 0.5);
        let z = Scores::from_rows(&[[1.0]]).unwrap();
        assert!(matches!(
            probability_of_improvement(&x, &z),
            Err(StatsError::Shape { .. })
        ));
    }

    #[test]
    fn fraction_above_is_strict() {
        let s = column(&[0.0, 1.0, 1.0, 2.0]);
        assert_eq!(fraction_above(&s, 1.0), 0.25);
        assert_eq!(fraction_above(&s, -1.0), 1.0);
    }
}
