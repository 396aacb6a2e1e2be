//! Statistics of one task (one game): mean over seeds with a Student-t interval, area under a
//! learning curve, and human-normalised scores.

use crate::bootstrap::{check_confidence, Interval};
use crate::error::{check_finite, Result, StatsError};

/// Mean of `values` (one task's runs, e.g. final returns over seeds) with the two-sided Student-t
/// interval `mean ± t_{(1+c)/2, n−1} · s/√n`, `s` the sample standard deviation (`ddof = 1`), as
/// `scipy.stats.t.interval(c, n − 1, loc=mean, scale=scipy.stats.sem(values))`.
///
/// Needs at least 2 finite values; when all are equal the interval is the point.
pub fn t_interval(values: &[f64], confidence: f64) -> Result<Interval> {
    check_finite("t interval: values", values)?;
    check_confidence(confidence)?;
    let n = values.len();
    if n < 2 {
        return Err(StatsError::TooFew {
            what: "t interval: values (runs)",
            need: 2,
            got: n,
        });
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = student_t_upper_quantile((1.0 - confidence) / 2.0, (n - 1) as f64)
        * (var / n as f64).sqrt();
    Ok(Interval {
        point: mean,
        lower: mean - half,
        upper: mean + half,
    })
}

/// Normalised area under a learning curve: the trapezoid integral of `values` over `frames`
/// divided by the frame span `frames[last] − frames[0]`, so the result is in score units (the
/// curve's average height; `numpy.trapezoid(values, frames) / (frames[-1] − frames[0])`).
///
/// `frames` must be non-decreasing with a positive span, and as long as `values`.
pub fn auc(frames: &[f64], values: &[f64]) -> Result<f64> {
    if frames.len() != values.len() {
        return Err(StatsError::Shape {
            what: "auc: frames and values",
            expected: format!("{} values, one per frame", frames.len()),
            got: format!("{}", values.len()),
        });
    }
    check_finite("auc: frames", frames)?;
    check_finite("auc: values", values)?;
    if frames.len() < 2 {
        return Err(StatsError::TooFew {
            what: "auc: points of the curve",
            need: 2,
            got: frames.len(),
        });
    }
    if let Some(i) = frames.windows(2).position(|w| w[1] < w[0]) {
        return Err(StatsError::Parameter {
            name: "auc: frames",
            value: format!("{} then {} at {}", frames[i], frames[i + 1], i + 1),
            accepted: "frames in non-decreasing order",
        });
    }
    let span = frames[frames.len() - 1] - frames[0];
    if span <= 0.0 {
        return Err(StatsError::Parameter {
            name: "auc: frame span",
            value: span.to_string(),
            accepted: "a curve over more than one distinct frame count",
        });
    }
    let area: f64 = frames
        .windows(2)
        .zip(values.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
        .sum();
    Ok(area / span)
}

/// Human-normalised score `(score − random) / (human − random)`: 0 is a random agent, 1 a human
/// (Mnih et al. 2015; the reference scores are per game).
pub fn human_normalized(score: f64, random: f64, human: f64) -> Result<f64> {
    check_finite(
        "human-normalised score: score, random, human",
        &[score, random, human],
    )?;
    if human == random {
        return Err(StatsError::Parameter {
            name: "human score",
            value: human.to_string(),
            accepted: "a human reference score different from the random one",
        });
    }
    Ok((score - random) / (human - random))
}

/// The `t > 0` with `P(T > t) = tail` for Student's t with `dof > 0` degrees of freedom,
/// `0 < tail < 0.5`: bisection on `P(T > t) = ½ I_{ν/(ν+t²)}(ν/2, ½)`, exact to a few ulps.
fn student_t_upper_quantile(tail: f64, dof: f64) -> f64 {
    let upper_tail =
        |t: f64| 0.5 * regularized_incomplete_beta(dof / (dof + t * t), dof / 2.0, 0.5);
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while upper_tail(hi) > tail && hi < 1e300 {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..2000 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if upper_tail(mid) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// `I_x(a, b)`, the regularised incomplete beta function, by its continued fraction (modified
/// Lentz; Numerical Recipes, 3rd ed., §6.4), for `a, b > 0` and `0 ≤ x ≤ 1`.
fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        // The last factor of this pair is the one that converges to 1.
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for `x > 0`: Lanczos approximation (g = 7, 9 terms), relative error below 1e-15.
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let series = COEF[1..]
        .iter()
        .enumerate()
        .fold(COEF[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_tables() {
        // scipy.stats.t.ppf(0.975, [1, 2, 10, 100]) and t.ppf(0.995, 4)
        for (dof, tail, want) in [
            (1.0, 0.025, 12.706_204_736_174_694),
            (2.0, 0.025, 4.302_652_729_749_462),
            (10.0, 0.025, 2.228_138_851_986_274),
            (100.0, 0.025, 1.983_971_518_523_551_8),
            (4.0, 0.005, 4.604_094_871_349_992),
        ] {
            let got = student_t_upper_quantile(tail, dof);
            assert!((got - want).abs() < 1e-10, "dof {dof}: {got} vs {want}");
        }
    }

    #[test]
    fn ln_gamma_of_known_values() {
        assert!(ln_gamma(1.0).abs() < 1e-15);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-14);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn t_interval_needs_two_values_and_collapses_when_all_equal() {
        assert!(matches!(
            t_interval(&[1.0], 0.95),
            Err(StatsError::TooFew {
                need: 2,
                got: 1,
                ..
            })
        ));
        let ci = t_interval(&[3.0, 3.0, 3.0], 0.95).unwrap();
        assert_eq!((ci.lower, ci.point, ci.upper), (3.0, 3.0, 3.0));
    }

    #[test]
    fn auc_refuses_bad_curves() {
        assert!(matches!(
            auc(&[0.0, 1.0], &[1.0]),
            Err(StatsError::Shape { .. })
        ));
        assert!(matches!(
            auc(&[0.0], &[1.0]),
            Err(StatsError::TooFew { .. })
        ));
        assert!(matches!(
            auc(&[0.0, 2.0, 1.0], &[1.0; 3]),
            Err(StatsError::Parameter { .. })
        ));
        assert!(matches!(
            auc(&[5.0, 5.0], &[1.0; 2]),
            Err(StatsError::Parameter { .. })
        ));
        assert_eq!(
            auc(&[0.0, 1.0, 1.0, 2.0], &[0.0, 1.0, 3.0, 3.0]).unwrap(),
            1.75
        );
    }

    #[test]
    fn human_normalized_refuses_equal_references() {
        assert!(human_normalized(1.0, 2.0, 2.0).is_err());
        assert!(human_normalized(f64::NAN, 0.0, 1.0).is_err());
    }
}
