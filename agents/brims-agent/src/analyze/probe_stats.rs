//! Linear probes for `brims probe`: ridge regression on standardised features, scored by R²
//! (real targets) or AUC (0/1 targets), with episode-wise cross-validation (no episode is in a
//! fold's training and test rows at once, so a probe cannot memorise an episode).

use candle_core::{Device, Tensor};

/// Ridge penalty on standardised features (each column zero mean, unit variance over the
/// training rows). Fixed rather than tuned per fold: the probes compare representations, and one
/// penalty for all keeps the comparison fair.
pub(crate) const RIDGE_LAMBDA: f64 = 10.0;

/// How a target is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Score {
    /// Coefficient of determination on the held-out rows.
    R2,
    /// Area under the ROC curve of the probe's output for a 0/1 target.
    Auc,
}

/// Mean and standard deviation of a probe's held-out score over the folds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub(crate) struct CvScore {
    pub mean: f64,
    pub std: f64,
    pub folds: usize,
}

/// Ridge weights (with intercept) for `x` (`rows × d`, row-major) and `y`: standardises the
/// columns, solves `(XᵀX + λI) w = Xᵀy` by Cholesky. Returns a predictor for new rows.
pub(crate) struct Ridge {
    mean: Vec<f64>,
    scale: Vec<f64>,
    weights: Vec<f64>,
    intercept: f64,
}

impl Ridge {
    pub(crate) fn fit(x: &[f32], d: usize, y: &[f64], lambda: f64) -> anyhow::Result<Ridge> {
        let n = y.len();
        anyhow::ensure!(
            n > 0 && x.len() == n * d,
            "ridge: {n} targets for {} values",
            x.len()
        );
        let mut mean = vec![0.0; d];
        for row in x.chunks(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0.0; d];
        for row in x.chunks(d) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        // A constant column (a module that never moves) gets scale 1: it is all zeros after
        // centring and the penalty keeps its weight at 0.
        let scale: Vec<f64> = var
            .iter()
            .map(|v| {
                let sd = (v / n as f64).sqrt();
                if sd > 1e-8 {
                    sd
                } else {
                    1.0
                }
            })
            .collect();
        let z = standardise(x, d, &mean, &scale);
        let y_mean = y.iter().sum::<f64>() / n as f64;
        let yc: Vec<f64> = y.iter().map(|v| v - y_mean).collect();
        let zt = Tensor::from_vec(z, (n, d), &Device::Cpu)?;
        let gram: Vec<f64> = zt.t()?.matmul(&zt)?.flatten_all()?.to_vec1()?;
        let yt = Tensor::from_vec(yc, (n, 1), &Device::Cpu)?;
        let rhs: Vec<f64> = zt.t()?.matmul(&yt)?.flatten_all()?.to_vec1()?;
        let mut a = gram;
        for i in 0..d {
            a[i * d + i] += lambda;
        }
        let weights = cholesky_solve(&mut a, d, rhs)?;
        Ok(Ridge {
            mean,
            scale,
            weights,
            intercept: y_mean,
        })
    }

    pub(crate) fn predict(&self, x: &[f32], d: usize) -> Vec<f64> {
        x.chunks(d)
            .map(|row| {
                self.intercept
                    + row
                        .iter()
                        .zip(&self.mean)
                        .zip(&self.scale)
                        .zip(&self.weights)
                        .map(|(((&v, m), s), w)| (f64::from(v) - m) / s * w)
                        .sum::<f64>()
            })
            .collect()
    }
}

fn standardise(x: &[f32], d: usize, mean: &[f64], scale: &[f64]) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            row.iter()
                .zip(mean)
                .zip(scale)
                .map(|((&v, m), s)| (f64::from(v) - m) / s)
        })
        .collect()
}

