//! The BRIMs recurrence (spec §§4.1–4.7) as plain loops over all layers and steps: one candle
//! custom op for the sequence pass the learner differentiates, and the forward-only step acting
//! uses (CPU, f32/f64).
//!
//! The candle composition in [`crate::brims`] is the readable reference and what the fixture is
//! checked against; it costs ~100 small ops per layer and step, and autograd roughly triples
//! that. Here autograd sees one node per sequence. The forward keeps what the backward needs
//! (attention probabilities, gates, masks); the backward runs BPTT through the layers top to
//! bottom, storing the per-step gradients of every projection, and forms each weight gradient
//! with one batched matmul over all steps at the end.
//!
//! Envs are independent in the recurrence, so [`forward_rows`] and [`backward_rows`] split the
//! batch's rows over the rayon threads, each running all `T` steps for its rows with no
//! per-step synchronisation; only the weight gradients are summed at the end.
//!
//! Layouts: per-module quantities are module-major `[M, T, B, X]`, so module `j` at step `t` is
//! a contiguous `[B, X]` block (a plain row-major matmul with module `j`'s weight); the rest is
//! step-major `[T, B, …]`. The state row of one env is `[h_0, c_0, h_1, c_1, …]`, `W` wide.

use std::any::Any;
use std::ops::Range;
use std::sync::Mutex;

use rayon::prelude::*;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use crate::brims::LayerSizes;
use crate::config::TieBreak;
use crate::kernels::{contiguous_slice, gemm_acc, sigmoid, tanh, Real};
use crate::topk::active_modules;

/// One layer's weights as flat row-major slices (shapes as the fields of `brims::Layer`).
pub(crate) struct LayerWeights<'a, T> {
    /// `[M, d, Hi·dk]`.
    pub inp_q: &'a [T],
    /// Per real slot `[D_s, Hi·(dk + dv)]`; `None` for layer 0's bottom-up slot, whose keys and
    /// values arrive projected (`kv0`).
    pub slot_kv: Vec<Option<&'a [T]>>,
    /// `[M, Hi·dv, 4d]`.
    pub lstm_ih: &'a [T],
    /// `[M, d, 4d]`.
    pub lstm_hh: &'a [T],
    /// `[M, 4d]`.
    pub lstm_b: &'a [T],
    /// `[M, d, Hc·(2dk + dv)]`.
    pub comm_qkv: &'a [T],
    /// `[Hc·dv, 2d]`.
    pub comm_out_w: &'a [T],
    /// `[2d]`.
    pub comm_out_b: &'a [T],
}

/// The element counts of one layer's weights, in the packing order of [`LayerWeights`]
/// (`inp_q`, the slot matrices other than layer 0's bottom-up, `lstm_ih`, `lstm_hh`, `lstm_b`,
/// `comm_qkv`, `comm_out_w`, `comm_out_b`).
pub(crate) fn weight_lens(l: usize, s: &LayerSizes) -> Vec<usize> {
    let (m, d) = (s.modules, s.d);
    let mut lens = vec![m * d * s.qw()];
    for (slot, &width) in s.slot_widths.iter().enumerate() {
        if !(l == 0 && slot == 0) {
            lens.push(width * s.kvw());
        }
    }
    lens.extend([
        m * s.rw() * 4 * d,
        m * d * 4 * d,
        m * 4 * d,
        m * d * s.cw(),
        s.uw() * 2 * d,
        2 * d,
    ]);
    lens
}

/// Splits `slices` (one per weight, in [`weight_lens`] order for every layer) into layers,
/// checking every length.
pub(crate) fn layer_weights<'a, T>(
    sizes: &[LayerSizes],
    slices: &[&'a [T]],
) -> Result<Vec<LayerWeights<'a, T>>> {
    let mut next = slices.iter().copied();
    let mut layers = Vec::with_capacity(sizes.len());
    for (l, s) in sizes.iter().enumerate() {
        let lens = weight_lens(l, s);
        let mut take = Vec::with_capacity(lens.len());
        for &len in &lens {
            match next.next() {
                Some(w) if w.len() == len => take.push(w),
                Some(w) => bail!(
                    "brims_seq: layer {l} weight {} has {} values, expected {len}",
                    take.len(),
                    w.len()
                ),
                None => bail!("brims_seq: too few weights for layer {l}"),
            }
        }
        let mut take = take.into_iter();
        let mut pop = || take.next().expect("one slice per length, checked above");
        let inp_q = pop();
        let slot_kv = (0..s.slot_widths.len())
            .map(|slot| (!(l == 0 && slot == 0)).then(&mut pop))
            .collect();
        layers.push(LayerWeights {
            inp_q,
            slot_kv,
            lstm_ih: pop(),
            lstm_hh: pop(),
            lstm_b: pop(),
            comm_qkv: pop(),
            comm_out_w: pop(),
            comm_out_b: pop(),
        });
    }
    if next.next().is_some() {
        bail!("brims_seq: more weights than the layers take");
    }
    Ok(layers)
}

/// Sizes of one pass: the layers, `T`, `B`, and where each layer's `h` sits in a state row.
pub(crate) struct Plan<'a> {
    pub sizes: &'a [LayerSizes],
    pub steps: usize,
    pub batch: usize,
}

impl Plan<'_> {
    /// State row width `W = Σ 2·N_l`.
    pub fn width(&self) -> usize {
        self.sizes.iter().map(|s| 2 * s.hidden).sum()
    }

    /// Offset of layer `l`'s `h` in a state row (its `c` follows at `+ N_l`).
    pub fn offset(&self, l: usize) -> usize {
        self.sizes[..l].iter().map(|s| 2 * s.hidden).sum()
    }
}

