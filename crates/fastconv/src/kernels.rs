//! CPU kernels: im2col, col2im and the three gemm-based passes (forward, weight gradient,
//! input gradient) over contiguous NCHW buffers, split over threads by samples.
//!
//! Each thread walks its samples in chunks; a chunk's patches form one `col` matrix
//! `[K, S·N]` (K = Cin·Kh·Kw, N = Ho·Wo, S samples side by side), small enough to stay in
//! cache, so every pass is one gemm per chunk plus a cheap reshuffle between `[Cout, S·N]`
//! and the NCHW rows `[S, Cout, N]`.

use crate::error::{Error, Result};
use std::ops::Range;

/// Elements the kernels run on (f32 and f64; gemm dispatches on the type).
pub(crate) trait Element: candle_core::WithDType {}
impl Element for f32 {}
impl Element for f64 {}

/// Elements of one chunk's `col` matrix the chunk size aims at (about 1 MiB of f32).
const COL_BUDGET: usize = 1 << 18;

/// Sizes of one unpadded, undilated convolution; built only through [`Geometry::new`],
/// which proves every size below is consistent and non-zero where it must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Geometry {
    /// Checks an input `[B, Cin, H, W]`, a weight `[Cout, Cin, Kh, Kw]` and the stride.
    pub fn new(input: &[usize], weight: &[usize], stride: usize) -> Result<Self> {
        let &[batch, c_in, h, w] = input else {
            return Err(Error::Rank {
                what: "input",
                expected: 4,
                shape: input.to_vec(),
            });
        };
        let &[c_out, wc_in, kh, kw] = weight else {
            return Err(Error::Rank {
                what: "weight",
                expected: 4,
                shape: weight.to_vec(),
            });
        };
        if stride == 0 {
            return Err(Error::Zero { what: "stride" });
        }
        if kh == 0 || kw == 0 {
            return Err(Error::Zero { what: "kernel" });
        }
        if c_in == 0 {
            return Err(Error::Zero {
                what: "input channels",
            });
        }
        if c_out == 0 {
            return Err(Error::Zero {
                what: "output channels",
            });
        }
        if c_in != wc_in {
            return Err(Error::ChannelMismatch {
                input: c_in,
                weight: wc_in,
            });
        }
        if kh > h || kw > w {
            return Err(Error::KernelLargerThanInput {
                kernel: (kh, kw),
                input: (h, w),
            });
        }
        Ok(Self {
            batch,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride,
            ho: (h - kh) / stride + 1,
            wo: (w - kw) / stride + 1,
        })
    }

    /// K: the length of one patch, Cin·Kh·Kw.
    pub fn patch_len(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// N: output pixels per sample and channel, Ho·Wo.
    pub fn out_pixels(&self) -> usize {
        self.ho * self.wo
    }

    pub fn in_sample_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    pub fn out_sample_len(&self) -> usize {
        self.c_out * self.out_pixels()
    }

    pub fn weight_len(&self) -> usize {
        self.c_out * self.patch_len()
    }

    /// S: samples per chunk.
    fn chunk_samples(&self) -> usize {
        (COL_BUDGET / (self.patch_len() * self.out_pixels())).max(1)
    }
}

/// Splits `0..batch` into one contiguous range per worker thread.
fn sample_ranges(batch: usize) -> Vec<Range<usize>> {
    let threads = candle_core::utils::get_num_threads().clamp(1, batch.max(1));
    let per = batch.div_ceil(threads).max(1);
    (0..batch)
        .step_by(per)
        .map(|start| start..(start + per).min(batch))
        .collect()
}