/// Solves `A w = b` for a symmetric positive-definite `A` (`d × d`, row-major, overwritten by
/// its Cholesky factor).
fn cholesky_solve(a: &mut [f64], d: usize, mut b: Vec<f64>) -> anyhow::Result<Vec<f64>> {
    for j in 0..d {
        let mut diag = a[j * d + j];
        for k in 0..j {
            diag -= a[j * d + k] * a[j * d + k];
        }
        anyhow::ensure!(diag > 0.0, "ridge: the system is not positive definite");
        let diag = diag.sqrt();
        a[j * d + j] = diag;
        for i in j + 1..d {
            let mut v = a[i * d + j];
            for k in 0..j {
                v -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = v / diag;
        }
    }
    // L y = b, then Lᵀ w = y.
    for i in 0..d {
        for k in 0..i {
            b[i] -= a[i * d + k] * b[k];
        }
        b[i] /= a[i * d + i];
    }
    for i in (0..d).rev() {
        for k in i + 1..d {
            b[i] -= a[k * d + i] * b[k];
        }
        b[i] /= a[i * d + i];
    }
    Ok(b)
}

/// R² of `pred` against `y` (1 = perfect, 0 = the mean's error, negative = worse).
pub(crate) fn r2(y: &[f64], pred: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
    let ss_tot: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let ss_res: f64 = y.iter().zip(pred).map(|(v, p)| (v - p).powi(2)).sum();
    if ss_tot <= 0.0 {
        f64::NAN
    } else {
        1.0 - ss_res / ss_tot
    }
}

/// AUC of `score` for the 0/1 labels `y` (the Mann–Whitney U statistic over the positives and
/// negatives, ties counted half); NaN without both classes.
pub(crate) fn auc(y: &[f64], score: &[f64]) -> f64 {
    let mut order: Vec<usize> = (0..y.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    // Mid-ranks for ties.
    let mut ranks = vec![0.0; y.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score[order[j + 1]] == score[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = mid;
        }
        i = j + 1;
    }
    let positives = y.iter().filter(|&&v| v > 0.5).count();
    let negatives = y.len() - positives;
    if positives == 0 || negatives == 0 {
        return f64::NAN;
    }
    let rank_sum: f64 = (0..y.len()).filter(|&k| y[k] > 0.5).map(|k| ranks[k]).sum();
    let p = positives as f64;
    (rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64)
}

/// Episode-wise `folds`-fold cross-validation of a ridge probe: `episodes[e]` is that
/// episode's `(x rows, y)`; episode `e` is in test fold `e % folds`. Folds whose test rows
/// cannot be scored (one class only, constant target) are left out.
pub(crate) fn cross_validate(
    episodes: &[(Vec<f32>, Vec<f64>)],
    d: usize,
    folds: usize,
    score: Score,
) -> anyhow::Result<CvScore> {
    let mut scores = Vec::with_capacity(folds);
    for fold in 0..folds {
        let (mut xtr, mut ytr, mut xte, mut yte) = (vec![], vec![], vec![], vec![]);
        for (e, (x, y)) in episodes.iter().enumerate() {
            let (xs, ys) = if e % folds == fold {
                (&mut xte, &mut yte)
            } else {
                (&mut xtr, &mut ytr)
            };
            xs.extend_from_slice(x);
            ys.extend_from_slice(y);
        }
        if ytr.is_empty() || yte.is_empty() {
            continue;
        }
        let probe = Ridge::fit(&xtr, d, &ytr, RIDGE_LAMBDA)?;
        let pred = probe.predict(&xte, d);
        let s = match score {
            Score::R2 => r2(&yte, &pred),
            Score::Auc => auc(&yte, &pred),
        };
        if s.is_finite() {
            scores.push(s);
        }
    }
    let n = scores.len();
    let mean = scores.iter().sum::<f64>() / n.max(1) as f64;
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
    Ok(CvScore {
        mean: if n == 0 { f64::NAN } else { mean },
        std: if n < 2 { f64::NAN } else { var.sqrt() },
        folds: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_rankings() {
        assert_eq!(auc(&[0.0, 0.0, 1.0, 1.0], &[0.1, 0.2, 0.3, 0.4]), 1.0);
        assert_eq!(auc(&[1.0, 1.0, 0.0, 0.0], &[0.1, 0.2, 0.3, 0.4]), 0.0);
        assert_eq!(auc(&[0.0, 1.0, 0.0, 1.0], &[0.5; 4]), 0.5);
        assert!(auc(&[1.0, 1.0], &[0.1, 0.2]).is_nan());
    }

    /// A target that is a linear function of two of five columns is recovered on held-out
    /// episodes (R² near 1); a target independent of the columns is not (R² near or under 0).
    #[test]
    fn ridge_recovers_a_linear_target_on_held_out_episodes() {
        let mut state = 12345u64;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let d = 5;
        // Per episode: the rows, a linear target, a noise target.
        type Episode = (Vec<f32>, Vec<f64>, Vec<f64>);
        let episodes: Vec<Episode> = (0..10)
            .map(|_| {
                let x: Vec<f32> = (0..200 * d).map(|_| uniform() as f32).collect();
                let linear = x
                    .chunks(d)
                    .map(|r| 3.0 * f64::from(r[1]) - 2.0 * f64::from(r[4]) + 0.7)
                    .collect();
                let noise = (0..200).map(|_| uniform()).collect();
                (x, linear, noise)
            })
            .collect();
        let fit = |pick: fn(&Episode) -> Vec<f64>| {
            let data: Vec<(Vec<f32>, Vec<f64>)> =
                episodes.iter().map(|e| (e.0.clone(), pick(e))).collect();
            cross_validate(&data, d, 5, Score::R2).unwrap()
        };
        let linear = fit(|e| e.1.clone());
        assert!(linear.mean > 0.99 && linear.folds == 5, "{linear:?}");
        let noise = fit(|e| e.2.clone());
        assert!(noise.mean < 0.05, "{noise:?}");
        // The same labels thresholded: the probe ranks them (AUC near 1).
        let data: Vec<(Vec<f32>, Vec<f64>)> = episodes
            .iter()
            .map(|e| {
                (
                    e.0.clone(),
                    e.1.iter().map(|&v| f64::from(u8::from(v > 0.7))).collect(),
                )
            })
            .collect();
        let a = cross_validate(&data, d, 5, Score::Auc).unwrap();
        assert!(a.mean > 0.95, "{a:?}");
    }
}