/// What one layer's forward keeps for the backward and the trace.
pub(crate) struct LayerSaved<T> {
    /// `[M, T, B, d]` the (reset-masked) previous `h` and `c`.
    hp: Vec<T>,
    cp: Vec<T>,
    /// Per real slot `[T, B, D_s]`: the slot's input as projected (normalised with
    /// `slot_norm`; empty for layer 0's bottom-up, which arrives projected).
    slot_in: Vec<Vec<T>>,
    /// Per real slot `[T, B]`: `1/σ` of each normalised input row (empty without `slot_norm`).
    slot_rstd: Vec<Vec<T>>,
    /// Per real slot `[T, B, Hi·(dk + dv)]`: its keys, then values.
    slot_kv: Vec<Vec<T>>,
    /// `[M, T, B, Hi·dk]` input-attention queries.
    q: Vec<T>,
    /// `[T, B, Hi, M, S + 1]` input attention, null slot first.
    probs: Vec<T>,
    /// `[T, B, M]` head-averaged null attention, as the selection saw it.
    pub null: Vec<f64>,
    /// `[T, B, M]`.
    pub active: Vec<bool>,
    /// `[M, T, B, Hi·dv]` attention reads.
    read: Vec<T>,
    /// `[M, T, B, 4d]` activated gates `σ(i), σ(f), tanh(g), σ(o)`.
    gates: Vec<T>,
    /// `[M, T, B, d]` candidates `c̃`, `h̃`.
    cand_c: Vec<T>,
    cand_h: Vec<T>,
    /// `[M, T, B, Hc·(2dk + dv)]` communication queries, keys, values.
    comm_qkv: Vec<T>,
    /// `[T, B, Hc, M, M]` communication attention.
    comm_probs: Vec<T>,
    /// `[T, B, M, Hc·dv]` communication reads.
    comm_read: Vec<T>,
    /// `[T, B, M, 2d]` pre-activations of `fc` then `gate_fc`.
    comm_out: Vec<T>,
}

impl LayerSizes {
    /// Query width `Hi·dk`.
    pub(crate) fn qw(&self) -> usize {
        self.hi * self.dk
    }
    /// Key+value width of one slot, `Hi·(dk + dv)`.
    pub(crate) fn kvw(&self) -> usize {
        self.hi * (self.dk + self.dv)
    }
    /// Read width `Hi·dv`.
    pub(crate) fn rw(&self) -> usize {
        self.hi * self.dv
    }
    /// Communication q/k/v width `Hc·(2dk + dv)`.
    pub(crate) fn cw(&self) -> usize {
        self.hc * (2 * self.dkc + self.dvc)
    }
    /// Communication read width `Hc·dv`.
    pub(crate) fn uw(&self) -> usize {
        self.hc * self.dvc
    }
}

/// `out[r, :] = a[r, :] · w` for `rows` rows (`a [rows, k]`, `w [k, n]`, `out` overwritten).
fn matmul<T: Real>(out: &mut [T], a: &[T], w: &[T], rows: usize, k: usize, n: usize) {
    out.fill(T::zero());
    gemm_acc(out, a, w, rows, k, n);
}

/// Module `j`'s block: `out [B, n] (+)= a [B, k] · weights[j]`, `weights` being `[M, k, n]`.
fn module_matmul<T: Real>(
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
fn transpose_blocks<T: Copy>(src: &[T], g: usize, rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(src.len());
    for blk in src.chunks(rows * cols).take(g) {
        for c in 0..cols {
            out.extend((0..rows).map(|r| blk[r * cols + c]));
        }
    }
    out
}

fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |acc, (&x, &y)| acc + x * y)
}

/// Normalises `x` in place to zero mean and unit variance (ε = `SLOT_NORM_EPS`, as the
/// reference path's `slot_input`); returns `1/σ`.
fn normalise<T: Real>(x: &mut [T]) -> T {
    let n = x.len() as f64;
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    let rstd = 1.0 / (var + crate::brims::SLOT_NORM_EPS).sqrt();
    for v in x.iter_mut() {
        *v = T::from_f64((v.to_f64() - mean) * rstd);
    }
    T::from_f64(rstd)
}

