//! The forward pass over `T` steps, one function per spec section (see the table in the
//! [module docs](super)). Each takes the layer's step ([`Step`]), reads what the earlier sections
//! left in the layer's [`LayerSaved`], and writes its own part there.

use super::math::{dot, matmul, module_matmul, normalise, softmax};
use super::weights::LayerWeights;
use super::{LayerSaved, Plan, Step};
use crate::config::TieBreak;
use crate::kernels::{gemm_acc, sigmoid, tanh, Real};
use crate::topk::active_modules;

/// The forward pass over `T` steps (spec §4.7): at every step the layers run bottom to top, so
/// layer `l ≥ 1` reads the layer below at this step. `kv0 [T, B, Hi·(dk+dv)]` is layer 0's
/// projected bottom-up keys and values, `state0 [B, W]` the state before step 0, `keep [T, B]`
/// 0 where an episode starts (the state is zeroed before that step). Returns `out [T, B, W]`,
/// the committed state of every layer after every step, and what each layer kept.
/// Reference: [`Brims::step_layers`](crate::brims::Brims::step_layers).
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
        .map(|(l, s)| LayerSaved::new(l, s, steps, batch))
        .collect();
    for t in 0..steps {
        for (l, sv) in saved.iter_mut().enumerate() {
            let at = Step::new(plan, l, t);
            let w = &weights[l];
            mask_previous_state(&at, &out, state0, keep, sv);
            slot_keys_values(&at, w, kv0, &out, state0, keep, sv);
            input_attention(&at, w, sv);
            select_active(&at, tie_break, sv);
            module_lstms(&at, w, sv);
            communication(&at, w, sv);
            commit(&at, sv, &mut out);
        }
    }
    (out, saved)
}

/// Row `b` of the state before step `t` (unmasked): `state0` at `t = 0`, else `out[t − 1]`.
fn prev_row<'a, T>(out: &'a [T], state0: &'a [T], at: &Step) -> impl Fn(usize) -> &'a [T] {
    let (t, batch, width) = (at.t, at.plan.batch, at.plan.width());
    move |b| {
        if t == 0 {
            &state0[b * width..(b + 1) * width]
        } else {
            let row = ((t - 1) * batch + b) * width;
            &out[row..row + width]
        }
    }
}

/// The layer's state before the step, reset-masked (zero where an episode starts), into the
/// module-major `prev_h` and `prev_c` (spec §4.7: the state carried between steps).
/// Reference: the mask [`CoreState::masked`](crate::core::CoreState::masked) applies before a
/// reference step.
pub(crate) fn mask_previous_state<T: Real>(
    at: &Step,
    out: &[T],
    state0: &[T],
    keep: &[f64],
    sv: &mut LayerSaved<T>,
) {
    let s = at.sizes;
    let (m, d, n) = (s.modules, s.module_size, s.hidden);
    let off = at.state_offset();
    let prev = prev_row(out, state0, at);
    for b in 0..at.plan.batch {
        let k = T::from_f64(keep[at.row(b)]);
        let prev = prev(b);
        for j in 0..m {
            let dst = at.module_row(j, b) * d;
            for r in 0..d {
                sv.prev_h[dst + r] = k * prev[off + j * d + r];
                sv.prev_c[dst + r] = k * prev[off + n + j * d + r];
            }
        }
    }
}

/// Spec §4.1, input slots: each real slot's input (bottom-up: the layer below at this step,
/// committed; top-down: the source layer's `h` before the step, masked like every previous
/// state), normalised with `slot_norm`, projected to its keys and values. Layer 0's bottom-up
/// keys and values arrive projected (`kv0`).
/// Reference: [`Brims::slot_keys_values`](crate::brims::Brims::slot_keys_values).
pub(crate) fn slot_keys_values<T: Real>(
    at: &Step,
    w: &LayerWeights<T>,
    kv0: &[T],
    out: &[T],
    state0: &[T],
    keep: &[f64],
    sv: &mut LayerSaved<T>,
) {
    let s = at.sizes;
    let (batch, width) = (at.plan.batch, at.plan.width());
    let kv_width = s.slot_kv_width();
    let prev = prev_row(out, state0, at);
    for slot in 0..s.slots() {
        let kv = &mut sv.slot_kv[slot][at.step_block(kv_width)];
        let Some(w_kv) = w.slot_kv[slot] else {
            kv.copy_from_slice(&kv0[at.step_block(kv_width)]);
            continue;
        };
        let slot_width = s.slot_widths[slot];
        let x = &mut sv.slot_inputs[slot][at.step_block(slot_width)];
        for b in 0..batch {
            let dst = &mut x[b * slot_width..(b + 1) * slot_width];
            if slot == 0 {
                // Bottom-up: the layer below at this step, committed.
                let src = at.row(b) * width + at.plan.offset(at.layer - 1);
                dst.copy_from_slice(&out[src..src + slot_width]);
            } else {
                // Top-down: the source layer before this step, masked like every previous state.
                let src = at
                    .plan
                    .offset(s.top_down.expect("a second slot is top-down"));
                let k = T::from_f64(keep[at.row(b)]);
                for (o, &v) in dst.iter_mut().zip(&prev(b)[src..src + slot_width]) {
                    *o = k * v;
                }
            }
            if s.slot_norm {
                sv.slot_rstd[slot][at.row(b)] = normalise(dst);
            }
        }
        matmul(kv, x, w_kv, batch, slot_width, kv_width);
    }
}

