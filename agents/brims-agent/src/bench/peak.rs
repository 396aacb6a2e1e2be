//! The machine's arithmetic peak, measured rather than looked up: a loop of independent
//! fused multiply-adds on every thread at once (FP32 with AVX-512 where the CPU has it, else
//! AVX2 + FMA), and `VDPBF16PS` where the CPU has AVX512_BF16. Benches read their GFLOP/s
//! against it, so a figure says how close to this machine's limit it is.

use std::sync::Barrier;
use std::time::Instant;

use serde_json::{json, Value};

/// Seconds each measurement runs for (after a calibration pass of about a tenth of that).
const MEASURE_SECS: f64 = 0.3;

/// A measured peak: GFLOP/s of all `threads` together, and the instructions that gave it.
#[derive(Clone, Debug)]
pub(crate) struct Peak {
    pub threads: usize,
    /// FP32 FMA GFLOP/s (2 FLOPs per lane per FMA).
    pub fp32_gflops: f64,
    /// Which FP32 loop ran (`avx512f`, `avx2+fma` or `scalar`).
    pub fp32_isa: &'static str,
    /// bf16 dot-product GFLOP/s (`VDPBF16PS`: 2 multiply-adds per f32 lane), if the CPU has it.
    pub bf16_gflops: Option<f64>,
}

impl Peak {
    /// Measures with `threads` threads running at once.
    pub(crate) fn measure(threads: usize) -> Peak {
        let threads = threads.max(1);
        let (kernel, fp32_isa) = fp32_kernel();
        Peak {
            threads,
            fp32_gflops: gflops(threads, kernel),
            fp32_isa,
            bf16_gflops: bf16_kernel().map(|k| gflops(threads, k)),
        }
    }

    /// `achieved` GFLOP/s as a share of the FP32 peak.
    pub(crate) fn fp32_share(&self, achieved: f64) -> f64 {
        achieved / self.fp32_gflops
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "threads": self.threads,
            "fp32_gflops": self.fp32_gflops,
            "fp32_isa": self.fp32_isa,
            "bf16_gflops": self.bf16_gflops,
        })
    }

    /// One line for a bench's output.
    pub(crate) fn describe(&self) -> String {
        format!(
            "measured peak on {} threads: FP32 {:.0} GFLOP/s ({}), bf16 {}",
            self.threads,
            self.fp32_gflops,
            self.fp32_isa,
            self.bf16_gflops.map_or_else(
                || "not available (no AVX512_BF16 on this CPU)".to_string(),
                |g| format!("{g:.0} GFLOP/s")
            )
        )
    }
}

/// A loop of `iters` rounds; returns the FLOPs it did and a value that depends on them all.
type Kernel = fn(u64) -> (u64, f32);

/// GFLOP/s of `kernel` run on `threads` threads started together.
fn gflops(threads: usize, kernel: Kernel) -> f64 {
    let start = Instant::now();
    std::hint::black_box(kernel(100_000));
    let per_iter = start.elapsed().as_secs_f64().max(1e-9) / 100_000.0;
    let iters = ((MEASURE_SECS / per_iter) as u64).max(1);
    let barrier = Barrier::new(threads);
    let (flops, secs) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let t = Instant::now();
                    let (flops, value) = kernel(iters);
                    std::hint::black_box(value);
                    (flops, t.elapsed().as_secs_f64())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or((0, f64::INFINITY)))
            .fold((0u64, 0f64), |(f, s), (wf, ws)| (f + wf, s.max(ws)))
    });
    flops as f64 / secs / 1e9
}

fn fp32_kernel() -> (Kernel, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return (x86::fma_avx512, "avx512f");
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return (x86::fma_avx2, "avx2+fma");
        }
    }
    (fma_scalar, "scalar")
}

fn bf16_kernel() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512f") {
            return Some(x86::dpbf16);
        }
    }
    None
}

/// Eight independent scalar chains (what a CPU without vector FMA offers).
fn fma_scalar(iters: u64) -> (u64, f32) {
    let mut acc = [0.5f32, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2];
    for _ in 0..iters {
        for a in &mut acc {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    (iters * acc.len() as u64 * 2, acc.iter().sum())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Independent accumulator chains: enough to cover the FMA latency on both FMA pipes.
    const CHAINS: usize = 12;

    pub(super) fn fma_avx2(iters: u64) -> (u64, f32) {
        // SAFETY: chosen only when the CPU reports AVX2 and FMA (`fp32_kernel`).
        unsafe { fma_avx2_impl(iters) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma_avx2_impl(iters: u64) -> (u64, f32) {
        let mut acc = [_mm256_set1_ps(0.5); CHAINS];
        let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        let mut sum = _mm256_setzero_ps();
        for a in acc {
            sum = _mm256_add_ps(sum, a);
        }
        (iters * (CHAINS * 8 * 2) as u64, _mm256_cvtss_f32(sum))
    }

    pub(super) fn fma_avx512(iters: u64) -> (u64, f32) {
        // SAFETY: chosen only when the CPU reports AVX-512F (`fp32_kernel`).
        unsafe { fma_avx512_impl(iters) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn fma_avx512_impl(iters: u64) -> (u64, f32) {
        let mut acc = [_mm512_set1_ps(0.5); CHAINS];
        let (b, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, b, c);
            }
        }
        let mut sum = _mm512_setzero_ps();
        for a in acc {
            sum = _mm512_add_ps(sum, a);
        }
        (iters * (CHAINS * 16 * 2) as u64, _mm512_reduce_add_ps(sum))
    }

    pub(super) fn dpbf16(iters: u64) -> (u64, f32) {
        // SAFETY: chosen only when the CPU reports AVX512_BF16 and AVX-512F (`bf16_kernel`).
        unsafe { dpbf16_impl(iters) }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn dpbf16_impl(iters: u64) -> (u64, f32) {
        let mut acc = [_mm512_set1_ps(0.5); CHAINS];
        let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.999), _mm512_set1_ps(0.998));
        let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(2e-3));
        for _ in 0..iters {
            for s in &mut acc {
                *s = _mm512_dpbf16_ps(*s, a, b);
            }
        }
        let mut sum = _mm512_setzero_ps();
        for s in acc {
            sum = _mm512_add_ps(sum, s);
        }
        // Each f32 lane adds two bf16 products: 4 FLOPs per lane per instruction.
        (iters * (CHAINS * 16 * 4) as u64, _mm512_reduce_add_ps(sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every loop counts its FLOPs and returns a finite value; the peak is positive.
    #[test]
    fn the_loops_count_their_work_and_the_peak_is_positive() {
        let (kernel, _) = fp32_kernel();
        let (flops, value) = kernel(10);
        assert!(flops >= 10 * 16 && flops % 10 == 0);
        assert!(value.is_finite());
        assert_eq!(fma_scalar(3).0, 3 * 16);
        let peak = Peak::measure(1);
        assert!(peak.fp32_gflops > 0.0 && peak.fp32_gflops.is_finite());
        assert!((peak.fp32_share(peak.fp32_gflops) - 1.0).abs() < 1e-12);
    }
}
