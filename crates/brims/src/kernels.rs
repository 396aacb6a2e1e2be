//! Small CPU kernels shared by the fused recurrent ops ([`crate::lstm_seq`], [`crate::brims_seq`]).

use std::ops::Range;

use candle_core::{bail, CpuStorage, Layout, Result, WithDType};

/// The float types the fused op runs on.
pub(crate) trait Real: WithDType + std::ops::Neg<Output = Self> {
    fn exp(self) -> Self;
    fn mul_add(self, a: Self, b: Self) -> Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
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
/// Dispatches at run time to an AVX2+FMA build of the same loop where the CPU has it: the
/// default x86-64 target only vectorises 4 floats wide, and this loop is most of the op's time.
pub(crate) fn gemm_acc<T: Real>(acc: &mut [T], a: &[T], w: &[T], batch: usize, k: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the only requirement of a `target_feature` function is that the CPU has
        // those features, checked just above.
        unsafe { gemm_acc_avx2_fma(acc, a, w, batch, k, n) };
        return;
    }
    gemm_acc_loop::<T, false>(acc, a, w, batch, k, n);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_acc_avx2_fma<T: Real>(
    acc: &mut [T],
    a: &[T],
    w: &[T],
    batch: usize,
    k: usize,
    n: usize,
) {
    gemm_acc_loop::<T, true>(acc, a, w, batch, k, n);
}

/// The loop behind [`gemm_acc`]: column blocks sized so the `B` accumulator rows stay in L1
/// while `w`'s rows stream by once. `FMA` fuses multiply-add (only where the CPU has it:
/// elsewhere `mul_add` is a slow library call).
#[inline(always)]
fn gemm_acc_loop<T: Real, const FMA: bool>(
    acc: &mut [T],
    a: &[T],
    w: &[T],
    batch: usize,
    k: usize,
    n: usize,
) {
    const BLOCK: usize = 256;
    // Four rows of `w` per pass over an accumulator row: a quarter of the accumulator loads and
    // stores, which bound the one-row loop.
    const ROWS: usize = 4;
    let fma = |x: T, y: T, acc: T| if FMA { x.mul_add(y, acc) } else { acc + x * y };
    let mut start = 0;
    while start < n {
        let cols: Range<usize> = start..(start + BLOCK).min(n);
        let row = |kk: usize| &w[kk * n + cols.start..kk * n + cols.end];
        let full = k - k % ROWS;
        for kk in (0..full).step_by(ROWS) {
            let (w0, w1, w2, w3) = (row(kk), row(kk + 1), row(kk + 2), row(kk + 3));
            for b in 0..batch {
                let a_b = &a[b * k + kk..b * k + kk + ROWS];
                let (a0, a1, a2, a3) = (a_b[0], a_b[1], a_b[2], a_b[3]);
                let dst = &mut acc[b * n + cols.start..b * n + cols.end];
                for ((((d, &x0), &x1), &x2), &x3) in dst.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3)
                {
                    *d = fma(a3, x3, fma(a2, x2, fma(a1, x1, fma(a0, x0, *d))));
                }
            }
        }
        for kk in full..k {
            let w_row = row(kk);
            for b in 0..batch {
                let a_bk = a[b * k + kk];
                let dst = &mut acc[b * n + cols.start..b * n + cols.end];
                for (d, &x) in dst.iter_mut().zip(w_row) {
                    *d = fma(a_bk, x, *d);
                }
            }
        }
        start = cols.end;
    }
}