/// Spec §4.2, input attention: each module's queries from its previous `h`, per head a softmax
/// over `[null, slots…]` (the null slot's key and value are exactly zero, so its logit is 0 and
/// it adds nothing to the read), the read `Σ_s α_s ν_s` (heads in order), and the head-averaged
/// null attention the selection uses.
/// Reference: [`Brims::input_attention`](crate::brims::Brims::input_attention).
pub(crate) fn input_attention<T: Real>(at: &Step, w: &LayerWeights<T>, sv: &mut LayerSaved<T>) {
    let s = at.sizes;
    let (batch, m, d) = (at.plan.batch, s.modules, s.module_size);
    let (heads, key, value) = (s.input_heads, s.input_key, s.input_value);
    let (query_width, kv_width, read_width) = (s.query_width(), s.slot_kv_width(), s.read_width());
    let slots = s.slots();
    for j in 0..m {
        let prev_h = &sv.prev_h[at.module_block(j, d)];
        let query = &mut sv.query[at.module_block(j, query_width)];
        module_matmul(query, prev_h, w.inp_q, j, (batch, d, query_width), false);
    }
    let scale = T::from_f64(1.0 / (key as f64).sqrt());
    let inv_heads = T::from_f64(1.0 / heads as f64);
    let mut logits = vec![T::zero(); slots + 1];
    for b in 0..batch {
        let row = at.row(b);
        for j in 0..m {
            let query_row = at.module_row(j, b) * query_width;
            let read_row = at.module_row(j, b) * read_width;
            let mut null = T::zero();
            for a in 0..heads {
                let query = &sv.query[query_row + a * key..][..key];
                logits[0] = T::zero();
                for slot in 0..slots {
                    let slot_key = &sv.slot_kv[slot][row * kv_width + a * key..][..key];
                    logits[slot + 1] = dot(query, slot_key) * scale;
                }
                softmax(&mut logits);
                let probs_row = ((row * heads + a) * m + j) * (slots + 1);
                sv.input_probs[probs_row..probs_row + slots + 1].copy_from_slice(&logits);
                null += logits[0];
                let read = &mut sv.read[read_row + a * value..][..value];
                read.fill(T::zero());
                for slot in 0..slots {
                    let p = logits[slot + 1];
                    let values = &sv.slot_kv[slot][row * kv_width + heads * key + a * value..];
                    for (r, &v) in read.iter_mut().zip(&values[..value]) {
                        *r += p * v;
                    }
                }
            }
            sv.null[row * m + j] = (null * inv_heads).to_f64();
        }
    }
}

/// Spec §4.3, selection: per env, the `M − k` modules with the largest null attention are
/// inactive (ties broken by `tie_break`). The mask carries no gradient.
/// Reference: [`Brims::select_active`](crate::brims::Brims::select_active).
pub(crate) fn select_active<T>(at: &Step, tie_break: TieBreak, sv: &mut LayerSaved<T>) {
    let m = at.sizes.modules;
    for b in 0..at.plan.batch {
        let row = at.row(b) * m;
        let chosen = active_modules(&sv.null[row..row + m], at.sizes.active, tie_break);
        sv.active[row..row + m].copy_from_slice(&chosen);
    }
}

/// Spec §4.4, the module LSTMs, for every module (inactive ones too: their candidates are keys
/// and values of the communication): gates `i, f, g, o` from the read and the previous `h`,
/// then `c̃ = σ(f)·c + σ(i)·tanh(g)`, `h̃ = σ(o)·tanh(c̃)`.
/// Reference: [`Brims::module_lstms`](crate::brims::Brims::module_lstms).
pub(crate) fn module_lstms<T: Real>(at: &Step, w: &LayerWeights<T>, sv: &mut LayerSaved<T>) {
    let s = at.sizes;
    let (batch, d) = (at.plan.batch, s.module_size);
    let (gate_width, read_width) = (s.gate_width(), s.read_width());
    for j in 0..s.modules {
        let gates = &mut sv.gates[at.module_block(j, gate_width)];
        let bias = &w.lstm_b[j * gate_width..(j + 1) * gate_width];
        for row in gates.chunks_mut(gate_width) {
            row.copy_from_slice(bias);
        }
        let read = &sv.read[at.module_block(j, read_width)];
        module_matmul(
            gates,
            read,
            w.lstm_ih,
            j,
            (batch, read_width, gate_width),
            true,
        );
        let prev_h = &sv.prev_h[at.module_block(j, d)];
        module_matmul(gates, prev_h, w.lstm_hh, j, (batch, d, gate_width), true);
        let prev_c = &sv.prev_c[at.module_block(j, d)];
        let cand_c = &mut sv.cand_c[at.module_block(j, d)];
        let cand_h = &mut sv.cand_h[at.module_block(j, d)];
        for b in 0..batch {
            let g = &mut gates[b * gate_width..(b + 1) * gate_width];
            for r in 0..d {
                let i = sigmoid(g[r]);
                let f = sigmoid(g[d + r]);
                let gg = tanh(g[2 * d + r]);
                let o = sigmoid(g[3 * d + r]);
                let c = f * prev_c[b * d + r] + i * gg;
                cand_c[b * d + r] = c;
                cand_h[b * d + r] = o * tanh(c);
                (g[r], g[d + r], g[2 * d + r], g[3 * d + r]) = (i, f, gg, o);
            }
        }
    }
}