/// The gradient through [`normalise`]: `dy` (in place, becomes `dx`), the output `y`, `1/σ`.
/// `dx = (dy − mean(dy) − y · mean(dy ⊙ y)) / σ`.
fn normalise_backward<T: Real>(dy: &mut [T], y: &[T], rstd: T) {
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
fn softmax<T: Real>(logits: &mut [T]) {
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

/// The forward pass over `T` steps. `kv0 [T, B, Hi·(dk+dv)]` layer 0's projected bottom-up keys
/// and values, `state0 [B, W]`, `keep [T, B]` (0 = zero the state before that step). Returns
/// `out [T, B, W]`, the committed state of every layer after every step, and what each layer
/// kept.
pub(crate) fn forward<T: Real>(
    plan: &Plan,
    weights: &[LayerWeights<T>],
    kv0: &[T],
    state0: &[T],
    keep: &[f64],
    tie_break: TieBreak,
) -> (Vec<T>, Vec<LayerSaved<T>>) {
    let (steps, batch, width) = (plan.steps, plan.batch, plan.width());
    let mut out = vec![T::zero(); steps * batch * width];
    let mut saved: Vec<LayerSaved<T>> = plan
        .sizes
        .iter()
        .enumerate()
        .map(|(l, s)| {
            let mm = |x: usize| vec![T::zero(); s.modules * steps * batch * x];
            let tb = steps * batch;
            let slots = s.slot_widths.len();
            LayerSaved {
                hp: mm(s.d),
                cp: mm(s.d),
                slot_in: s
                    .slot_widths
                    .iter()
                    .enumerate()
                    .map(|(slot, &w)| {
                        if l == 0 && slot == 0 {
                            vec![]
                        } else {
                            vec![T::zero(); tb * w]
                        }
                    })
                    .collect(),
                slot_rstd: (0..slots)
                    .map(|slot| {
                        if s.slot_norm && !(l == 0 && slot == 0) {
                            vec![T::zero(); tb]
                        } else {
                            vec![]
                        }
                    })
                    .collect(),
                slot_kv: (0..slots).map(|_| vec![T::zero(); tb * s.kvw()]).collect(),
                q: mm(s.qw()),
                probs: vec![T::zero(); tb * s.hi * s.modules * (slots + 1)],
                null: vec![0.0; tb * s.modules],
                active: vec![false; tb * s.modules],
                read: mm(s.rw()),
                gates: mm(4 * s.d),
                cand_c: mm(s.d),
                cand_h: mm(s.d),
                comm_qkv: mm(s.cw()),
                comm_probs: vec![T::zero(); tb * s.hc * s.modules * s.modules],
                comm_read: vec![T::zero(); tb * s.modules * s.uw()],
                comm_out: vec![T::zero(); tb * s.modules * 2 * s.d],
            }
        })
        .collect();
    for t in 0..steps {
        for l in 0..plan.sizes.len() {
            forward_layer(
                plan,
                l,
                t,
                &weights[l],
                kv0,
                state0,
                keep,
                tie_break,
                &mut out,
                &mut saved[l],
            );
        }
    }
    (out, saved)
}

/// Row `b` of the state before step `t` (unmasked): `state0` at `t = 0`, else `out[t − 1]`.
fn prev_row<'a, T>(out: &'a [T], state0: &'a [T], t: usize, b: usize, plan: &Plan) -> &'a [T] {
    let (batch, width) = (plan.batch, plan.width());
    if t == 0 {
        &state0[b * width..(b + 1) * width]
    } else {
        let row = ((t - 1) * batch + b) * width;
        &out[row..row + width]
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_layer<T: Real>(
    plan: &Plan,
    l: usize,
    t: usize,
    w: &LayerWeights<T>,
    kv0: &[T],
    state0: &[T],
    keep: &[f64],
    tie_break: TieBreak,
    out: &mut [T],
    sv: &mut LayerSaved<T>,
) {
    let s = &plan.sizes[l];
    let (steps, batch, width) = (plan.steps, plan.batch, plan.width());
    let (m, d, n) = (s.modules, s.d, s.hidden);
    let (hi, dk, dv, hc, dkc, dvc) = (s.hi, s.dk, s.dv, s.hc, s.dkc, s.dvc);
    let (qw, kvw, rw, cw, uw) = (s.qw(), s.kvw(), s.rw(), s.cw(), s.uw());
    let slots = s.slot_widths.len();
    let off = plan.offset(l);
    // Module j's [B, x] block at step t in a module-major [M, T, B, x] buffer.
    let blk = |j: usize, x: usize| ((j * steps + t) * batch) * x..((j * steps + t + 1) * batch) * x;
    let tb = t * batch;

    // The masked previous state, module-major.
    for b in 0..batch {
        let k = T::from_f64(keep[tb + b]);
        let prev = prev_row(out, state0, t, b, plan);
        for j in 0..m {
            let dst = ((j * steps + t) * batch + b) * d;
            for r in 0..d {
                sv.hp[dst + r] = k * prev[off + j * d + r];
                sv.cp[dst + r] = k * prev[off + n + j * d + r];
            }
        }
    }

    // Slot inputs and their keys/values (spec §4.1).
    for slot in 0..slots {
        let kv = &mut sv.slot_kv[slot][tb * kvw..(tb + batch) * kvw];
        let Some(w_kv) = w.slot_kv[slot] else {
            kv.copy_from_slice(&kv0[tb * kvw..(tb + batch) * kvw]);
            continue;
        };
        let dw = s.slot_widths[slot];
        let x = &mut sv.slot_in[slot][tb * dw..(tb + batch) * dw];
        for b in 0..batch {
            let dst = &mut x[b * dw..(b + 1) * dw];
            if slot == 0 {
                // The layer below at this step, committed.
                let src = plan.offset(l - 1);
                let row = (tb + b) * width + src;
                dst.copy_from_slice(&out[row..row + dw]);
            } else {
                // The top-down source at t − 1, masked like every previous state.
                let src = plan.offset(s.top_down.expect("a second slot is top-down"));
                let k = T::from_f64(keep[tb + b]);
                let prev = prev_row(out, state0, t, b, plan);
                for (o, &v) in dst.iter_mut().zip(&prev[src..src + dw]) {
                    *o = k * v;
                }
            }
            if s.slot_norm {
                sv.slot_rstd[slot][tb + b] = normalise(dst);
            }
        }
        matmul(kv, x, w_kv, batch, dw, kvw);
    }

    // Input attention (spec §4.2): queries from the previous h, a null slot of exact zeros.
    for j in 0..m {
        let hp = &sv.hp[blk(j, d)];
        module_matmul(&mut sv.q[blk(j, qw)], hp, w.inp_q, j, (batch, d, qw), false);
    }
    let scale = T::from_f64(1.0 / (dk as f64).sqrt());
    let inv_heads = T::from_f64(1.0 / hi as f64);
    let mut logits = vec![T::zero(); slots + 1];
    for b in 0..batch {
        for j in 0..m {
            let q_row = ((j * steps + t) * batch + b) * qw;
            let read_row = ((j * steps + t) * batch + b) * rw;
            let mut null = T::zero();
            for a in 0..hi {
                let q = &sv.q[q_row + a * dk..q_row + (a + 1) * dk];
                logits[0] = T::zero();
                for slot in 0..slots {
                    let key = &sv.slot_kv[slot][(tb + b) * kvw + a * dk..][..dk];
                    logits[slot + 1] = dot(q, key) * scale;
                }
                softmax(&mut logits);
                let p_row = (((tb + b) * hi + a) * m + j) * (slots + 1);
                sv.probs[p_row..p_row + slots + 1].copy_from_slice(&logits);
                null += logits[0];
                let read = &mut sv.read[read_row + a * dv..read_row + (a + 1) * dv];
                read.fill(T::zero());
                for slot in 0..slots {
                    let p = logits[slot + 1];
                    let value = &sv.slot_kv[slot][(tb + b) * kvw + hi * dk + a * dv..][..dv];
                    for (r, &v) in read.iter_mut().zip(value) {
                        *r += p * v;
                    }
                }
            }
            sv.null[(tb + b) * m + j] = (null * inv_heads).to_f64();
        }
        // Selection (spec §4.3).
        let row = (tb + b) * m;
        let chosen = active_modules(&sv.null[row..row + m], s.active, tie_break);
        sv.active[row..row + m].copy_from_slice(&chosen);
    }

    // Per-module LSTMs for every module (spec §4.4), then their communication projections.
    let g4 = 4 * d;
    for j in 0..m {
        let gates = &mut sv.gates[blk(j, g4)];
        let bias = &w.lstm_b[j * g4..(j + 1) * g4];
        for row in gates.chunks_mut(g4) {
            row.copy_from_slice(bias);
        }
        module_matmul(
            gates,
            &sv.read[blk(j, rw)],
            w.lstm_ih,
            j,
            (batch, rw, g4),
            true,
        );
        module_matmul(gates, &sv.hp[blk(j, d)], w.lstm_hh, j, (batch, d, g4), true);
        let cp = &sv.cp[blk(j, d)];
        let cand_c = &mut sv.cand_c[blk(j, d)];
        let cand_h = &mut sv.cand_h[blk(j, d)];
        for b in 0..batch {
            let g = &mut gates[b * g4..(b + 1) * g4];
            for r in 0..d {
                let i = sigmoid(g[r]);
                let f = sigmoid(g[d + r]);
                let gg = tanh(g[2 * d + r]);
                let o = sigmoid(g[3 * d + r]);
                let c = f * cp[b * d + r] + i * gg;
                cand_c[b * d + r] = c;
                cand_h[b * d + r] = o * tanh(c);
                (g[r], g[d + r], g[2 * d + r], g[3 * d + r]) = (i, f, gg, o);
            }
        }
        module_matmul(
            &mut sv.comm_qkv[blk(j, cw)],
            cand_h,
            w.comm_qkv,
            j,
            (batch, d, cw),
            false,
        );
    }

    // Communication attention over all candidates (spec §4.5).
    let comm_scale = T::from_f64(1.0 / (dkc as f64).sqrt());
    let mut scores = vec![T::zero(); m];
    for b in 0..batch {
        let qkv = |i: usize| &sv.comm_qkv[((i * steps + t) * batch + b) * cw..][..cw];
        for a in 0..hc {
            for j in 0..m {
                let q = &qkv(j)[a * dkc..(a + 1) * dkc];
                for (i, sc) in scores.iter_mut().enumerate() {
                    let key = &qkv(i)[hc * dkc + a * dkc..hc * dkc + (a + 1) * dkc];
                    *sc = dot(q, key) * comm_scale;
                }
                softmax(&mut scores);
                let p_row = (((tb + b) * hc + a) * m + j) * m;
                sv.comm_probs[p_row..p_row + m].copy_from_slice(&scores);
                let u_row = ((tb + b) * m + j) * uw + a * dvc;
                let u = &mut sv.comm_read[u_row..u_row + dvc];
                u.fill(T::zero());
                for (i, &p) in scores.iter().enumerate() {
                    let value = &qkv(i)[2 * hc * dkc + a * dvc..][..dvc];
                    for (o, &v) in u.iter_mut().zip(value) {
                        *o += p * v;
                    }
                }
            }
        }
    }
    let rows = batch * m;
    let fg = &mut sv.comm_out[tb * m * 2 * d..(tb + batch) * m * 2 * d];
    for row in fg.chunks_mut(2 * d) {
        row.copy_from_slice(w.comm_out_b);
    }
    gemm_acc(
        fg,
        &sv.comm_read[tb * m * uw..(tb + batch) * m * uw],
        w.comm_out_w,
        rows,
        uw,
        2 * d,
    );

    // Gated update and commit (spec §4.5–4.6): inactive modules copy h and c exactly.
    for b in 0..batch {
        let row = (tb + b) * width + off;
        for j in 0..m {
            let mm_row = ((j * steps + t) * batch + b) * d;
            let fg = &sv.comm_out[((tb + b) * m + j) * 2 * d..][..2 * d];
            let is_active = sv.active[(tb + b) * m + j];
            for r in 0..d {
                let (h, c) = if is_active {
                    let delta = sigmoid(fg[d + r]) * tanh(fg[r]);
                    (sv.cand_h[mm_row + r] + delta, sv.cand_c[mm_row + r])
                } else {
                    (sv.hp[mm_row + r], sv.cp[mm_row + r])
                };
                out[row + j * d + r] = h;
                out[row + n + j * d + r] = c;
            }
        }
    }
}

/// Per-step gradients of one layer's projections, kept for the weight gradients.
struct LayerGrads<T> {
    /// `[M, T, B, Hi·dk]`.
    q: Vec<T>,
    /// Per real slot `[T, B, Hi·(dk + dv)]`.
    slot_kv: Vec<Vec<T>>,
    /// `[M, T, B, 4d]` gate pre-activations.
    gates: Vec<T>,
    /// `[M, T, B, Hc·(2dk + dv)]`.
    comm_qkv: Vec<T>,
    /// `[T, B, M, 2d]`.
    comm_out: Vec<T>,
}

/// Transposed weights for the backward's input gradients.
struct LayerWeightsT<T> {
    /// `[M, Hi·dk, d]`.
    inp_q: Vec<T>,
    /// Per real slot `[Hi·(dk + dv), D_s]` (empty where projected outside).
    slot_kv: Vec<Vec<T>>,
    /// `[M, 4d, Hi·dv]`.
    lstm_ih: Vec<T>,
    /// `[M, 4d, d]`.
    lstm_hh: Vec<T>,
    /// `[M, Hc·(2dk + dv), d]`.
    comm_qkv: Vec<T>,
    /// `[2d, Hc·dv]`.
    comm_out_w: Vec<T>,
}

fn transposed<T: Real>(s: &LayerSizes, w: &LayerWeights<T>) -> LayerWeightsT<T> {
    let (m, d) = (s.modules, s.d);
    LayerWeightsT {
        inp_q: transpose_blocks(w.inp_q, m, d, s.qw()),
        slot_kv: w
            .slot_kv
            .iter()
            .zip(&s.slot_widths)
            .map(|(kv, &dw)| kv.map_or(vec![], |kv| transpose_blocks(kv, 1, dw, s.kvw())))
            .collect(),
        lstm_ih: transpose_blocks(w.lstm_ih, m, s.rw(), 4 * d),
        lstm_hh: transpose_blocks(w.lstm_hh, m, d, 4 * d),
        comm_qkv: transpose_blocks(w.comm_qkv, m, d, s.cw()),
        comm_out_w: transpose_blocks(w.comm_out_w, 1, s.uw(), 2 * d),
    }
}

/// The gradients of one pass: every weight (in [`weight_lens`] order, flat), `kv0`, `state0`.
pub(crate) struct Gradients<T> {
    pub weights: Vec<Vec<T>>,
    pub kv0: Vec<T>,
    pub state0: Vec<T>,
}

/// BPTT through [`forward`]: `grad_out [T, B, W]` is the loss gradient w.r.t. `out`; `wts` the
/// weights transposed by [`transposed`].
fn backward<T: Real>(
    plan: &Plan,
    weights: &[LayerWeights<T>],
    wts: &[LayerWeightsT<T>],
    saved: &[LayerSaved<T>],
    grad_out: &[T],
    keep: &[f64],
) -> Result<Gradients<T>> {
    let (steps, batch, width) = (plan.steps, plan.batch, plan.width());
    let mut grads: Vec<LayerGrads<T>> = plan
        .sizes
        .iter()
        .map(|s| {
            let mm = |x: usize| vec![T::zero(); s.modules * steps * batch * x];
            LayerGrads {
                q: mm(s.qw()),
                slot_kv: s
                    .slot_widths
                    .iter()
                    .map(|_| vec![T::zero(); steps * batch * s.kvw()])
                    .collect(),
                gates: mm(4 * s.d),
                comm_qkv: mm(s.cw()),
                comm_out: vec![T::zero(); steps * batch * s.modules * 2 * s.d],
            }
        })
        .collect();
    // ∂loss/∂out[t] arriving from step t + 1 (already through its reset mask).
    let mut carry = vec![T::zero(); batch * width];
    let mut d_cur = vec![T::zero(); batch * width];
    let mut d_prev = vec![T::zero(); batch * width];
    for t in (0..steps).rev() {
        for (i, dc) in d_cur.iter_mut().enumerate() {
            *dc = grad_out[t * batch * width + i] + carry[i];
        }
        d_prev.fill(T::zero());
        for l in (0..plan.sizes.len()).rev() {
            backward_layer(
                plan,
                l,
                t,
                &weights[l],
                &wts[l],
                &saved[l],
                &mut grads[l],
                &mut d_cur,
                &mut d_prev,
            );
        }
        for b in 0..batch {
            let k = T::from_f64(keep[t * batch + b]);
            for i in b * width..(b + 1) * width {
                carry[i] = k * d_prev[i];
            }
        }
    }
    let weight_grads = weight_gradients(plan, saved, &grads)?;
    let kv0 = std::mem::take(&mut grads[0].slot_kv[0]);
    Ok(Gradients {
        weights: weight_grads,
        kv0,
        state0: carry,
    })
}

#[allow(clippy::too_many_arguments)]
fn backward_layer<T: Real>(
    plan: &Plan,
    l: usize,
    t: usize,
    w: &LayerWeights<T>,
    wt: &LayerWeightsT<T>,
    sv: &LayerSaved<T>,
    gr: &mut LayerGrads<T>,
    d_cur: &mut [T],
    d_prev: &mut [T],
) {
    let s = &plan.sizes[l];
    let (steps, batch, width) = (plan.steps, plan.batch, plan.width());
    let (m, d, n) = (s.modules, s.d, s.hidden);
    let (hi, dk, dv, hc, dkc, dvc) = (s.hi, s.dk, s.dv, s.hc, s.dkc, s.dvc);
    let (qw, kvw, rw, cw, uw) = (s.qw(), s.kvw(), s.rw(), s.cw(), s.uw());
    let slots = s.slot_widths.len();
    let off = plan.offset(l);
    let g4 = 4 * d;
    let blk = |j: usize, x: usize| ((j * steps + t) * batch) * x..((j * steps + t + 1) * batch) * x;
    let tb = t * batch;
    let one = T::one();

    // Commit and gated update, backwards: ∂ĥ (active) or straight to the previous state.
    // `d_cand_h [M, B, d]` collects ∂h̃; `d_cand_c` ∂c̃.
    let mut d_cand_h = vec![T::zero(); m * batch * d];
    let mut d_cand_c = vec![T::zero(); m * batch * d];
    let d_fg = &mut gr.comm_out[tb * m * 2 * d..(tb + batch) * m * 2 * d];
    for b in 0..batch {
        let row = b * width + off;
        for j in 0..m {
            let is_active = sv.active[(tb + b) * m + j];
            let fg = &sv.comm_out[((tb + b) * m + j) * 2 * d..][..2 * d];
            let dfg = &mut d_fg[(b * m + j) * 2 * d..(b * m + j + 1) * 2 * d];
            for r in 0..d {
                let (dh, dc) = (d_cur[row + j * d + r], d_cur[row + n + j * d + r]);
                if is_active {
                    let (gate, tf) = (sigmoid(fg[d + r]), tanh(fg[r]));
                    dfg[r] = dh * gate * (one - tf * tf);
                    dfg[d + r] = dh * tf * gate * (one - gate);
                    d_cand_h[(j * batch + b) * d + r] = dh;
                    d_cand_c[(j * batch + b) * d + r] = dc;
                } else {
                    d_prev[row + j * d + r] += dh;
                    d_prev[row + n + j * d + r] += dc;
                }
            }
        }
    }

    // Communication attention, backwards.
    let mut d_u = vec![T::zero(); batch * m * uw];
    matmul(&mut d_u, d_fg, &wt.comm_out_w, batch * m, 2 * d, uw);
    let comm_scale = T::from_f64(1.0 / (dkc as f64).sqrt());
    let mut d_scores = vec![T::zero(); m];
    for b in 0..batch {
        let at = |i: usize| ((i * steps + t) * batch + b) * cw;
        for a in 0..hc {
            for j in 0..m {
                let p_row = (((tb + b) * hc + a) * m + j) * m;
                let probs = &sv.comm_probs[p_row..p_row + m];
                let du = &d_u[(b * m + j) * uw + a * dvc..][..dvc];
                let mut weighted = T::zero();
                for i in 0..m {
                    let value = &sv.comm_qkv[at(i) + 2 * hc * dkc + a * dvc..][..dvc];
                    d_scores[i] = dot(du, value);
                    weighted += probs[i] * d_scores[i];
                    let dvalue = &mut gr.comm_qkv[at(i) + 2 * hc * dkc + a * dvc..][..dvc];
                    for (o, &g) in dvalue.iter_mut().zip(du) {
                        *o += probs[i] * g;
                    }
                }
                for i in 0..m {
                    let dlogit = probs[i] * (d_scores[i] - weighted) * comm_scale;
                    let (q0, k0) = (at(j) + a * dkc, at(i) + hc * dkc + a * dkc);
                    for r in 0..dkc {
                        gr.comm_qkv[q0 + r] += dlogit * sv.comm_qkv[k0 + r];
                        gr.comm_qkv[k0 + r] += dlogit * sv.comm_qkv[q0 + r];
                    }
                }
            }
        }
    }

    // Into h̃ only through active modules (spec §4.5), then the LSTM cell backwards.
    let mut d_att = vec![T::zero(); batch * d];
    let mut d_read = vec![T::zero(); m * batch * rw];
    let mut d_hp = vec![T::zero(); m * batch * d];
    for j in 0..m {
        module_matmul(
            &mut d_att,
            &gr.comm_qkv[blk(j, cw)],
            &wt.comm_qkv,
            j,
            (batch, cw, d),
            false,
        );
        let gates = &sv.gates[blk(j, g4)];
        let cand_c = &sv.cand_c[blk(j, d)];
        let cp = &sv.cp[blk(j, d)];
        let d_gates = &mut gr.gates[blk(j, g4)];
        for b in 0..batch {
            let is_active = sv.active[(tb + b) * m + j];
            let g = &gates[b * g4..(b + 1) * g4];
            let dg = &mut d_gates[b * g4..(b + 1) * g4];
            for r in 0..d {
                let mut dh = d_cand_h[(j * batch + b) * d + r];
                if is_active {
                    dh += d_att[b * d + r];
                }
                let (i, f, gg, o) = (g[r], g[d + r], g[2 * d + r], g[3 * d + r]);
                let tc = tanh(cand_c[b * d + r]);
                let dc = d_cand_c[(j * batch + b) * d + r] + dh * o * (one - tc * tc);
                dg[r] = dc * gg * i * (one - i);
                dg[d + r] = dc * cp[b * d + r] * f * (one - f);
                dg[2 * d + r] = dc * i * (one - gg * gg);
                dg[3 * d + r] = dh * tc * o * (one - o);
                d_prev[b * width + off + n + j * d + r] += dc * f;
            }
        }
        let d_gates = &gr.gates[blk(j, g4)];
        let d_read_j = &mut d_read[j * batch * rw..(j + 1) * batch * rw];
        module_matmul(d_read_j, d_gates, &wt.lstm_ih, j, (batch, g4, rw), false);
        let d_hp_j = &mut d_hp[j * batch * d..(j + 1) * batch * d];
        module_matmul(d_hp_j, d_gates, &wt.lstm_hh, j, (batch, g4, d), false);
    }

    // Input attention, backwards (the null slot's key and value are constants).
    let scale = T::from_f64(1.0 / (dk as f64).sqrt());
    let mut d_logits = vec![T::zero(); slots];
    for b in 0..batch {
        for j in 0..m {
            let q_row = ((j * steps + t) * batch + b) * qw;
            for a in 0..hi {
                let p_row = (((tb + b) * hi + a) * m + j) * (slots + 1);
                let probs = &sv.probs[p_row..p_row + slots + 1];
                let dr = &d_read[(j * batch + b) * rw + a * dv..][..dv];
                let mut weighted = T::zero();
                for slot in 0..slots {
                    let v0 = (tb + b) * kvw + hi * dk + a * dv;
                    d_logits[slot] = dot(dr, &sv.slot_kv[slot][v0..v0 + dv]);
                    weighted += probs[slot + 1] * d_logits[slot];
                    let dvalue = &mut gr.slot_kv[slot][v0..v0 + dv];
                    for (o, &g) in dvalue.iter_mut().zip(dr) {
                        *o += probs[slot + 1] * g;
                    }
                }
                for slot in 0..slots {
                    let dlogit = probs[slot + 1] * (d_logits[slot] - weighted) * scale;
                    let k0 = (tb + b) * kvw + a * dk;
                    let q0 = q_row + a * dk;
                    for r in 0..dk {
                        gr.q[q0 + r] += dlogit * sv.slot_kv[slot][k0 + r];
                        gr.slot_kv[slot][k0 + r] += dlogit * sv.q[q0 + r];
                    }
                }
            }
        }
    }
    for j in 0..m {
        let d_hp_j = &mut d_hp[j * batch * d..(j + 1) * batch * d];
        module_matmul(
            d_hp_j,
            &gr.q[blk(j, qw)],
            &wt.inp_q,
            j,
            (batch, qw, d),
            true,
        );
        for b in 0..batch {
            let dst = b * width + off + j * d;
            for r in 0..d {
                d_prev[dst + r] += d_hp[(j * batch + b) * d + r];
            }
        }
    }

    // Slot inputs: the layer below at this step, the top-down source at t − 1.
    for slot in 0..slots {
        if w.slot_kv[slot].is_none() {
            continue;
        }
        let dw = s.slot_widths[slot];
        let mut d_x = vec![T::zero(); batch * dw];
        matmul(
            &mut d_x,
            &gr.slot_kv[slot][tb * kvw..(tb + batch) * kvw],
            &wt.slot_kv[slot],
            batch,
            kvw,
            dw,
        );
        if s.slot_norm {
            let y = &sv.slot_in[slot][tb * dw..(tb + batch) * dw];
            for b in 0..batch {
                let rstd = sv.slot_rstd[slot][tb + b];
                normalise_backward(
                    &mut d_x[b * dw..(b + 1) * dw],
                    &y[b * dw..(b + 1) * dw],
                    rstd,
                );
            }
        }
        let (target, src) = if slot == 0 {
            (&mut *d_cur, plan.offset(l - 1))
        } else {
            let src = s.top_down.expect("a second slot is top-down");
            (&mut *d_prev, plan.offset(src))
        };
        for b in 0..batch {
            for r in 0..dw {
                target[b * width + src + r] += d_x[b * dw + r];
            }
        }
    }
}

/// `Σ_rows a[g]ᵀ · g[g]` for `groups` pairs of `[rows, k]` and `[rows, n]` blocks → `[groups, k, n]`.
fn grouped_at_b<T: Real>(
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
fn grouped_sum<T: Real>(g: &[T], groups: usize, rows: usize, n: usize) -> Vec<T> {
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

fn weight_gradients<T: Real>(
    plan: &Plan,
    saved: &[LayerSaved<T>],
    grads: &[LayerGrads<T>],
) -> Result<Vec<Vec<T>>> {
    let tb = plan.steps * plan.batch;
    let mut out = Vec::new();
    for (l, ((s, sv), gr)) in plan.sizes.iter().zip(saved).zip(grads).enumerate() {
        let (m, d) = (s.modules, s.d);
        out.push(grouped_at_b(&sv.hp, &gr.q, m, tb, d, s.qw())?);
        for (slot, &dw) in s.slot_widths.iter().enumerate() {
            if !(l == 0 && slot == 0) {
                out.push(grouped_at_b(
                    &sv.slot_in[slot],
                    &gr.slot_kv[slot],
                    1,
                    tb,
                    dw,
                    s.kvw(),
                )?);
            }
        }
        out.push(grouped_at_b(&sv.read, &gr.gates, m, tb, s.rw(), 4 * d)?);
        out.push(grouped_at_b(&sv.hp, &gr.gates, m, tb, d, 4 * d)?);
        out.push(grouped_sum(&gr.gates, m, tb, 4 * d));
        out.push(grouped_at_b(&sv.cand_h, &gr.comm_qkv, m, tb, d, s.cw())?);
        out.push(grouped_at_b(
            &sv.comm_read,
            &gr.comm_out,
            1,
            tb * m,
            s.uw(),
            2 * d,
        )?);
        out.push(grouped_sum(&gr.comm_out, 1, tb * m, 2 * d));
    }
    Ok(out)
}

/// Contiguous row ranges splitting `batch` rows over the rayon threads.
fn row_parts(batch: usize) -> Vec<Range<usize>> {
    let parts = rayon::current_num_threads().clamp(1, batch.max(1));
    (0..parts)
        .map(|p| p * batch / parts..(p + 1) * batch / parts)
        .filter(|r| !r.is_empty())
        .collect()
}

/// Rows `rows` of a `[T, B, x]` buffer, as `[T, rows, x]`.
fn gather_rows<T: Copy>(
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
fn scatter_rows<T: Copy>(dst: &mut [T], part: &[T], batch: usize, x: usize, rows: &Range<usize>) {
    let n = rows.len() * x;
    for (t, chunk) in part.chunks(n).enumerate() {
        dst[(t * batch + rows.start) * x..(t * batch + rows.end) * x].copy_from_slice(chunk);
    }
}

/// What [`forward_rows`] kept: each row range with its layers' intermediates.
pub(crate) type RowsSaved<T> = Vec<(Range<usize>, Vec<LayerSaved<T>>)>;

/// [`forward`] with the batch's rows split over the rayon threads.
pub(crate) fn forward_rows<T: Real + Send + Sync>(
    plan: &Plan,
    weights: &[LayerWeights<T>],
    kv0: &[T],
    state0: &[T],
    keep: &[f64],
    tie_break: TieBreak,
) -> (Vec<T>, RowsSaved<T>) {
    let (steps, batch, width) = (plan.steps, plan.batch, plan.width());
    let kvw = plan.sizes[0].kvw();
    // Per row range: its outputs `[T, rows, W]` and what its layers kept.
    type Part<T> = (Range<usize>, Vec<T>, Vec<LayerSaved<T>>);
    let parts: Vec<Part<T>> = row_parts(batch)
        .into_par_iter()
        .map(|rows| {
            let sub = Plan {
                sizes: plan.sizes,
                steps,
                batch: rows.len(),
            };
            let (out, saved) = forward(
                &sub,
                weights,
                &gather_rows(kv0, steps, batch, kvw, &rows),
                &state0[rows.start * width..rows.end * width],
                &gather_rows(keep, steps, batch, 1, &rows),
                tie_break,
            );
            (rows, out, saved)
        })
        .collect();
    let mut out = vec![T::zero(); steps * batch * width];
    let mut saved = Vec::with_capacity(parts.len());
    for (rows, part, part_saved) in parts {
        scatter_rows(&mut out, &part, batch, width, &rows);
        saved.push((rows, part_saved));
    }
    (out, saved)
}

/// `[T, B, M]` of layer `l`'s selection (active mask and null scores) from [`forward_rows`].
pub(crate) fn selection_rows<T>(
    saved: &RowsSaved<T>,
    l: usize,
    steps: usize,
    batch: usize,
    modules: usize,
) -> (Vec<bool>, Vec<f64>) {
    let mut active = vec![false; steps * batch * modules];
    let mut null = vec![0.0; steps * batch * modules];
    for (rows, layers) in saved {
        scatter_rows(&mut active, &layers[l].active, batch, modules, rows);
        scatter_rows(&mut null, &layers[l].null, batch, modules, rows);
    }
    (active, null)
}

/// Layer `l`'s input attention as telemetry sees it: each module's entropy (nats) of its
/// attention over `[null, slots…]` averaged over heads, and the RMS of its read (`[T, B, M]`
/// each); and its head-averaged attention on each real slot (`[T, B, M, S]`: bottom-up, then
/// top-down if any).
pub(crate) fn attention_rows<T: Real>(
    saved: &RowsSaved<T>,
    l: usize,
    s: &LayerSizes,
    steps: usize,
    batch: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (m, hi, rw) = (s.modules, s.hi, s.rw());
    let slots = s.slot_widths.len() + 1;
    let real = slots - 1;
    let mut entropy = vec![0.0; steps * batch * m];
    let mut read_rms = vec![0.0; steps * batch * m];
    let mut slot_attention = vec![0.0; steps * batch * m * real];
    for (rows, layers) in saved {
        let (sv, nb) = (&layers[l], rows.len());
        let mut part_entropy = vec![0.0; steps * nb * m];
        let mut part_rms = vec![0.0; steps * nb * m];
        let mut part_slots = vec![0.0; steps * nb * m * real];
        for t in 0..steps {
            for b in 0..nb {
                for j in 0..m {
                    let mut h = 0.0;
                    for a in 0..hi {
                        let p_row = (((t * nb + b) * hi + a) * m + j) * slots;
                        for (slot, p) in sv.probs[p_row..p_row + slots].iter().enumerate() {
                            let p = p.to_f64();
                            if p > 0.0 {
                                h -= p * p.ln();
                            }
                            if slot > 0 {
                                part_slots[((t * nb + b) * m + j) * real + slot - 1] +=
                                    p / hi as f64;
                            }
                        }
                    }
                    part_entropy[(t * nb + b) * m + j] = h / hi as f64;
                    let r_row = ((j * steps + t) * nb + b) * rw;
                    let sq: f64 = sv.read[r_row..r_row + rw]
                        .iter()
                        .map(|x| x.to_f64() * x.to_f64())
                        .sum();
                    part_rms[(t * nb + b) * m + j] = (sq / rw as f64).sqrt();
                }
            }
        }
        scatter_rows(&mut entropy, &part_entropy, batch, m, rows);
        scatter_rows(&mut read_rms, &part_rms, batch, m, rows);
        scatter_rows(&mut slot_attention, &part_slots, batch, m * real, rows);
    }
    (entropy, read_rms, slot_attention)
}

/// [`backward`] for each row range of [`forward_rows`], in parallel; weight gradients summed.
pub(crate) fn backward_rows<T: Real + Send + Sync>(
    plan: &Plan,
    weights: &[LayerWeights<T>],
    saved: &RowsSaved<T>,
    grad_out: &[T],
    keep: &[f64],
) -> Result<Gradients<T>> {
    let (steps, batch, width) = (plan.steps, plan.batch, plan.width());
    let kvw = plan.sizes[0].kvw();
    // Transposed once, shared by every row range.
    let wts: Vec<LayerWeightsT<T>> = plan
        .sizes
        .iter()
        .zip(weights)
        .map(|(s, w)| transposed(s, w))
        .collect();
    let parts: Vec<(Range<usize>, Gradients<T>)> = saved
        .par_iter()
        .map(|(rows, layers)| {
            let sub = Plan {
                sizes: plan.sizes,
                steps,
                batch: rows.len(),
            };
            let grads = backward(
                &sub,
                weights,
                &wts,
                layers,
                &gather_rows(grad_out, steps, batch, width, rows),
                &gather_rows(keep, steps, batch, 1, rows),
            )?;
            Ok((rows.clone(), grads))
        })
        .collect::<Result<_>>()?;
    let mut total = Gradients {
        weights: vec![],
        kv0: vec![T::zero(); steps * batch * kvw],
        state0: vec![T::zero(); batch * width],
    };
    for (rows, grads) in parts {
        scatter_rows(&mut total.kv0, &grads.kv0, batch, kvw, &rows);
        total.state0[rows.start * width..rows.end * width].copy_from_slice(&grads.state0);
        if total.weights.is_empty() {
            total.weights = grads.weights;
        } else {
            for (sum, part) in total.weights.iter_mut().zip(&grads.weights) {
                for (a, &b) in sum.iter_mut().zip(part) {
                    *a += b;
                }
            }
        }
    }
    Ok(total)
}

/// The sequence pass as a candle op: args `kv0 [T, B, Hi·(dk+dv)]`, the packed weights
/// `[P]` (every weight flattened, in [`weight_lens`] order), `state0 [B, W]`; output
/// `out [T, B, W]`. Gradients flow to all three.
pub(crate) struct BrimsSeqOp {
    pub sizes: Vec<LayerSizes>,
    pub steps: usize,
    pub batch: usize,
    /// `[T, B]` row-major.
    pub keep: Vec<f64>,
    pub tie_break: TieBreak,
    /// What the forward kept (a `RowsSaved` of the op's float type), taken by the backward.
    saved: Mutex<Option<Box<dyn Any + Send>>>,
}

impl BrimsSeqOp {
    pub fn new(
        sizes: Vec<LayerSizes>,
        steps: usize,
        batch: usize,
        keep: Vec<f64>,
        tie_break: TieBreak,
    ) -> Self {
        BrimsSeqOp {
            sizes,
            steps,
            batch,
            keep,
            tie_break,
            saved: Mutex::new(None),
        }
    }

    fn plan(&self) -> Plan<'_> {
        Plan {
            sizes: &self.sizes,
            steps: self.steps,
            batch: self.batch,
        }
    }

    /// Splits the packed weights into per-weight slices.
    fn split<'a, T>(&self, packed: &'a [T]) -> Result<Vec<&'a [T]>> {
        let lens: Vec<usize> = self
            .sizes
            .iter()
            .enumerate()
            .flat_map(|(l, s)| weight_lens(l, s))
            .collect();
        if lens.iter().sum::<usize>() != packed.len() {
            bail!(
                "brims_seq: {} packed weights, the layers take {}",
                packed.len(),
                lens.iter().sum::<usize>()
            );
        }
        let mut rest = packed;
        Ok(lens
            .iter()
            .map(|&len| {
                let (head, tail) = rest.split_at(len);
                rest = tail;
                head
            })
            .collect())
    }

    fn check(&self, kv0: usize, state0: usize) -> Result<()> {
        let plan = self.plan();
        let want_kv0 = self.steps * self.batch * self.sizes[0].kvw();
        let want_state = self.batch * plan.width();
        if kv0 != want_kv0 || state0 != want_state || self.keep.len() != self.steps * self.batch {
            bail!(
                "brims_seq: kv0 has {kv0} values (expected {want_kv0}), state0 {state0} \
                 (expected {want_state}), keep {} (expected {})",
                self.keep.len(),
                self.steps * self.batch
            );
        }
        Ok(())
    }

    fn fwd_typed<T: Real + Send + Sync + 'static>(
        &self,
        kv0: &[T],
        packed: &[T],
        state0: &[T],
    ) -> Result<Vec<T>> {
        self.check(kv0.len(), state0.len())?;
        let slices = self.split(packed)?;
        let weights = layer_weights(&self.sizes, &slices)?;
        let (out, saved) = forward_rows(
            &self.plan(),
            &weights,
            kv0,
            state0,
            &self.keep,
            self.tie_break,
        );
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(saved));
        Ok(out)
    }

    fn bwd_typed<T: Real + Send + Sync + 'static>(
        &self,
        kv0: &Tensor,
        packed: &Tensor,
        state0: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed_v = packed.flatten_all()?.to_vec1::<T>()?;
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner()).take();
        let saved = match saved.and_then(|s| s.downcast::<RowsSaved<T>>().ok()) {
            Some(saved) => *saved,
            // Only when one graph is differentiated twice: recompute.
            None => {
                let kv0_v = kv0.flatten_all()?.to_vec1::<T>()?;
                let state0_v = state0.flatten_all()?.to_vec1::<T>()?;
                let slices = self.split(&packed_v)?;
                let weights = layer_weights(&self.sizes, &slices)?;
                forward_rows(
                    &self.plan(),
                    &weights,
                    &kv0_v,
                    &state0_v,
                    &self.keep,
                    self.tie_break,
                )
                .1
            }
        };
        let grad = grad_res.flatten_all()?.to_vec1::<T>()?;
        let slices = self.split(&packed_v)?;
        let weights = layer_weights(&self.sizes, &slices)?;
        let grads = backward_rows(&self.plan(), &weights, &saved, &grad, &self.keep)?;
        let dev = kv0.device();
        let d_packed: Vec<T> = grads.weights.into_iter().flatten().collect();
        Ok((
            Some(Tensor::from_vec(grads.kv0, kv0.shape(), dev)?),
            Some(Tensor::from_vec(d_packed, packed.shape(), dev)?),
            Some(Tensor::from_vec(grads.state0, state0.shape(), dev)?),
        ))
    }
}

impl CustomOp3 for BrimsSeqOp {
    fn name(&self) -> &'static str {
        "brims-seq"
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
        let shape = Shape::from((self.steps, self.batch, self.plan().width()));
        let storage = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(self.fwd_typed::<f32>(
                    contiguous_slice(s1, l1)?,
                    contiguous_slice(s2, l2)?,
                    contiguous_slice(s3, l3)?,
                )?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(self.fwd_typed::<f64>(
                    contiguous_slice(s1, l1)?,
                    contiguous_slice(s2, l2)?,
                    contiguous_slice(s3, l3)?,
                )?)
            }
            _ => bail!(
                "brims_seq: needs f32 or f64 inputs of one dtype, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((storage, shape))
    }

    fn bwd(
        &self,
        kv0: &Tensor,
        packed: &Tensor,
        state0: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match kv0.dtype() {
            DType::F32 => self.bwd_typed::<f32>(kv0, packed, state0, grad_res),
            DType::F64 => self.bwd_typed::<f64>(kv0, packed, state0, grad_res),
            dt => bail!("brims_seq: no backward for {dt:?}"),
        }
    }
}
