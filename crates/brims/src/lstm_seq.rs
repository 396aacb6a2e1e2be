//! The LSTM sequence pass as one candle custom op (CPU, f32/f64).
//!
//! Replaying 128 steps as small candle ops spends most of its time in per-op and autograd
//! overhead; here the recurrence runs in plain loops and autograd sees one node. The backward
//! recomputes the gate pre-activations of all steps with ONE matmul (every `h_{t-1}` is in the
//! saved output), runs the sequential BPTT in loops, and forms `∂W_hh` with one more matmul.
//! Both passes split the batch's rows over the rayon threads, as the BRIMs op does.

use std::ops::Range;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::{
    contiguous_slice, gather_rows, gemm_acc, row_parts, scatter_rows, sigmoid, tanh, Real,
};

/// Whether [`lstm_seq`] runs fused for tensors on `device` of `dtype` (else: the step loop).
pub(crate) fn fused_supported(device: &Device, dtype: DType) -> bool {
    device.is_cpu() && matches!(dtype, DType::F32 | DType::F64)
}

/// The fused recurrence. `x_proj [T, B, 4H]` (inputs already projected, bias added),
/// `w_hh [H, 4H]` (the transposed PyTorch `weight_hh`), `h0 [B, H]`, `c0 [B, H]`,
/// `keep [T, B]` (1 = continue, 0 = zero the state before step t; no gradient).
/// Returns the outputs `[T, B, H]` and the final `(h, c)`, each `[B, H]`; gradients flow to
/// `x_proj`, `w_hh`, `h0` and `c0`. Needs `T > 0` and a device/dtype [`fused_supported`] accepts.
pub(crate) fn lstm_seq(
    x_proj: &Tensor,
    w_hh: &Tensor,
    h0: &Tensor,
    c0: &Tensor,
    keep: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (steps, batch, h4) = x_proj.dims3()?;
    let hidden = h4 / 4;
    if steps == 0 || h4 != 4 * hidden || w_hh.dims() != [hidden, h4] {
        bail!(
            "lstm_seq: x_proj {:?} and w_hh {:?} do not fit [T>0, B, 4H] and [H, 4H]",
            x_proj.dims(),
            w_hh.dims()
        );
    }
    let keep = keep.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    if keep.len() != steps * batch {
        bail!("lstm_seq: keep has {} values, not T·B", keep.len());
    }
    let op = LstmSeqOp {
        keep,
        steps,
        batch,
        hidden,
    };
    if h0.dims() != [batch, hidden] || c0.dims() != [batch, hidden] {
        bail!(
            "lstm_seq: start state h {:?}, c {:?}; expected [{batch}, {hidden}] each",
            h0.dims(),
            c0.dims()
        );
    }
    let h0c0 = Tensor::stack(&[h0, c0], 0)?;
    let out = x_proj
        .contiguous()?
        .apply_op3(&w_hh.contiguous()?, &h0c0, op)?;
    let hs = out.narrow(2, 0, hidden)?;
    let last = out.get(steps - 1)?;
    Ok((
        hs,
        last.narrow(1, 0, hidden)?,
        last.narrow(1, hidden, hidden)?,
    ))
}

/// Output `[T, B, 2H]`: row `(t, b)` holds `h_t` then `c_t`.
struct LstmSeqOp {
    /// `[T, B]` row-major.
    keep: Vec<f64>,
    steps: usize,
    batch: usize,
    hidden: usize,
}

