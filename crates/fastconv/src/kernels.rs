//! CPU kernels: the forward and the fused backward (input, weight and bias gradients) of an
//! unpadded convolution over contiguous NCHW buffers, as gemm on im2col patches, split over
//! threads by samples.
//!
//! Blocking. The batch is cut into chunks of S samples whose patch matrix `col` `[K, S·N]`
//! (K = Cin·Kh·Kw, N = Ho·Wo, the S samples side by side) is about 1 MiB of f32, so it stays
//! in a core's L2 between being written and being read by gemm; workers (candle's thread
//! count, on rayon's pool) take chunks from a shared queue. Per chunk, with one worker's
//! reused scratch (no allocation, no zeroing):
//!
//! 1. the input is split once into its phase planes ([`to_phases`]: space to depth by the
//!    stride, u8 pixels converted and scaled here, once per pixel);
//! 2. [`im2col`] fills `col` with contiguous copies of `Wo` elements, one per output row and
//!    patch row: after step 1 every stride reads like stride 1;
//! 3. forward: `mat[Cout, S·N] = weight[Cout, K] · col`, then bias and ReLU on the way into
//!    the NCHW rows `[S, Cout, N]`;
//!    backward: the gradient (masked by the ReLU) is copied once into `mat`, and serves all
//!    three gradients: bias = row sums, `d weight += mat · colᵀ` (a per-worker sum, added up at
//!    the end), `col = weightᵀ · mat` added back through the phase planes to the input.
//!
//! The gemms are the `gemm` crate's (AVX-512 or AVX2+FMA kernels chosen at run time), one
//! thread each.

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};
use std::thread::LocalKey;

/// Elements the kernels run on (f32 and f64; gemm dispatches on the type).
pub(crate) trait Element: candle_core::WithDType {
    /// Runs `f` on this thread's [`Scratch`] for this type (a fresh one if it is in use).
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R;
}

thread_local! {
    static SCRATCH_F32: RefCell<Scratch<f32>> = const { RefCell::new(Scratch::new()) };
    static SCRATCH_F64: RefCell<Scratch<f64>> = const { RefCell::new(Scratch::new()) };
}

/// `f` on the scratch in `key`, or on a fresh one if `key`'s is borrowed already.
fn with_local<T: Element, R>(
    key: &'static LocalKey<RefCell<Scratch<T>>>,
    f: impl FnOnce(&mut Scratch<T>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::new()),
    })
}

impl Element for f32 {
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R {
        with_local(&SCRATCH_F32, f)
    }
}

impl Element for f64 {
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R {
        with_local(&SCRATCH_F64, f)
    }
}

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

    /// Hp: rows of one phase plane, ⌈H / stride⌉ (see [`to_phases`]).
    pub fn phase_h(&self) -> usize {
        self.h.div_ceil(self.stride)
    }

    /// Wp: columns of one phase plane, ⌈W / stride⌉.
    pub fn phase_w(&self) -> usize {
        self.w.div_ceil(self.stride)
    }

    /// Hp·Wp.
    pub fn phase_plane_len(&self) -> usize {
        self.phase_h() * self.phase_w()
    }

    /// One sample's phase planes `[Cin, s, s, Hp, Wp]`.
    pub fn phase_len(&self) -> usize {
        self.c_in * self.stride * self.stride * self.phase_plane_len()
    }

    /// S: samples per chunk.
    fn chunk_samples(&self) -> usize {
        (COL_BUDGET / (self.patch_len() * self.out_pixels())).max(1)
    }
}

/// A worker's buffers for one chunk of `S` samples: the phase planes `[S, Cin, s, s, Hp, Wp]`,
/// `col` `[K, S·N]` and `mat` `[Cout, S·N]`. Each thread keeps one per element type (see
/// [`Element::with_scratch`]) and reuses it from call to call, growing it when a geometry
/// needs more, so no pass allocates or zeroes them. Their contents on entry are whatever the
/// last chunk left; every kernel writes what it reads.
pub(crate) struct Scratch<T> {
    phases: Vec<T>,
    col: Vec<T>,
    mat: Vec<T>,
}

impl<T: Element> Scratch<T> {
    const fn new() -> Self {
        Self {
            phases: Vec::new(),
            col: Vec::new(),
            mat: Vec::new(),
        }
    }

