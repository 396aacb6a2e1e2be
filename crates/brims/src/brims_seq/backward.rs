//! BPTT through [`super::forward`], one function per spec section in reverse order (see the
//! table in the [module docs](super)). Per step, the layers run top to bottom; each section
//! turns the gradient of what it produced into gradients of its inputs, and stores the
//! per-step gradients of its projections ([`LayerGrads`]) for the weight gradients, formed once
//! at the end with one batched matmul per weight.

use candle_core::Result;

use super::math::{dot, grouped_at_b, grouped_sum, matmul, module_matmul, normalise_backward};
use super::weights::LayerWeightsT;
use super::{Gradients, LayerSaved, Plan, Step};
use crate::kernels::{sigmoid, tanh, Real};
use crate::sizes::LayerSizes;

/// Per-step gradients of one layer's projections over all `T` steps, kept for the weight
/// gradients.
struct LayerGrads<T> {
    /// `[M, T, B, Hi·dk]` input-attention queries.
    query: Vec<T>,
    /// Per real slot `[T, B, Hi·(dk + dv)]` keys and values.
    slot_kv: Vec<Vec<T>>,
    /// `[M, T, B, 4d]` gate pre-activations.
    gates: Vec<T>,
    /// `[M, T, B, Hc·(2dk + dv)]` communication queries, keys, values.
    comm_qkv: Vec<T>,
    /// `[T, B, M, 2d]` pre-activations of `fc` and `gate_fc`.
    fc_gate: Vec<T>,
}

impl<T: Real> LayerGrads<T> {
    fn new(s: &LayerSizes, steps: usize, batch: usize) -> Self {
        let rows = steps * batch;
        let per_module = |width: usize| vec![T::zero(); s.modules * rows * width];
        LayerGrads {
            query: per_module(s.query_width()),
            slot_kv: (0..s.slots())
                .map(|_| vec![T::zero(); rows * s.slot_kv_width()])
                .collect(),
            gates: per_module(s.gate_width()),
            comm_qkv: per_module(s.comm_qkv_width()),
            fc_gate: vec![T::zero(); rows * s.modules * 2 * s.module_size],
        }
    }
}

/// Gradients inside one layer's step, passed from one section's backward to the next;
/// module-major `[M, B, x]`.
struct StepGrads<T> {
    /// `∂h̃`: from the commit, plus (active modules) the communication's.
    cand_h: Vec<T>,
    /// `∂c̃`: from the commit.
    cand_c: Vec<T>,
    /// `∂read`: from the module LSTMs.
    read: Vec<T>,
    /// `∂h_prev` through the LSTMs' recurrent weights and the input-attention queries.
    prev_h: Vec<T>,
}

impl<T: Real> StepGrads<T> {
    fn new(s: &LayerSizes, batch: usize) -> Self {
        let per_module = |width: usize| vec![T::zero(); s.modules * batch * width];
        StepGrads {
            cand_h: per_module(s.module_size),
            cand_c: per_module(s.module_size),
            read: per_module(s.read_width()),
            prev_h: per_module(s.module_size),
        }
    }
}