/// Spec §4.5, communication: queries, keys and values from every module's candidate `h̃`, per
/// head a softmax over all modules, the read `u_j`, and the pre-activations of `fc(u_j)` and
/// `gate_fc(u_j)`. The update `Δ = σ(gate_fc)·tanh(fc)` is applied where it is used, in
/// [`commit`]. Reference: [`Brims::communication`](crate::brims::Brims::communication).
pub(crate) fn communication<T: Real>(at: &Step, w: &LayerWeights<T>, sv: &mut LayerSaved<T>) {
    let s = at.sizes;
    let (batch, m, d) = (at.plan.batch, s.modules, s.module_size);
    let (heads, key, value) = (s.comm_heads, s.comm_key, s.comm_value);
    let (qkv_width, read_width) = (s.comm_qkv_width(), s.comm_read_width());
    for j in 0..m {
        let cand_h = &sv.cand_h[at.module_block(j, d)];
        let qkv = &mut sv.comm_qkv[at.module_block(j, qkv_width)];
        module_matmul(qkv, cand_h, w.comm_qkv, j, (batch, d, qkv_width), false);
    }
    // In a module's q|k|v row: queries (all heads), keys (all heads), values (all heads).
    let (keys, values) = (heads * key, 2 * heads * key);
    let scale = T::from_f64(1.0 / (key as f64).sqrt());
    let mut scores = vec![T::zero(); m];
    for b in 0..batch {
        let row = at.row(b);
        let qkv = |i: usize| &sv.comm_qkv[at.module_row(i, b) * qkv_width..][..qkv_width];
        for a in 0..heads {
            for j in 0..m {
                let query = &qkv(j)[a * key..(a + 1) * key];
                for (i, score) in scores.iter_mut().enumerate() {
                    *score = dot(query, &qkv(i)[keys + a * key..keys + (a + 1) * key]) * scale;
                }
                softmax(&mut scores);
                let probs_row = ((row * heads + a) * m + j) * m;
                sv.comm_probs[probs_row..probs_row + m].copy_from_slice(&scores);
                let u = &mut sv.comm_read[(row * m + j) * read_width + a * value..][..value];
                u.fill(T::zero());
                for (i, &p) in scores.iter().enumerate() {
                    for (o, &v) in u.iter_mut().zip(&qkv(i)[values + a * value..][..value]) {
                        *o += p * v;
                    }
                }
            }
        }
    }
    let fc_gate = &mut sv.fc_gate[at.step_block(m * 2 * d)];
    for row in fc_gate.chunks_mut(2 * d) {
        row.copy_from_slice(w.comm_out_b);
    }
    let u = &sv.comm_read[at.step_block(m * read_width)];
    gemm_acc(fc_gate, u, w.comm_out_w, batch * m, read_width, 2 * d);
}

/// Spec §4.6, commit (with the end of §4.5, `ĥ = h̃ + Δ`, `Δ = σ(gate_fc(u))·tanh(fc(u))`):
/// active modules take `ĥ` and `c̃`, inactive ones copy the previous `h` and `c` exactly. Writes
/// the layer's part of `out` at this step. Reference: [`Brims::commit`](crate::brims::Brims::commit).
pub(crate) fn commit<T: Real>(at: &Step, sv: &LayerSaved<T>, out: &mut [T]) {
    let s = at.sizes;
    let (m, d, n) = (s.modules, s.module_size, s.hidden);
    let width = at.plan.width();
    for b in 0..at.plan.batch {
        let row = at.row(b);
        let state = row * width + at.state_offset();
        for j in 0..m {
            let module_row = at.module_row(j, b) * d;
            let fc_gate = &sv.fc_gate[(row * m + j) * 2 * d..][..2 * d];
            let is_active = sv.active[row * m + j];
            for r in 0..d {
                let (h, c) = if is_active {
                    let delta = sigmoid(fc_gate[d + r]) * tanh(fc_gate[r]);
                    (sv.cand_h[module_row + r] + delta, sv.cand_c[module_row + r])
                } else {
                    (sv.prev_h[module_row + r], sv.prev_c[module_row + r])
                };
                out[state + j * d + r] = h;
                out[state + n + j * d + r] = c;
            }
        }
    }
}