    /// The three buffers cut to a chunk of `samples` samples of `g`.
    fn cut(&mut self, g: &Geometry, samples: usize) -> (&mut [T], &mut [T], &mut [T]) {
        let ld = samples * g.out_pixels();
        let sizes = [samples * g.phase_len(), g.patch_len() * ld, g.c_out * ld];
        for (buf, len) in [&mut self.phases, &mut self.col, &mut self.mat]
            .into_iter()
            .zip(sizes)
        {
            if buf.len() < len {
                buf.resize(len, T::zero());
            }
        }
        (
            &mut self.phases[..sizes[0]],
            &mut self.col[..sizes[1]],
            &mut self.mat[..sizes[2]],
        )
    }
}

/// Runs `work(scratch, acc, samples, rows)` over chunks of at most
/// [`Geometry::chunk_samples`] samples, where `rows` are those samples' rows
/// `[S, per_sample]` of `out` and `acc` the worker's accumulator (made by `acc`). Workers
/// (candle's thread count, on rayon's pool) take chunks from a shared queue, so a worker slowed
/// by other load on the machine does less of the work; each worker's accumulator is returned.
fn for_each_chunk<T, A, F>(
    g: &Geometry,
    out: &mut [T],
    per_sample: usize,
    acc: impl Fn() -> A + Sync,
    work: F,
) -> Vec<A>
where
    T: Element,
    A: Send,
    F: Fn(&mut Scratch<T>, &mut A, Range<usize>, &mut [T]) + Sync,
{
    let chunk = g.chunk_samples();
    let jobs: Vec<(Range<usize>, &mut [T])> = if per_sample == 0 {
        (0..g.batch)
            .step_by(chunk)
            .map(|first| (first..(first + chunk).min(g.batch), Default::default()))
            .collect()
    } else {
        out.chunks_mut(chunk * per_sample)
            .enumerate()
            .map(|(i, rows)| (i * chunk..i * chunk + rows.len() / per_sample, rows))
            .collect()
    };
    let threads = candle_core::utils::get_num_threads().clamp(1, jobs.len().max(1));
    let queue = Mutex::new(jobs.into_iter());
    let worker = || {
        let mut acc = acc();
        T::with_scratch(|scratch| {
            // The lock is held only to take a job; a poisoned queue just ends this worker.
            while let Some((samples, rows)) = queue.lock().ok().and_then(|mut q| q.next()) {
                work(scratch, &mut acc, samples, rows);
            }
        });
        acc
    };
    if threads <= 1 {
        return vec![worker()];
    }
    // A worker that panics makes `scope` panic too, so a poisoned lock never loses a result.
    let done = Mutex::new(Vec::with_capacity(threads));
    let finish = |acc| {
        done.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(acc)
    };
    rayon::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|_| finish(worker()));
        }
        finish(worker());
    });
    done.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// `dst[m×n] (+)= scale · lhs[m×k] · rhs[k×n]`, single-threaded, with element strides
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
    scale: T,
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
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Splits each sample of `input` `[S, Cin, H, W]` (read through `load`, a conversion and
/// scaling, e.g. of u8 pixels) into its phase planes `phases` `[S, Cin, s, s, Hp, Wp]` (see
/// [`Geometry::phase_len`]): `P[c, py, px][i, j] = x[c, s·i + py, s·j + px]`. Entries past
/// the input's edge are left as they were: no patch reads them (tap `(ky, kx)` of output
/// `(oy, ox)` is the input pixel `(s·oy + ky, s·ox + kx)`, inside the input).
fn to_phases<I: Copy, T: Element>(
    g: &Geometry,
    input: &[I],
    samples: usize,
    phases: &mut [T],
    load: impl Fn(I) -> T + Copy,
) {
    // A constant stride lets the compiler unroll the deinterleave.
    match g.stride {
        1 => to_phases_strided::<I, T, 1>(g, input, samples, phases, load),
        2 => to_phases_strided::<I, T, 2>(g, input, samples, phases, load),
        4 => to_phases_strided::<I, T, 4>(g, input, samples, phases, load),
        _ => to_phases_strided::<I, T, 0>(g, input, samples, phases, load),
    }
}

/// [`to_phases`] for stride `ST` (0: read the stride from `g`).
fn to_phases_strided<I: Copy, T: Element, const ST: usize>(
    g: &Geometry,
    input: &[I],
    samples: usize,
    phases: &mut [T],
    load: impl Fn(I) -> T + Copy,
) {
    let s = if ST == 0 { g.stride } else { ST };
    let (pw, plane) = (g.phase_w(), g.phase_plane_len());
    // Input plane (sample, channel) -> its s·s phase planes, `s·s·plane` elements.
    let planes = input.chunks_exact(g.h * g.w).take(samples * g.c_in);
    for (src, dst) in planes.zip(phases.chunks_exact_mut(s * s * plane)) {
        for (y, src) in src.chunks_exact(g.w).enumerate() {
            // Row y lands in row y / s of the planes (y % s, 0..s).
            let dst = &mut dst[(y % s) * s * plane + (y / s) * pw..];
            let mut groups = src.chunks_exact(s);
            for (j, group) in (&mut groups).enumerate() {
                for (px, x) in group.iter().enumerate() {
                    dst[px * plane + j] = load(*x);
                }
            }
            let j = g.w / s;
            for (px, x) in groups.remainder().iter().enumerate() {
                dst[px * plane + j] = load(*x);
            }
        }
    }
}

/// Writes the phase planes `phases` `[S, Cin, s, s, Hp, Wp]` back into `grad_in`
/// `[S, Cin, H, W]`: the adjoint of [`to_phases`], a permutation (each input element has one
/// phase entry), so every element of `grad_in`'s `S` samples is overwritten.
fn from_phases<T: Element>(g: &Geometry, phases: &[T], samples: usize, grad_in: &mut [T]) {
    match g.stride {
        1 => from_phases_strided::<T, 1>(g, phases, samples, grad_in),
        2 => from_phases_strided::<T, 2>(g, phases, samples, grad_in),
        4 => from_phases_strided::<T, 4>(g, phases, samples, grad_in),
        _ => from_phases_strided::<T, 0>(g, phases, samples, grad_in),
    }
}

/// [`from_phases`] for stride `ST` (0: read the stride from `g`).
fn from_phases_strided<T: Element, const ST: usize>(
    g: &Geometry,
    phases: &[T],
    samples: usize,
    grad_in: &mut [T],
) {
    let s = if ST == 0 { g.stride } else { ST };
    let (pw, plane) = (g.phase_w(), g.phase_plane_len());
    let planes = grad_in.chunks_exact_mut(g.h * g.w).take(samples * g.c_in);
    for (dst, src) in planes.zip(phases.chunks_exact(s * s * plane)) {
        for (y, dst) in dst.chunks_exact_mut(g.w).enumerate() {
            let src = &src[(y % s) * s * plane + (y / s) * pw..];
            if s == 1 {
                dst.copy_from_slice(&src[..g.w]);
                continue;
            }
            let mut groups = dst.chunks_exact_mut(s);
            for (j, group) in (&mut groups).enumerate() {
                for (px, d) in group.iter_mut().enumerate() {
                    *d = src[px * plane + j];
                }
            }
            let j = g.w / s;
            for (px, d) in groups.into_remainder().iter_mut().enumerate() {
                *d = src[px * plane + j];
            }
        }
    }
}

/// `dst.copy_from_slice(&src[..dst.len()])` for the short rows of [`im2col`] (`Wo` elements:
/// 20, 9 and 7 in the Nature CNN), without a call to `memcpy` per row: whole blocks of 8, then
/// the last 8 again (overlapping what is already copied) or, below 8, one element at a time.
#[inline(always)]
fn copy_row<T: Copy>(dst: &mut [T], src: &[T]) {
    let (len, src) = (dst.len(), &src[..dst.len()]);
    if len < 8 {
        for (d, x) in dst.iter_mut().zip(src) {
            *d = *x;
        }
        return;
    }
    for (d, x) in dst.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
        d.copy_from_slice(x);
    }
    if len % 8 != 0 {
        dst[len - 8..].copy_from_slice(&src[len - 8..]);
    }
}