impl LstmSeqOp {
    /// Env `b`'s state before step `t`, unmasked: `(h0, c0)` at `t = 0`, else step `t − 1`'s
    /// `(h, c)` from `out [T, B, 2H]`.
    fn prev_state<'a, T: Real>(
        &self,
        out: &'a [T],
        h0c0: &'a [T],
        t: usize,
        b: usize,
    ) -> (&'a [T], &'a [T]) {
        let (b_n, n) = (self.batch, self.hidden);
        if t == 0 {
            (
                &h0c0[b * n..(b + 1) * n],
                &h0c0[(b_n + b) * n..(b_n + b + 1) * n],
            )
        } else {
            let row = ((t - 1) * b_n + b) * 2 * n;
            (&out[row..row + n], &out[row + n..row + 2 * n])
        }
    }

    fn forward<T: Real>(&self, x_proj: &[T], w_hh: &[T], h0c0: &[T]) -> Vec<T> {
        let (b_n, n) = (self.batch, self.hidden);
        let mut out = vec![T::zero(); self.steps * b_n * 2 * n];
        let mut hp = vec![T::zero(); b_n * n];
        let mut cp = vec![T::zero(); b_n * n];
        let mut gates = vec![T::zero(); b_n * 4 * n];
        for t in 0..self.steps {
            for b in 0..b_n {
                let k = T::from_f64(self.keep[t * b_n + b]);
                let (h_prev, c_prev) = self.prev_state(&out, h0c0, t, b);
                for j in 0..n {
                    hp[b * n + j] = k * h_prev[j];
                    cp[b * n + j] = k * c_prev[j];
                }
            }
            gates.copy_from_slice(&x_proj[t * b_n * 4 * n..(t + 1) * b_n * 4 * n]);
            gemm_acc(&mut gates, &hp, w_hh, b_n, n, 4 * n);
            for b in 0..b_n {
                let row = (t * b_n + b) * 2 * n;
                let (h_out, c_out) = out[row..row + 2 * n].split_at_mut(n);
                cell_forward(
                    &gates[b * 4 * n..(b + 1) * 4 * n],
                    &cp[b * n..(b + 1) * n],
                    h_out,
                    c_out,
                );
            }
        }
        out
    }

    /// The op over env rows `rows` only (their `keep` values).
    fn for_rows(&self, rows: &Range<usize>) -> LstmSeqOp {
        LstmSeqOp {
            keep: gather_rows(&self.keep, self.steps, self.batch, 1, rows),
            steps: self.steps,
            batch: rows.len(),
            hidden: self.hidden,
        }
    }

    /// [`LstmSeqOp::forward`] with the batch's rows split over the rayon threads (envs are
    /// independent in the recurrence, so each thread runs all `T` steps of its rows).
    fn forward_rows<T: Real + Send + Sync>(&self, x_proj: &[T], w_hh: &[T], h0c0: &[T]) -> Vec<T> {
        let parts = row_parts(self.batch);
        if parts.len() <= 1 {
            return self.forward(x_proj, w_hh, h0c0);
        }
        let (steps, b_n, n) = (self.steps, self.batch, self.hidden);
        let outs: Vec<(Range<usize>, Vec<T>)> = parts
            .into_par_iter()
            .map(|rows| {
                let part = self.for_rows(&rows).forward(
                    &gather_rows(x_proj, steps, b_n, 4 * n, &rows),
                    w_hh,
                    &gather_rows(h0c0, 2, b_n, n, &rows),
                );
                (rows, part)
            })
            .collect();
        let mut out = vec![T::zero(); steps * b_n * 2 * n];
        for (rows, part) in outs {
            scatter_rows(&mut out, &part, b_n, 2 * n, &rows);
        }
        out
    }

    /// [`LstmSeqOp::backward`] with the batch's rows split over the rayon threads.
    fn backward_rows<T: Real + Send + Sync>(
        &self,
        pre: &[T],
        cp: &[T],
        out: &[T],
        grad: &[T],
        w_t: &[T],
    ) -> (Vec<T>, Vec<T>) {
        let parts = row_parts(self.batch);
        if parts.len() <= 1 {
            return self.backward(pre, cp, out, grad, w_t);
        }
        let (steps, b_n, n) = (self.steps, self.batch, self.hidden);
        type Part<T> = (Range<usize>, Vec<T>, Vec<T>);
        let grads: Vec<Part<T>> = parts
            .into_par_iter()
            .map(|rows| {
                let (d_pre, d_h0c0) = self.for_rows(&rows).backward(
                    &gather_rows(pre, steps, b_n, 4 * n, &rows),
                    &gather_rows(cp, steps, b_n, n, &rows),
                    &gather_rows(out, steps, b_n, 2 * n, &rows),
                    &gather_rows(grad, steps, b_n, 2 * n, &rows),
                    w_t,
                );
                (rows, d_pre, d_h0c0)
            })
            .collect();
        let mut d_pre = vec![T::zero(); steps * b_n * 4 * n];
        let mut d_h0c0 = vec![T::zero(); 2 * b_n * n];
        for (rows, part_pre, part_h0c0) in grads {
            scatter_rows(&mut d_pre, &part_pre, b_n, 4 * n, &rows);
            scatter_rows(&mut d_h0c0, &part_h0c0, b_n, n, &rows);
        }
        (d_pre, d_h0c0)
    }

    /// `(h̃_{t-1}, c̃_{t-1})` for every step, each `[T, B, H]`: the masked previous state.
    fn prev_states<T: Real>(&self, out: &[T], h0c0: &[T]) -> (Vec<T>, Vec<T>) {
        let (b_n, n) = (self.batch, self.hidden);
        let mut hp = vec![T::zero(); self.steps * b_n * n];
        let mut cp = vec![T::zero(); self.steps * b_n * n];
        for t in 0..self.steps {
            for b in 0..b_n {
                let k = T::from_f64(self.keep[t * b_n + b]);
                let (h_prev, c_prev) = self.prev_state(out, h0c0, t, b);
                let dst = (t * b_n + b) * n;
                for j in 0..n {
                    hp[dst + j] = k * h_prev[j];
                    cp[dst + j] = k * c_prev[j];
                }
            }
        }
        (hp, cp)
    }

    /// BPTT: `pre [T, B, 4H]` gate pre-activations, `cp [T, B, H]` masked previous cells,
    /// `out`/`grad [T, B, 2H]`, `w_t [4H, H]` (`w_hh` transposed). Returns `∂pre [T, B, 4H]`
    /// and `∂(h0, c0) [2, B, H]`.
    fn backward<T: Real>(
        &self,
        pre: &[T],
        cp: &[T],
        out: &[T],
        grad: &[T],
        w_t: &[T],
    ) -> (Vec<T>, Vec<T>) {
        let (b_n, n) = (self.batch, self.hidden);
        let mut d_pre = vec![T::zero(); self.steps * b_n * 4 * n];
        // Gradients w.r.t. the (unmasked) state leaving step t-1, carried backwards.
        let mut dh_next = vec![T::zero(); b_n * n];
        let mut dc_next = vec![T::zero(); b_n * n];
        let mut dh_prev = vec![T::zero(); b_n * n];
        let one = T::one();
        for t in (0..self.steps).rev() {
            let d_pre_t = &mut d_pre[t * b_n * 4 * n..(t + 1) * b_n * 4 * n];
            for b in 0..b_n {
                let row = (t * b_n + b) * 2 * n;
                let g = &pre[(t * b_n + b) * 4 * n..(t * b_n + b + 1) * 4 * n];
                let da = &mut d_pre_t[b * 4 * n..(b + 1) * 4 * n];
                let k = T::from_f64(self.keep[t * b_n + b]);
                for j in 0..n {
                    let dh = grad[row + j] + dh_next[b * n + j];
                    let dc_in = grad[row + n + j] + dc_next[b * n + j];
                    let i = sigmoid(g[j]);
                    let f = sigmoid(g[n + j]);
                    let gg = tanh(g[2 * n + j]);
                    let o = sigmoid(g[3 * n + j]);
                    let tc = tanh(out[row + n + j]);
                    let dc = dc_in + dh * o * (one - tc * tc);
                    da[j] = dc * gg * i * (one - i);
                    da[n + j] = dc * cp[(t * b_n + b) * n + j] * f * (one - f);
                    da[2 * n + j] = dc * i * (one - gg * gg);
                    da[3 * n + j] = dh * tc * o * (one - o);
                    dc_next[b * n + j] = k * dc * f;
                }
            }
            dh_prev.iter_mut().for_each(|v| *v = T::zero());
            gemm_acc(&mut dh_prev, d_pre_t, w_t, b_n, 4 * n, n);
            for b in 0..b_n {
                let k = T::from_f64(self.keep[t * b_n + b]);
                for j in 0..n {
                    dh_next[b * n + j] = k * dh_prev[b * n + j];
                }
            }
        }
        dh_next.extend_from_slice(&dc_next);
        (d_pre, dh_next)
    }

    fn bwd_typed<T: Real + Send + Sync>(
        &self,
        x_proj: &Tensor,
        w_hh: &Tensor,
        h0c0: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (steps, b_n, n) = (self.steps, self.batch, self.hidden);
        let dev = x_proj.device();
        let out = res.flatten_all()?.to_vec1::<T>()?;
        let h0c0_v = h0c0.flatten_all()?.to_vec1::<T>()?;
        let grad = grad_res.flatten_all()?.to_vec1::<T>()?;
        let (hp, cp) = self.prev_states(&out, &h0c0_v);
        let hp = Tensor::from_vec(hp, (steps * b_n, n), dev)?;
        let w_hh = w_hh.detach();
        // All steps' pre-activations at once: every h̃_{t-1} is known after the forward.
        let pre = x_proj
            .detach()
            .reshape((steps * b_n, 4 * n))?
            .add(&hp.matmul(&w_hh)?)?
            .flatten_all()?
            .to_vec1::<T>()?;
        let w_t = w_hh.t()?.contiguous()?.flatten_all()?.to_vec1::<T>()?;
        let (d_pre, d_h0c0) = self.backward_rows(&pre, &cp, &out, &grad, &w_t);
        let d_pre = Tensor::from_vec(d_pre, (steps * b_n, 4 * n), dev)?;
        let d_w = hp.t()?.matmul(&d_pre)?;
        Ok((
            Some(d_pre.reshape((steps, b_n, 4 * n))?),
            Some(d_w),
            Some(Tensor::from_vec(d_h0c0, (2, b_n, n), dev)?),
        ))
    }
}

