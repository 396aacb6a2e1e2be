//! The small dense kernels the fused BRIMs loops are built from: row-major matmuls (one module's
//! block, or grouped over modules), softmax, the slot normalisation and its gradient.

use candle_core::{Result, Tensor};

use crate::kernels::{gemm_acc, Real};

/// `out[r, :] = a[r, :] · w` for `rows` rows (`a [rows, k]`, `w [k, n]`, `out` overwritten).
pub(super) fn matmul<T: Real>(out: &mut [T], a: &[T], w: &[T], rows: usize, k: usize, n: usize) {
    out.fill(T::zero());
    gemm_acc(out, a, w, rows, k, n);
}

/// Module `j`'s block: `out [B, n] (+)= a [B, k] · weights[j]`, `weights` being `[M, k, n]`.
pub(super) fn module_matmul<T: Real>(
    out: &mut [T],
    a: &[T],
    weights: &[T],
    j: usize,
    (batch, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    let w = &weights[j * k * n..(j + 1) * k * n];
    if accumulate {
        gemm_acc(out, a, w, batch, k, n);
    } else {
        matmul(out, a, w, batch, k, n);
    }
}

/// `g` row-major `[rows, cols]` blocks transposed, block by block (`src` holds `g` blocks).
pub(super) fn transpose_blocks<T: Copy>(src: &[T], g: usize, rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(src.len());
    for blk in src.chunks(rows * cols).take(g) {
        for c in 0..cols {
            out.extend((0..rows).map(|r| blk[r * cols + c]));
        }
    }
    out
}

/// `Σ a_i · b_i`.
pub(super) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |acc, (&x, &y)| acc + x * y)
}

/// Normalises `x` in place to zero mean and unit variance (ε = `NORM_EPS`, as the
/// reference path's `slot_input`); returns `1/σ`.
pub(super) fn normalise<T: Real>(x: &mut [T]) -> T {
    let n = x.len() as f64;
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    let rstd = 1.0 / (var + crate::norm::NORM_EPS).sqrt();
    for v in x.iter_mut() {
        *v = T::from_f64((v.to_f64() - mean) * rstd);
    }
    T::from_f64(rstd)
}

/// The gradient through [`normalise`]: `dy` (in place, becomes `dx`), the output `y`, `1/σ`.
/// `dx = (dy − mean(dy) − y · mean(dy ⊙ y)) / σ`.
pub(super) fn normalise_backward<T: Real>(dy: &mut [T], y: &[T], rstd: T) {
    let n = dy.len() as f64;
    let mean_dy = dy.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let mean_dyy = dy
        .iter()
        .zip(y)
        .map(|(g, v)| g.to_f64() * v.to_f64())
        .sum::<f64>()
        / n;
    let rstd = rstd.to_f64();
    for (g, v) in dy.iter_mut().zip(y) {
        *g = T::from_f64((g.to_f64() - mean_dy - v.to_f64() * mean_dyy) * rstd);
    }
}

/// Softmax of `logits` in place, as the reference path computes it (max subtracted).
pub(super) fn softmax<T: Real>(logits: &mut [T]) {
    let max = logits
        .iter()
        .copied()
        .fold(logits[0], |m, x| if x > m { x } else { m });
    let mut sum = T::zero();
    for x in logits.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in logits.iter_mut() {
        *x /= sum;
    }
}

/// `Σ_rows a[g]ᵀ · g[g]` for `groups` pairs of `[rows, k]` and `[rows, n]` blocks → `[groups, k, n]`.
pub(super) fn grouped_at_b<T: Real>(
    a: &[T],
    g: &[T],
    groups: usize,
    rows: usize,
    k: usize,
    n: usize,
) -> Result<Vec<T>> {
    let dev = candle_core::Device::Cpu;
    let a = Tensor::from_slice(a, (groups, rows, k), &dev)?;
    let g = Tensor::from_slice(g, (groups, rows, n), &dev)?;
    a.transpose(1, 2)?.matmul(&g)?.flatten_all()?.to_vec1::<T>()
}

/// Column sums of `groups` `[rows, n]` blocks → `[groups, n]`.
pub(super) fn grouped_sum<T: Real>(g: &[T], groups: usize, rows: usize, n: usize) -> Vec<T> {
    let mut out = vec![T::zero(); groups * n];
    for (grp, blk) in g.chunks(rows * n).enumerate() {
        let dst = &mut out[grp * n..(grp + 1) * n];
        for row in blk.chunks(n) {
            for (o, &v) in dst.iter_mut().zip(row) {
                *o += v;
            }
        }
    }
    out
}