/// The phase plane and the offset inside it where patch row `(c, ky, kx)` of an output
/// pixel `(oy, ox)` starts reading, relative to `(oy, ox)`'s own offset `oy·Wp + ox`.
fn tap(g: &Geometry, c: usize, ky: usize, kx: usize) -> (usize, usize) {
    let s = g.stride;
    let plane = (c * s + ky % s) * s + kx % s;
    (plane, (ky / s) * g.phase_w() + kx / s)
}

/// Fills `col` `[K, S·N]` with the patches of the `S` samples whose phase planes are in
/// `phases` `[S, Cin, s, s, Hp, Wp]`. Tap `(ky, kx) = (s·dy + py, s·dx + px)` of output
/// `(oy, ox)` is `P[c, py, px][oy + dy, ox + dx]`, so each output row's `Wo` entries of a
/// patch row are one contiguous copy, whatever the stride.
fn im2col<T: Element>(g: &Geometry, phases: &[T], samples: usize, col: &mut [T]) {
    let (n, ld, wo) = (g.out_pixels(), samples * g.out_pixels(), g.wo);
    let (pw, plane_len, sample_len) = (g.phase_w(), g.phase_plane_len(), g.phase_len());
    let mut rows = col.chunks_exact_mut(ld);
    for c in 0..g.c_in {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let Some(row) = rows.next() else { return };
                let (plane, offset) = tap(g, c, ky, kx);
                for (s, dst) in row.chunks_exact_mut(n).take(samples).enumerate() {
                    let src = &phases[s * sample_len + plane * plane_len + offset..];
                    // Output row oy reads the phase row `oy + dy`, `Wp` further on per row.
                    for (dst, src) in dst.chunks_exact_mut(wo).zip(src.chunks(pw)) {
                        copy_row(dst, src);
                    }
                }
            }
        }
    }
}