impl CustomOp3 for LstmSeqOp {
    fn name(&self) -> &'static str {
        "lstm-seq"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = Shape::from((self.steps, self.batch, 2 * self.hidden));
        let storage = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(self.forward_rows::<f32>(
                    contiguous_slice(s1, l1)?,
                    contiguous_slice(s2, l2)?,
                    contiguous_slice(s3, l3)?,
                ))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(self.forward_rows::<f64>(
                    contiguous_slice(s1, l1)?,
                    contiguous_slice(s2, l2)?,
                    contiguous_slice(s3, l3)?,
                ))
            }
            _ => bail!(
                "lstm_seq: needs f32 or f64 inputs of one dtype, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((storage, shape))
    }

    fn bwd(
        &self,
        x_proj: &Tensor,
        w_hh: &Tensor,
        h0c0: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match x_proj.dtype() {
            DType::F32 => self.bwd_typed::<f32>(x_proj, w_hh, h0c0, res, grad_res),
            DType::F64 => self.bwd_typed::<f64>(x_proj, w_hh, h0c0, res, grad_res),
            dt => bail!("lstm_seq: no backward for {dt:?}"),
        }
    }
}

/// One env's cell update from its gate pre-activations `gates [4H]` (PyTorch's order `i, f, g,
/// o`) and its masked previous cell `c_prev [H]`: writes `h [H]` and `c [H]`.
pub(crate) fn cell_forward<T: Real>(gates: &[T], c_prev: &[T], h: &mut [T], c: &mut [T]) {
    let n = c_prev.len();
    for j in 0..n {
        let i = sigmoid(gates[j]);
        let f = sigmoid(gates[n + j]);
        let g = tanh(gates[2 * n + j]);
        let o = sigmoid(gates[3 * n + j]);
        c[j] = f * c_prev[j] + i * g;
        h[j] = o * tanh(c[j]);
    }
}