/// Runs `work(samples, out_rows)` on every range of [`sample_ranges`], one thread each,
/// handing each the rows `[samples, per_sample]` of `out`.
fn for_sample_ranges<T, R, F>(batch: usize, out: &mut [T], per_sample: usize, work: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(Range<usize>, &mut [T]) -> R + Sync,
{
    let ranges = sample_ranges(batch);
    if ranges.len() <= 1 {
        return ranges.into_iter().map(|r| work(r, out)).collect();
    }
    std::thread::scope(|scope| {
        let mut rest = out;
        let mut handles = Vec::with_capacity(ranges.len());
        for range in ranges {
            let (rows, tail) = std::mem::take(&mut rest).split_at_mut(range.len() * per_sample);
            rest = tail;
            let work = &work;
            handles.push(scope.spawn(move || work(range, rows)));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, single-threaded, with element strides
/// (`*_rs` between rows, `*_cs` between columns); `dst` is row-major with row stride `dst_rs`.
#[allow(clippy::too_many_arguments)]
fn matmul<T: Element>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // These bounds make every access gemm does below land inside the slices.
    assert!((m - 1) * dst_rs + n <= dst.len(), "matmul: dst too small");
    assert!(
        (m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len(),
        "matmul: lhs too small"
    );
    assert!(
        (k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len(),
        "matmul: rhs too small"
    );
    // SAFETY: the asserts above bound every index gemm touches; the slices do not alias.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Fills `col` `[K, S·N]` with the patches of the `S` samples in `input` `[S, Cin, H, W]`.
fn im2col<T: Element>(g: &Geometry, input: &[T], samples: usize, col: &mut [T]) {
    // A constant stride lets the compiler turn the row gathers into straight-line code.
    match g.stride {
        1 => im2col_strided::<T, 1>(g, input, samples, col),
        2 => im2col_strided::<T, 2>(g, input, samples, col),
        3 => im2col_strided::<T, 3>(g, input, samples, col),
        4 => im2col_strided::<T, 4>(g, input, samples, col),
        _ => im2col_strided::<T, 0>(g, input, samples, col),
    }
}

/// [`im2col`] for stride `ST` (0: read the stride from `g`).
fn im2col_strided<T: Element, const ST: usize>(
    g: &Geometry,
    input: &[T],
    samples: usize,
    col: &mut [T],
) {
    let stride = if ST == 0 { g.stride } else { ST };
    let (n, ld, plane_len) = (g.out_pixels(), samples * g.out_pixels(), g.h * g.w);
    // The last element one output row reads lies (wo - 1) * stride after its first.
    let span = (g.wo - 1) * stride + 1;
    let mut rows = col.chunks_exact_mut(ld);
    for c in 0..g.c_in {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let Some(row) = rows.next() else { return };
                for s in 0..samples {
                    let plane = &input[(s * g.c_in + c) * plane_len..][..plane_len];
                    let dst = &mut row[s * n..][..n];
                    for (oy, dst) in dst.chunks_exact_mut(g.wo).enumerate() {
                        let src = &plane[(oy * stride + ky) * g.w + kx..][..span];
                        if stride == 1 {
                            dst.copy_from_slice(src);
                            continue;
                        }
                        // Every pixel but the last starts a whole chunk of `stride` inputs
                        // (so no bounds checks); the last one is read on its own.
                        let Some((last, body)) = dst.split_last_mut() else {
                            continue;
                        };
                        for (d, chunk) in body.iter_mut().zip(src.chunks_exact(stride)) {
                            *d = chunk[0];
                        }
                        *last = src[span - 1];
                    }
                }
            }
        }
    }
}

/// Adds the patches in `col` `[K, S·N]` back onto `grad_in` `[S, Cin, H, W]` (im2col's adjoint).
fn col2im_add<T: Element>(g: &Geometry, col: &[T], samples: usize, grad_in: &mut [T]) {
    let (n, ld) = (g.out_pixels(), samples * g.out_pixels());
    let mut rows = col.chunks_exact(ld);
    for c in 0..g.c_in {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let Some(row) = rows.next() else { return };
                for s in 0..samples {
                    let plane = &mut grad_in[(s * g.c_in + c) * g.h * g.w..][..g.h * g.w];
                    let src = &row[s * n..][..n];
                    for (oy, src) in src.chunks_exact(g.wo).enumerate() {
                        let dst = &mut plane[(oy * g.stride + ky) * g.w + kx..];
                        for (d, s) in dst.iter_mut().step_by(g.stride).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

/// `[S, Cout, N]` rows of `nchw` into `mat` `[Cout, S·N]`.
fn nchw_to_mat<T: Element>(g: &Geometry, nchw: &[T], samples: usize, mat: &mut [T]) {
    let (n, ld) = (g.out_pixels(), samples * g.out_pixels());
    for s in 0..samples {
        for co in 0..g.c_out {
            mat[co * ld + s * n..][..n].copy_from_slice(&nchw[(s * g.c_out + co) * n..][..n]);
        }
    }
}

/// `mat` `[Cout, S·N]` (plus `bias` `[Cout]`, then ReLU if `relu`) into `[S, Cout, N]` rows
/// of `nchw`.
fn mat_to_nchw<T: Element>(
    g: &Geometry,
    mat: &[T],
    (bias, relu): (Option<&[T]>, bool),
    samples: usize,
    nchw: &mut [T],
) {
    let (n, ld) = (g.out_pixels(), samples * g.out_pixels());
    for s in 0..samples {
        for co in 0..g.c_out {
            let dst = &mut nchw[(s * g.c_out + co) * n..][..n];
            let src = &mat[co * ld + s * n..][..n];
            let b = bias.map_or(T::zero(), |bias| bias[co]);
            if relu {
                for (d, x) in dst.iter_mut().zip(src) {
                    let y = *x + b;
                    *d = if y > T::zero() { y } else { T::zero() };
                }
            } else {
                for (d, x) in dst.iter_mut().zip(src) {
                    *d = *x + b;
                }
            }
        }
    }
}

/// Forward: `input` `[B, Cin, H, W]`, `weight` `[Cout, K]`, `bias` `[Cout]` ->
/// `[B, Cout, Ho, Wo]`, through a ReLU if `relu`.
pub(crate) fn forward<T: Element>(
    g: &Geometry,
    input: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    relu: bool,
) -> Vec<T> {
    let (k, n) = (g.patch_len(), g.out_pixels());
    let mut out = vec![T::zero(); g.batch * g.out_sample_len()];
    for_sample_ranges(g.batch, &mut out, g.out_sample_len(), |samples, out| {
        let chunk = g.chunk_samples().min(samples.len());
        let mut col = vec![T::zero(); k * chunk * n];
        let mut mat = vec![T::zero(); g.c_out * chunk * n];
        for (first, out) in samples
            .clone()
            .step_by(chunk)
            .zip(out.chunks_mut(chunk * g.out_sample_len()))
        {
            let s = chunk.min(samples.end - first);
            let ld = s * n;
            let input = &input[first * g.in_sample_len()..][..s * g.in_sample_len()];
            im2col(g, input, s, &mut col[..k * ld]);
            matmul(
                (g.c_out, ld, k),
                &mut mat,
                ld,
                false,
                weight,
                (k, 1),
                &col,
                (ld, 1),
            );
            mat_to_nchw(g, &mat, (bias, relu), s, out);
        }
    });
    out
}

/// Weight gradient: `input` `[B, Cin, H, W]`, `grad_out` `[B, Cout, Ho, Wo]` -> `[Cout, K]`.
pub(crate) fn weight_grad<T: Element>(g: &Geometry, input: &[T], grad_out: &[T]) -> Vec<T> {
    let (k, n) = (g.patch_len(), g.out_pixels());
    let partials = for_sample_ranges(g.batch, &mut [] as &mut [T], 0, |samples, _| {
        let chunk = g.chunk_samples().min(samples.len());
        let mut col = vec![T::zero(); k * chunk * n];
        let mut mat = vec![T::zero(); g.c_out * chunk * n];
        let mut grad_w = vec![T::zero(); g.weight_len()];
        for first in samples.clone().step_by(chunk) {
            let s = chunk.min(samples.end - first);
            let ld = s * n;
            let input = &input[first * g.in_sample_len()..][..s * g.in_sample_len()];
            im2col(g, input, s, &mut col[..k * ld]);
            let grad_out = &grad_out[first * g.out_sample_len()..][..s * g.out_sample_len()];
            nchw_to_mat(g, grad_out, s, &mut mat);
            // grad_w[Cout, K] += mat[Cout, S·N] · colᵀ[S·N, K]
            matmul(
                (g.c_out, k, ld),
                &mut grad_w,
                k,
                true,
                &mat,
                (ld, 1),
                &col,
                (1, ld),
            );
        }
        grad_w
    });
    let mut parts = partials.into_iter();
    let mut total = parts
        .next()
        .unwrap_or_else(|| vec![T::zero(); g.weight_len()]);
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
    total
}

/// Input gradient: `weight` `[Cout, K]`, `grad_out` `[B, Cout, Ho, Wo]` -> `[B, Cin, H, W]`.
pub(crate) fn input_grad<T: Element>(g: &Geometry, weight: &[T], grad_out: &[T]) -> Vec<T> {
    let (k, n) = (g.patch_len(), g.out_pixels());
    let mut grad_in = vec![T::zero(); g.batch * g.in_sample_len()];
    for_sample_ranges(
        g.batch,
        &mut grad_in,
        g.in_sample_len(),
        |samples, grad_in| {
            let chunk = g.chunk_samples().min(samples.len());
            let mut col = vec![T::zero(); k * chunk * n];
            let mut mat = vec![T::zero(); g.c_out * chunk * n];
            for (first, grad_in) in samples
                .clone()
                .step_by(chunk)
                .zip(grad_in.chunks_mut(chunk * g.in_sample_len()))
            {
                let s = chunk.min(samples.end - first);
                let ld = s * n;
                let grad_out = &grad_out[first * g.out_sample_len()..][..s * g.out_sample_len()];
                nchw_to_mat(g, grad_out, s, &mut mat);
                // col[K, S·N] = weightᵀ[K, Cout] · mat[Cout, S·N]
                matmul(
                    (k, ld, g.c_out),
                    &mut col,
                    ld,
                    false,
                    weight,
                    (1, k),
                    &mat,
                    (ld, 1),
                );
                col2im_add(g, &col, s, grad_in);
            }
        },
    );
    grad_in
}

/// Bias gradient: `grad_out` `[B, Cout, Ho, Wo]` -> `[Cout]`, the sum over batch and pixels.
pub(crate) fn bias_grad<T: Element>(g: &Geometry, grad_out: &[T]) -> Vec<T> {
    let n = g.out_pixels();
    let mut grad_b = vec![T::zero(); g.c_out];
    for sample in grad_out.chunks_exact(g.out_sample_len()) {
        for (b, row) in grad_b.iter_mut().zip(sample.chunks_exact(n)) {
            // Eight independent partial sums, so the adds pipeline (and vectorise).
            let mut lanes = [T::zero(); 8];
            let mut blocks = row.chunks_exact(8);
            for block in &mut blocks {
                for (l, x) in lanes.iter_mut().zip(block) {
                    *l += *x;
                }
            }
            for (l, x) in lanes.iter_mut().zip(blocks.remainder()) {
                *l += *x;
            }
            *b += lanes.iter().fold(T::zero(), |acc, x| acc + *x);
        }
    }
    grad_b
}

/// ReLU's backward from its output: `grad` where `output > 0`, else 0 (same shapes).
pub(crate) fn relu_grad<T: Element>(grad: &[T], output: &[T]) -> Vec<T> {
    grad.iter()
        .zip(output)
        .map(|(g, y)| if *y > T::zero() { *g } else { T::zero() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_ranges_cover_the_batch_once() {
        for batch in [0, 1, 2, 3, 7, 256] {
            let ranges = sample_ranges(batch);
            let covered: Vec<usize> = ranges.into_iter().flatten().collect();
            assert_eq!(covered, (0..batch).collect::<Vec<_>>());
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> == <x, col2im(y)> for arbitrary x, y.
        let g = Geometry::new(&[2, 3, 9, 8], &[4, 3, 3, 2], 2).unwrap();
        let x: Vec<f64> = (0..2 * g.in_sample_len())
            .map(|i| (i as f64).sin())
            .collect();
        let len = g.patch_len() * 2 * g.out_pixels();
        let y: Vec<f64> = (0..len).map(|i| (i as f64 * 0.7).cos()).collect();
        let mut col = vec![0.0; len];
        im2col(&g, &x, 2, &mut col);
        let mut back = vec![0.0; x.len()];
        col2im_add(&g, &y, 2, &mut back);
        let lhs: f64 = col.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!(
            (lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }
}