/// BPTT through [`super::forward::forward`] (spec §4.7 backwards: steps last to first, layers top
/// to bottom; the reset mask cuts the gradient into the state before an episode start).
/// `grad_out [T, B, W]` is the loss gradient w.r.t. `out`; `transposed` the layers' weights
/// transposed.
pub(super) fn backward<T: Real>(
    plan: &Plan,
    transposed: &[LayerWeightsT<T>],
    saved: &[LayerSaved<T>],
    grad_out: &[T],
    keep: &[f64],
) -> Result<Gradients<T>> {
    let (steps, batch, width) = (plan.steps, plan.batch, plan.width());
    let mut grads: Vec<LayerGrads<T>> = plan
        .sizes
        .iter()
        .map(|s| LayerGrads::new(s, steps, batch))
        .collect();
    // ∂loss/∂out[t] arriving from step t + 1 (already through its reset mask).
    let mut carry = vec![T::zero(); batch * width];
    // ∂loss/∂(state after step t), and ∂loss/∂(state before step t, unmasked).
    let mut d_cur = vec![T::zero(); batch * width];
    let mut d_prev = vec![T::zero(); batch * width];
    for t in (0..steps).rev() {
        for (i, dc) in d_cur.iter_mut().enumerate() {
            *dc = grad_out[t * batch * width + i] + carry[i];
        }
        d_prev.fill(T::zero());
        for l in (0..plan.sizes.len()).rev() {
            let at = Step::new(plan, l, t);
            let (wt, sv, gr) = (&transposed[l], &saved[l], &mut grads[l]);
            let mut step = StepGrads::new(at.sizes, batch);
            commit_backward(&at, sv, gr, &d_cur, &mut d_prev, &mut step);
            communication_backward(&at, wt, sv, gr, &mut step);
            module_lstms_backward(&at, wt, sv, gr, &mut d_prev, &mut step);
            input_attention_backward(&at, wt, sv, gr, &mut d_prev, &mut step);
            slot_keys_values_backward(&at, wt, sv, gr, &mut d_cur, &mut d_prev);
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

/// Spec §4.6 (and `ĥ = h̃ + Δ` of §4.5) backwards: an active module's `∂h` goes to `∂h̃` and to
/// `Δ`'s pre-activations, its `∂c` to `∂c̃`; an inactive module's go straight to the previous
/// state. Forward: [`forward::commit`](super::forward::commit).
fn commit_backward<T: Real>(
    at: &Step,
    sv: &LayerSaved<T>,
    gr: &mut LayerGrads<T>,
    d_cur: &[T],
    d_prev: &mut [T],
    step: &mut StepGrads<T>,
) {
    let s = at.sizes;
    let (batch, m, d, n) = (at.plan.batch, s.modules, s.module_size, s.hidden);
    let (width, off) = (at.plan.width(), at.state_offset());
    let one = T::one();
    let d_fc_gate = &mut gr.fc_gate[at.step_block(m * 2 * d)];
    for b in 0..batch {
        let state = b * width + off;
        let row = at.row(b);
        for j in 0..m {
            let is_active = sv.active[row * m + j];
            let fc_gate = &sv.fc_gate[(row * m + j) * 2 * d..][..2 * d];
            let d_fg = &mut d_fc_gate[(b * m + j) * 2 * d..(b * m + j + 1) * 2 * d];
            for r in 0..d {
                let (dh, dc) = (d_cur[state + j * d + r], d_cur[state + n + j * d + r]);
                if is_active {
                    let (gate, tf) = (sigmoid(fc_gate[d + r]), tanh(fc_gate[r]));
                    d_fg[r] = dh * gate * (one - tf * tf);
                    d_fg[d + r] = dh * tf * gate * (one - gate);
                    step.cand_h[(j * batch + b) * d + r] = dh;
                    step.cand_c[(j * batch + b) * d + r] = dc;
                } else {
                    d_prev[state + j * d + r] += dh;
                    d_prev[state + n + j * d + r] += dc;
                }
            }
        }
    }
}

/// Spec §4.5 backwards: from `Δ`'s pre-activations through `fc`/`gate_fc` to the reads `u`,
/// through the attention to every module's queries, keys and values, and from those to `∂h̃`
/// of the active modules only (the reference masks the gradient entering the attention).
/// Forward: [`forward::communication`](super::forward::communication).
fn communication_backward<T: Real>(
    at: &Step,
    wt: &LayerWeightsT<T>,
    sv: &LayerSaved<T>,
    gr: &mut LayerGrads<T>,
    step: &mut StepGrads<T>,
) {
    let s = at.sizes;
    let (batch, m, d) = (at.plan.batch, s.modules, s.module_size);
    let (heads, key, value) = (s.comm_heads, s.comm_key, s.comm_value);
    let (qkv_width, read_width) = (s.comm_qkv_width(), s.comm_read_width());
    let mut d_read = vec![T::zero(); batch * m * read_width];
    let d_fc_gate = &gr.fc_gate[at.step_block(m * 2 * d)];
    matmul(
        &mut d_read,
        d_fc_gate,
        &wt.comm_out_w,
        batch * m,
        2 * d,
        read_width,
    );
    let (keys, values) = (heads * key, 2 * heads * key);
    let scale = T::from_f64(1.0 / (key as f64).sqrt());
    let mut d_scores = vec![T::zero(); m];
    for b in 0..batch {
        let row = at.row(b);
        let qkv_row = |i: usize| at.module_row(i, b) * qkv_width;
        for a in 0..heads {
            for j in 0..m {
                let probs_row = ((row * heads + a) * m + j) * m;
                let probs = &sv.comm_probs[probs_row..probs_row + m];
                let du = &d_read[(b * m + j) * read_width + a * value..][..value];
                let mut weighted = T::zero();
                for i in 0..m {
                    let v0 = qkv_row(i) + values + a * value;
                    d_scores[i] = dot(du, &sv.comm_qkv[v0..v0 + value]);
                    weighted += probs[i] * d_scores[i];
                    for (o, &g) in gr.comm_qkv[v0..v0 + value].iter_mut().zip(du) {
                        *o += probs[i] * g;
                    }
                }
                for i in 0..m {
                    let d_logit = probs[i] * (d_scores[i] - weighted) * scale;
                    let (q0, k0) = (qkv_row(j) + a * key, qkv_row(i) + keys + a * key);
                    for r in 0..key {
                        gr.comm_qkv[q0 + r] += d_logit * sv.comm_qkv[k0 + r];
                        gr.comm_qkv[k0 + r] += d_logit * sv.comm_qkv[q0 + r];
                    }
                }
            }
        }
    }
    let mut d_att = vec![T::zero(); batch * d];
    for j in 0..m {
        let d_qkv = &gr.comm_qkv[at.module_block(j, qkv_width)];
        module_matmul(
            &mut d_att,
            d_qkv,
            &wt.comm_qkv,
            j,
            (batch, qkv_width, d),
            false,
        );
        for b in 0..batch {
            if sv.active[at.row(b) * m + j] {
                let dst = &mut step.cand_h[(j * batch + b) * d..][..d];
                for (o, &g) in dst.iter_mut().zip(&d_att[b * d..(b + 1) * d]) {
                    *o += g;
                }
            }
        }
    }
}

/// Spec §4.4 backwards: from `∂h̃`, `∂c̃` through the cell to the gate pre-activations (kept),
/// the previous `c` (into `d_prev`), and through the gates' weights to `∂read` and `∂h_prev`.
/// Forward: [`forward::module_lstms`](super::forward::module_lstms).
fn module_lstms_backward<T: Real>(
    at: &Step,
    wt: &LayerWeightsT<T>,
    sv: &LayerSaved<T>,
    gr: &mut LayerGrads<T>,
    d_prev: &mut [T],
    step: &mut StepGrads<T>,
) {
    let s = at.sizes;
    let (batch, m, d, n) = (at.plan.batch, s.modules, s.module_size, s.hidden);
    let (gate_width, read_width) = (s.gate_width(), s.read_width());
    let (width, off) = (at.plan.width(), at.state_offset());
    let one = T::one();
    for j in 0..m {
        let gates = &sv.gates[at.module_block(j, gate_width)];
        let cand_c = &sv.cand_c[at.module_block(j, d)];
        let prev_c = &sv.prev_c[at.module_block(j, d)];
        let d_gates = &mut gr.gates[at.module_block(j, gate_width)];
        for b in 0..batch {
            let g = &gates[b * gate_width..(b + 1) * gate_width];
            let dg = &mut d_gates[b * gate_width..(b + 1) * gate_width];
            for r in 0..d {
                let dh = step.cand_h[(j * batch + b) * d + r];
                let (i, f, gg, o) = (g[r], g[d + r], g[2 * d + r], g[3 * d + r]);
                let tc = tanh(cand_c[b * d + r]);
                let dc = step.cand_c[(j * batch + b) * d + r] + dh * o * (one - tc * tc);
                dg[r] = dc * gg * i * (one - i);
                dg[d + r] = dc * prev_c[b * d + r] * f * (one - f);
                dg[2 * d + r] = dc * i * (one - gg * gg);
                dg[3 * d + r] = dh * tc * o * (one - o);
                d_prev[b * width + off + n + j * d + r] += dc * f;
            }
        }
        let d_gates = &gr.gates[at.module_block(j, gate_width)];
        let d_read = &mut step.read[j * batch * read_width..(j + 1) * batch * read_width];
        module_matmul(
            d_read,
            d_gates,
            &wt.lstm_ih,
            j,
            (batch, gate_width, read_width),
            false,
        );
        let d_prev_h = &mut step.prev_h[j * batch * d..(j + 1) * batch * d];
        module_matmul(
            d_prev_h,
            d_gates,
            &wt.lstm_hh,
            j,
            (batch, gate_width, d),
            false,
        );
    }
}

/// Spec §4.2 backwards: from `∂read` through the attention to the slots' keys and values and
/// the queries (the null slot's key and value are constants), then through the query weights
/// to `∂h_prev`, which (with the LSTMs' part) goes into `d_prev`.
/// Forward: [`forward::input_attention`](super::forward::input_attention).
fn input_attention_backward<T: Real>(
    at: &Step,
    wt: &LayerWeightsT<T>,
    sv: &LayerSaved<T>,
    gr: &mut LayerGrads<T>,
    d_prev: &mut [T],
    step: &mut StepGrads<T>,
) {
    let s = at.sizes;
    let (batch, m, d) = (at.plan.batch, s.modules, s.module_size);
    let (heads, key, value) = (s.input_heads, s.input_key, s.input_value);
    let (query_width, kv_width, read_width) = (s.query_width(), s.slot_kv_width(), s.read_width());
    let slots = s.slots();
    let (width, off) = (at.plan.width(), at.state_offset());
    let scale = T::from_f64(1.0 / (key as f64).sqrt());
    let mut d_logits = vec![T::zero(); slots];
    for b in 0..batch {
        let row = at.row(b);
        for j in 0..m {
            let query_row = at.module_row(j, b) * query_width;
            for a in 0..heads {
                let probs_row = ((row * heads + a) * m + j) * (slots + 1);
                let probs = &sv.input_probs[probs_row..probs_row + slots + 1];
                let d_read = &step.read[(j * batch + b) * read_width + a * value..][..value];
                let mut weighted = T::zero();
                for slot in 0..slots {
                    let v0 = row * kv_width + heads * key + a * value;
                    d_logits[slot] = dot(d_read, &sv.slot_kv[slot][v0..v0 + value]);
                    weighted += probs[slot + 1] * d_logits[slot];
                    let d_value = &mut gr.slot_kv[slot][v0..v0 + value];
                    for (o, &g) in d_value.iter_mut().zip(d_read) {
                        *o += probs[slot + 1] * g;
                    }
                }
                for slot in 0..slots {
                    let d_logit = probs[slot + 1] * (d_logits[slot] - weighted) * scale;
                    let k0 = row * kv_width + a * key;
                    let q0 = query_row + a * key;
                    for r in 0..key {
                        gr.query[q0 + r] += d_logit * sv.slot_kv[slot][k0 + r];
                        gr.slot_kv[slot][k0 + r] += d_logit * sv.query[q0 + r];
                    }
                }
            }
        }
    }
    for j in 0..m {
        let d_prev_h = &mut step.prev_h[j * batch * d..(j + 1) * batch * d];
        let d_query = &gr.query[at.module_block(j, query_width)];
        module_matmul(
            d_prev_h,
            d_query,
            &wt.inp_q,
            j,
            (batch, query_width, d),
            true,
        );
        for b in 0..batch {
            let dst = b * width + off + j * d;
            for r in 0..d {
                d_prev[dst + r] += d_prev_h[b * d + r];
            }
        }
    }
}

/// Spec §4.1 backwards: from the slots' keys and values through their projections (and the
/// normalisation) to the slot inputs: the layer below at this step (into `d_cur`, before that
/// layer runs its backward) and the top-down source before the step (into `d_prev`). Layer 0's
/// bottom-up keys and values keep their gradient (`kv0`'s).
/// Forward: [`forward::slot_keys_values`](super::forward::slot_keys_values).
fn slot_keys_values_backward<T: Real>(
    at: &Step,
    wt: &LayerWeightsT<T>,
    sv: &LayerSaved<T>,
    gr: &LayerGrads<T>,
    d_cur: &mut [T],
    d_prev: &mut [T],
) {
    let s = at.sizes;
    let (batch, width) = (at.plan.batch, at.plan.width());
    let kv_width = s.slot_kv_width();
    for slot in 0..s.slots() {
        if wt.slot_kv[slot].is_empty() {
            continue; // projected outside: `kv0`
        }
        let slot_width = s.slot_widths[slot];
        let mut d_x = vec![T::zero(); batch * slot_width];
        let d_kv = &gr.slot_kv[slot][at.step_block(kv_width)];
        matmul(
            &mut d_x,
            d_kv,
            &wt.slot_kv[slot],
            batch,
            kv_width,
            slot_width,
        );
        if s.slot_norm {
            let y = &sv.slot_inputs[slot][at.step_block(slot_width)];
            for b in 0..batch {
                let rstd = sv.slot_rstd[slot][at.row(b)];
                let rows = b * slot_width..(b + 1) * slot_width;
                normalise_backward(&mut d_x[rows.clone()], &y[rows], rstd);
            }
        }
        let (target, src) = if slot == 0 {
            (&mut *d_cur, at.plan.offset(at.layer - 1))
        } else {
            let src = s.top_down.expect("a second slot is top-down");
            (&mut *d_prev, at.plan.offset(src))
        };
        for b in 0..batch {
            for r in 0..slot_width {
                target[b * width + src + r] += d_x[b * slot_width + r];
            }
        }
    }
}

/// Every weight's gradient from the per-step gradients of its projection and the saved inputs
/// of that projection, one batched matmul over all steps each, in
/// [`super::weights::weight_lens`] order.
fn weight_gradients<T: Real>(
    plan: &Plan,
    saved: &[LayerSaved<T>],
    grads: &[LayerGrads<T>],
) -> Result<Vec<Vec<T>>> {
    let rows = plan.steps * plan.batch;
    let mut out = Vec::new();
    for (l, ((s, sv), gr)) in plan.sizes.iter().zip(saved).zip(grads).enumerate() {
        let (m, d) = (s.modules, s.module_size);
        out.push(grouped_at_b(
            &sv.prev_h,
            &gr.query,
            m,
            rows,
            d,
            s.query_width(),
        )?);
        for (slot, &slot_width) in s.slot_widths.iter().enumerate() {
            if !(l == 0 && slot == 0) {
                out.push(grouped_at_b(
                    &sv.slot_inputs[slot],
                    &gr.slot_kv[slot],
                    1,
                    rows,
                    slot_width,
                    s.slot_kv_width(),
                )?);
            }
        }
        let gate_width = s.gate_width();
        out.push(grouped_at_b(
            &sv.read,
            &gr.gates,
            m,
            rows,
            s.read_width(),
            gate_width,
        )?);
        out.push(grouped_at_b(&sv.prev_h, &gr.gates, m, rows, d, gate_width)?);
        out.push(grouped_sum(&gr.gates, m, rows, gate_width));
        out.push(grouped_at_b(
            &sv.cand_h,
            &gr.comm_qkv,
            m,
            rows,
            d,
            s.comm_qkv_width(),
        )?);
        out.push(grouped_at_b(
            &sv.comm_read,
            &gr.fc_gate,
            1,
            rows * m,
            s.comm_read_width(),
            2 * d,
        )?);
        out.push(grouped_sum(&gr.fc_gate, 1, rows * m, 2 * d));
    }
    Ok(out)
}
