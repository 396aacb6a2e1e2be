//! Small CPU kernels shared by the fused recurrent ops ([`crate::lstm_seq`], [`crate::brims_seq`]).

use std::ops::Range;

use candle_core::{bail, CpuStorage, Layout, Result, WithDType};

/// The float types the fused op runs on.
pub(crate) trait Real: WithDType + std::ops::Neg<Output = Self> {
    fn exp(self) -> Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

pub(crate) fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

/// `tanh(x) = 2σ(2x) − 1`: libm's `tanh` (via `expm1`) took a fifth of the op's time; this
/// costs one `exp`, saturates correctly at ±∞, and matches the step loop's `fast_tanh`.
pub(crate) fn tanh<T: Real>(x: T) -> T {
    let two = T::one() + T::one();
    two * sigmoid(two * x) - T::one()
}

pub(crate) fn contiguous_slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&T::cpu_storage_as_slice(s)?[start..end]),
        None => bail!("fused op: expects contiguous inputs"),
    }
}

/// `acc[b, cols] += Σ_k a[b, k] · w[k, cols]` for `a [B, K]`, `w [K, N]` row-major.
///
/// Through the `gemm` crate's register-blocked kernels (what candle's matmul uses), on the
/// calling thread: the BRIMs op parallelises over envs itself.
pub(crate) fn gemm_acc<T: Real>(acc: &mut [T], a: &[T], w: &[T], batch: usize, k: usize, n: usize) {
    if batch == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        acc.len() >= batch * n && a.len() >= batch * k && w.len() >= k * n,
        "gemm_acc: slices smaller than [{batch}, {k}] x [{k}, {n}]"
    );
    // SAFETY: the assert above bounds every index gemm reads or writes (all three operands
    // are dense row-major); `acc` is a unique borrow, so it aliases neither input.
    unsafe {
        gemm::gemm(
            batch,
            n,
            k,
            acc.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            1,
            n as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `acc[b, cols] += Σ_k a[b, k] · w[cols, k]` for `a [B, K]` and `w [N, K]` row-major: the
/// product with `wᵀ`, read in place (a PyTorch `[out, in]` weight needs no transposed copy).
/// With `parallel`, gemm splits the work over the rayon threads, as candle's matmul does.
pub(crate) fn gemm_acc_nt<T: Real>(
    acc: &mut [T],
    a: &[T],
    w: &[T],
    (batch, k, n): (usize, usize, usize),
    parallel: bool,
) {
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    if batch == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        acc.len() >= batch * n && a.len() >= batch * k && w.len() >= k * n,
        "gemm_acc_nt: slices smaller than [{batch}, {k}] x [{n}, {k}]ᵀ"
    );
    // SAFETY: as in `gemm_acc`; `w` is read as the `[K, N]` matrix with row stride 1 and
    // column stride `k`, every index of which the assert bounds.
    unsafe {
        gemm::gemm(
            batch,
            n,
            k,
            acc.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Contiguous row ranges splitting `batch` rows over the rayon threads.
pub(crate) fn row_parts(batch: usize) -> Vec<Range<usize>> {
    let parts = rayon::current_num_threads().clamp(1, batch.max(1));
    (0..parts)
        .map(|p| p * batch / parts..(p + 1) * batch / parts)
        .filter(|r| !r.is_empty())
        .collect()
}

/// Rows `rows` of a `[T, B, x]` buffer, as `[T, rows, x]`.
pub(crate) fn gather_rows<T: Copy>(
    src: &[T],
    steps: usize,
    batch: usize,
    x: usize,
    rows: &Range<usize>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(steps * rows.len() * x);
    for t in 0..steps {
        out.extend_from_slice(&src[(t * batch + rows.start) * x..(t * batch + rows.end) * x]);
    }
    out
}

/// Writes `[T, rows, x]` `part` into rows `rows` of the `[T, B, x]` `dst`.
pub(crate) fn scatter_rows<T: Copy>(
    dst: &mut [T],
    part: &[T],
    batch: usize,
    x: usize,
    rows: &Range<usize>,
) {
    let n = rows.len() * x;
    for (t, chunk) in part.chunks(n).enumerate() {
        dst[(t * batch + rows.start) * x..(t * batch + rows.end) * x].copy_from_slice(chunk);
    }
}