/// Adds the patches in `col` `[K, S·N]` onto the phase planes `phases`
/// `[S, Cin, s, s, Hp, Wp]` (the adjoint of [`im2col`]).
fn col2im_add<T: Element>(g: &Geometry, col: &[T], samples: usize, phases: &mut [T]) {
    let (n, ld, wo) = (g.out_pixels(), samples * g.out_pixels(), g.wo);
    let (pw, plane_len, sample_len) = (g.phase_w(), g.phase_plane_len(), g.phase_len());
    let mut rows = col.chunks_exact(ld);
    for c in 0..g.c_in {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let Some(row) = rows.next() else { return };
                let (plane, offset) = tap(g, c, ky, kx);
                for (s, src) in row.chunks_exact(n).take(samples).enumerate() {
                    let dst = &mut phases[s * sample_len + plane * plane_len + offset..];
                    for (src, dst) in src.chunks_exact(wo).zip(dst.chunks_mut(pw)) {
                        for (d, x) in dst.iter_mut().zip(src) {
                            *d += *x;
                        }
                    }
                }
            }
        }
    }
}

/// `[S, Cout, N]` rows of `grad` into `mat` `[Cout, S·N]`, zero where `relu_out` (the
/// forward's output, same rows) is not positive: the gradient before a fused ReLU.
fn grad_to_mat<T: Element>(
    g: &Geometry,
    grad: &[T],
    relu_out: Option<&[T]>,
    samples: usize,
    mat: &mut [T],
) {
    let (n, ld) = (g.out_pixels(), samples * g.out_pixels());
    for s in 0..samples {
        for co in 0..g.c_out {
            let src = &grad[(s * g.c_out + co) * n..][..n];
            let dst = &mut mat[co * ld + s * n..][..n];
            match relu_out {
                Some(out) => {
                    let out = &out[(s * g.c_out + co) * n..][..n];
                    for ((d, x), y) in dst.iter_mut().zip(src).zip(out) {
                        *d = if *y > T::zero() { *x } else { T::zero() };
                    }
                }
                None => dst.copy_from_slice(src),
            }
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

/// Forward: `input` `[B, Cin, H, W]` (read through `load`), `weight` `[Cout, K]`, `bias`
/// `[Cout]` -> `[B, Cout, Ho, Wo]`, through a ReLU if `relu`.
pub(crate) fn forward<I: Copy + Sync, T: Element>(
    g: &Geometry,
    input: &[I],
    load: impl Fn(I) -> T + Copy + Sync,
    weight: &[T],
    (bias, relu): (Option<&[T]>, bool),
) -> Vec<T> {
    let k = g.patch_len();
    let mut out = vec![T::zero(); g.batch * g.out_sample_len()];
    let per_sample = g.out_sample_len();
    for_each_chunk(
        g,
        &mut out,
        per_sample,
        || (),
        |sc, _, samples, out| {
            let (s, ld) = (samples.len(), samples.len() * g.out_pixels());
            let (phases, col, mat) = sc.cut(g, s);
            let input = &input[samples.start * g.in_sample_len()..][..s * g.in_sample_len()];
            to_phases(g, input, s, phases, load);
            im2col(g, phases, s, col);
            // mat[Cout, S·N] = weight[Cout, K] · col[K, S·N]
            matmul(
                (g.c_out, ld, k),
                mat,
                ld,
                false,
                weight,
                (k, 1),
                col,
                (ld, 1),
                T::one(),
            );
            mat_to_nchw(g, mat, (bias, relu), s, out);
        },
    );
    out
}

/// The gradients [`backward`] computes; `None` where not asked for.
pub(crate) struct Grads<T> {
    /// `[B, Cin, H, W]`.
    pub input: Option<Vec<T>>,
    /// `[Cout, K]`.
    pub weight: Option<Vec<T>>,
    /// `[Cout]`.
    pub bias: Option<Vec<T>>,
}

/// Which gradients [`backward`] computes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted {
    pub input: bool,
    pub weight: bool,
    pub bias: bool,
}

/// One pass for all gradients of [`forward`] from `grad_out` `[B, Cout, Ho, Wo]` (the
/// gradient at the output; `relu_out`, the forward's output, masks it when the ReLU was
/// fused): `input` `[B, Cin, H, W]` (read through `load`) and `weight` `[Cout, K]` are the
/// forward's operands, `scale` the factor it read the input with. Per chunk of samples,
/// the masked gradient is copied once into `mat` `[Cout, S·N]` and serves all three:
/// `d bias[co] = Σ mat[co, ·]`, `d weight[Cout, K] += mat · colᵀ` (col: the chunk's
/// patches) and `col = scale · weightᵀ · mat`, added back onto the input's pixels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<I: Copy + Sync, T: Element>(
    g: &Geometry,
    input: &[I],
    load: impl Fn(I) -> T + Copy + Sync,
    weight: &[T],
    grad_out: &[T],
    relu_out: Option<&[T]>,
    scale: T,
    wanted: Wanted,
) -> Grads<T> {
    let k = g.patch_len();
    let mut grad_in = vec![
        T::zero();
        if wanted.input {
            g.batch * g.in_sample_len()
        } else {
            0
        }
    ];
    let per_sample = if wanted.input { g.in_sample_len() } else { 0 };
    // Each worker's partial sums of the weight and bias gradients.
    let acc = || {
        let len = |want: bool, len: usize| if want { len } else { 0 };
        (
            vec![T::zero(); len(wanted.weight, g.weight_len())],
            vec![T::zero(); len(wanted.bias, g.c_out)],
        )
    };
    let parts = for_each_chunk(
        g,
        &mut grad_in,
        per_sample,
        acc,
        |sc, (dw, db), samples, grad_in| {
            let (s, ld) = (samples.len(), samples.len() * g.out_pixels());
            let (phases, col, mat) = sc.cut(g, s);
            let rows = samples.start * g.out_sample_len()..samples.end * g.out_sample_len();
            let relu_out = relu_out.map(|out| &out[rows.clone()]);
            grad_to_mat(g, &grad_out[rows], relu_out, s, mat);
            if wanted.bias {
                for (b, row) in db.iter_mut().zip(mat.chunks_exact(ld)) {
                    *b += sum(row);
                }
            }
            if wanted.weight {
                let input = &input[samples.start * g.in_sample_len()..][..s * g.in_sample_len()];
                to_phases(g, input, s, phases, load);
                im2col(g, phases, s, col);
                // dw[Cout, K] += mat[Cout, S·N] · colᵀ[S·N, K]
                matmul(
                    (g.c_out, k, ld),
                    dw,
                    k,
                    true,
                    mat,
                    (ld, 1),
                    col,
                    (1, ld),
                    T::one(),
                );
            }
            if wanted.input {
                // col[K, S·N] = scale · weightᵀ[K, Cout] · mat[Cout, S·N]
                matmul(
                    (k, ld, g.c_out),
                    col,
                    ld,
                    false,
                    weight,
                    (1, k),
                    mat,
                    (ld, 1),
                    scale,
                );
                phases.fill(T::zero());
                col2im_add(g, col, s, phases);
                from_phases(g, phases, s, grad_in);
            }
        },
    );
    let mut parts = parts.into_iter();
    let (mut dw, mut db) = parts.next().unwrap_or_else(acc);
    for (pw, pb) in parts {
        for (t, p) in dw.iter_mut().zip(pw).chain(db.iter_mut().zip(pb)) {
            *t += p;
        }
    }
    Grads {
        input: wanted.input.then_some(grad_in),
        weight: wanted.weight.then_some(dw),
        bias: wanted.bias.then_some(db),
    }
}

/// The sum of `row`, in eight independent partial sums so the adds pipeline (and vectorise).
fn sum<T: Element>(row: &[T]) -> T {
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
    lanes.iter().fold(T::zero(), |acc, x| acc + *x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_sample_once_with_their_rows() {
        for batch in [1, 2, 3, 7, 40] {
            // K·N = 4·4: one chunk; K·N = 400·441: one sample per chunk.
            for (h, k) in [(3, 2), (40, 20)] {
                let g = Geometry::new(&[batch, 1, h, h], &[1, 1, k, k], 1).unwrap();
                let mut out = vec![0.0f64; batch * 2];
                let seen = Mutex::new(vec![0; batch]);
                for_each_chunk(
                    &g,
                    &mut out,
                    2,
                    || (),
                    |_, _, samples, rows| {
                        assert_eq!(rows.len(), samples.len() * 2);
                        for (i, s) in samples.enumerate() {
                            seen.lock().unwrap()[s] += 1;
                            rows[2 * i] = s as f64;
                            rows[2 * i + 1] = s as f64;
                        }
                    },
                );
                assert_eq!(seen.into_inner().unwrap(), vec![1; batch]);
                let expected: Vec<f64> = (0..batch).flat_map(|s| [s as f64; 2]).collect();
                assert_eq!(out, expected);
            }
        }
    }

    /// The naive patch matrix: `col[(c, ky, kx), (s, oy, ox)] = x[s, c, oy·st + ky, ox·st + kx]`.
    fn naive_col(g: &Geometry, x: &[f64], samples: usize) -> Vec<f64> {
        let mut col = Vec::new();
        for c in 0..g.c_in {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    for s in 0..samples {
                        for oy in 0..g.ho {
                            for ox in 0..g.wo {
                                let (y, xx) = (oy * g.stride + ky, ox * g.stride + kx);
                                col.push(x[((s * g.c_in + c) * g.h + y) * g.w + xx]);
                            }
                        }
                    }
                }
            }
        }
        col
    }

    #[test]
    fn im2col_through_phases_matches_the_naive_patches() {
        // Strides 1-5, odd sizes, kernels smaller and larger than the stride.
        for (input, kernel, stride) in [
            ([2, 3, 9, 8], (3, 2), 2),
            ([1, 2, 84, 84], (8, 8), 4),
            ([3, 2, 20, 19], (4, 4), 2),
            ([2, 1, 11, 13], (5, 3), 3),
            ([2, 2, 7, 9], (2, 1), 4),
            ([1, 1, 12, 12], (3, 3), 5),
            ([2, 4, 9, 9], (3, 3), 1),
        ] {
            let g = Geometry::new(&input, &[1, input[1], kernel.0, kernel.1], stride).unwrap();
            let x: Vec<f64> = (0..input[0] * g.in_sample_len())
                .map(|i| (i as f64 * 0.37).sin())
                .collect();
            let mut phases = vec![0.0; input[0] * g.phase_len()];
            to_phases(&g, &x, input[0], &mut phases, |x| x);
            let mut col = vec![0.0; g.patch_len() * input[0] * g.out_pixels()];
            im2col(&g, &phases, input[0], &mut col);
            assert_eq!(
                col,
                naive_col(&g, &x, input[0]),
                "{input:?} {kernel:?} {stride}"
            );
            // The phases are a permutation: back to the input unchanged.
            let mut back = vec![f64::NAN; x.len()];
            from_phases(&g, &phases, input[0], &mut back);
            assert_eq!(back, x);
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
        let col = naive_col(&g, &x, 2);
        let mut phases = vec![0.0; 2 * g.phase_len()];
        col2im_add(&g, &y, 2, &mut phases);
        let mut back = vec![0.0; x.len()];
        from_phases(&g, &phases, 2, &mut back);
        let lhs: f64 = col.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!(
            (lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }
}
