//! Small CPU kernels shared by the fused recurrent ops ([`crate::lstm_seq`], [`crate::brims_seq`]).

use std::ops::{Deref, Range};

use candle_core::{bail, CpuStorage, Layout, Result, Storage, WithDType};

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

/// The values of CPU tensors a fused step reads in place, from their storage guards
/// (`Tensor::storage_and_layout`, held by the caller while it uses the slices); `op` names the
/// step in the error for a tensor off the CPU or not contiguous.
pub(crate) fn cpu_slices<'a, T: WithDType, G: Deref<Target = Storage>>(
    guards: &'a [(G, &Layout)],
    op: &str,
) -> Result<Vec<&'a [T]>> {
    guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(cpu) => contiguous_slice::<T>(cpu, layout),
            _ => bail!("{op}: the fused step runs on the CPU only"),
        })
        .collect()
}

/// `acc[b, cols] += Σ_k a[b, k] · w[k, cols]` for `a [B, K]`, `w [K, N]` row-major.
///
/// Through the `gemm` crate's register-blocked kernels (what candle's matmul uses), on the
/// calling thread: the BRIMs op parallelises over envs itself.
pub(crate) fn gemm_acc<T: Real>(acc: &mut [T], a: &[T], w: &[T], batch: usize, k: usize, n: usize) {
    // Element (k, col) of `w` at `k·n + col`.
    gemm_acc_strided(acc, a, w, (batch, k, n), (n, 1), gemm::Parallelism::None);
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
    // Element (k, col) of `wᵀ` at `col·k + k`.
    gemm_acc_strided(acc, a, w, (batch, k, n), (1, k), parallelism);
}

/// `acc [B, N] += a [B, K] · W`, both dense row-major, where `W`'s element `(i, j)` is
/// `w[i · w_row_stride + j · w_col_stride]`: `(n, 1)` for a row-major `[K, N]`, `(1, k)` for
/// the transpose of a row-major `[N, K]`.
fn gemm_acc_strided<T: Real>(
    acc: &mut [T],
    a: &[T],
    w: &[T],
    (batch, k, n): (usize, usize, usize),
    (w_row_stride, w_col_stride): (usize, usize),
    parallelism: gemm::Parallelism,
) {
    if batch == 0 || n == 0 || k == 0 {
        return;
    }
    let w_last = (k - 1) * w_row_stride + (n - 1) * w_col_stride;
    assert!(
        acc.len() >= batch * n && a.len() >= batch * k && w.len() > w_last,
        "gemm_acc: slices smaller than [{batch}, {k}] x [{k}, {n}] (strides \
         {w_row_stride}, {w_col_stride})"
    );
    // SAFETY: the assert above bounds every index gemm reads or writes (`acc` and `a` are
    // dense row-major, `w`'s largest index is `w_last`); `acc` is a unique borrow, so it
    // aliases neither input.
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
            w_col_stride as isize,
            w_row_stride as isize,
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
