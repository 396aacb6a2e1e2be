//! Small CPU kernels shared by the fused recurrent ops ([`crate::lstm_seq`], [`crate::brims_seq`]).

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
