//! The BRIMs recurrence (spec §§4.1–4.7) as plain loops over all layers and steps: one candle
//! custom op for the sequence pass the learner differentiates ([`op`]), and the forward-only
//! step acting uses (CPU, f32/f64).
//!
//! The candle composition in [`crate::brims`] is the readable reference and what the fixture is
//! checked against; it costs ~100 small ops per layer and step, and autograd roughly triples
//! that. Here autograd sees one node per sequence. The forward keeps what the backward needs
//! (attention probabilities, gates, masks); the backward runs BPTT through the layers top to
//! bottom, storing the per-step gradients of every projection, and forms each weight gradient
//! with one batched matmul over all steps at the end.
//!
//! One function per spec section, each paired with the reference step's function of the same
//! section (`Brims::…` in [`crate::brims`]):
//!
//! | spec | reference step | [`forward`] | [`backward`] |
//! |---|---|---|---|
//! | §4.1 input slots | `slot_keys_values` | `slot_keys_values` | `slot_keys_values_backward` |
//! | §4.2 input attention | `input_attention` | `input_attention` | `input_attention_backward` |
//! | §4.3 selection | `select_active` | `select_active` | (none: the mask is a constant) |
//! | §4.4 module LSTMs | `module_lstms` | `module_lstms` | `module_lstms_backward` |
//! | §4.5 communication | `communication` | `communication` | `communication_backward` |
//! | §4.6 commit | `commit` | `commit` | `commit_backward` |
//! | §4.7 stacking, state | `step_layers` | `forward`, `mask_previous_state` | `backward` |
//!
//! Envs are independent in the recurrence, so [`rows::forward_rows`] and
//! [`rows::backward_rows`] split the batch's rows over the rayon threads, each running all `T`
//! steps for its rows with no per-step synchronisation; only the weight gradients are summed at
//! the end.
//!
//! Layouts: per-module quantities are module-major `[M, T, B, X]`, so module `j` at step `t` is
//! a contiguous `[B, X]` block (a plain row-major matmul with module `j`'s weight); the rest is
//! step-major `[T, B, …]`. The state row of one env is `[h_0, c_0, h_1, c_1, …]`, `W` wide.
//! Sizes are named in [`LayerSizes`]; in the loops `m`, `d`, `n` are the spec's `M_l`, `d_l`,
//! `N_l`.

use std::ops::Range;

use crate::sizes::LayerSizes;

mod backward;
pub(crate) mod forward;
mod math;
mod op;
mod rows;
mod weights;

pub(crate) use op::BrimsSeqOp;
pub(crate) use rows::{attention_rows, forward_rows, selection_rows};
pub(crate) use weights::layer_weights;

/// Sizes of one pass: the layers, `T` and `B`.
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

    /// The same pass over `batch` rows (a row range of this one).
    fn with_batch(&self, batch: usize) -> Plan<'_> {
        Plan {
            sizes: self.sizes,
            steps: self.steps,
            batch,
        }
    }
}

/// Where layer `layer`'s step `t` lives in the pass's buffers.
#[derive(Clone, Copy)]
pub(crate) struct Step<'a> {
    plan: &'a Plan<'a>,
    sizes: &'a LayerSizes,
    layer: usize,
    t: usize,
}

impl<'a> Step<'a> {
    fn new(plan: &'a Plan<'a>, layer: usize, t: usize) -> Self {
        Step {
            plan,
            sizes: &plan.sizes[layer],
            layer,
            t,
        }
    }

    /// Row `b` of step `t` in a step-major `[T, B, …]` buffer.
    fn row(&self, b: usize) -> usize {
        self.t * self.plan.batch + b
    }

    /// Step `t`'s `[B, width]` block of a step-major `[T, B, width]` buffer.
    fn step_block(&self, width: usize) -> Range<usize> {
        self.row(0) * width..self.row(self.plan.batch) * width
    }

    /// Row `b` of module `j` at step `t` in a module-major `[M, T, B, …]` buffer.
    fn module_row(&self, j: usize, b: usize) -> usize {
        (j * self.plan.steps + self.t) * self.plan.batch + b
    }

    /// Module `j`'s `[B, width]` block at step `t` of a module-major `[M, T, B, width]` buffer.
    fn module_block(&self, j: usize, width: usize) -> Range<usize> {
        self.module_row(j, 0) * width..self.module_row(j, self.plan.batch) * width
    }

    /// Offset of this layer's `h` in a state row (its `c` follows at `+ N_l`).
    fn state_offset(&self) -> usize {
        self.plan.offset(self.layer)
    }
}

/// What one layer's forward keeps for the backward and the trace, over all `T` steps.
pub(crate) struct LayerSaved<T> {
    /// `[M, T, B, d]` the (reset-masked) previous `h` and `c`.
    prev_h: Vec<T>,
    prev_c: Vec<T>,
    /// Per real slot `[T, B, D_s]`: the slot's input as projected (normalised with
    /// `slot_norm`; empty for layer 0's bottom-up, which arrives projected).
    slot_inputs: Vec<Vec<T>>,
    /// Per real slot `[T, B]`: `1/σ` of each normalised input row (empty without `slot_norm`).
    slot_rstd: Vec<Vec<T>>,
    /// Per real slot `[T, B, Hi·(dk + dv)]`: its keys, then values.
    slot_kv: Vec<Vec<T>>,
    /// `[M, T, B, Hi·dk]` input-attention queries.
    query: Vec<T>,
    /// `[T, B, Hi, M, S + 1]` input attention, null slot first.
    input_probs: Vec<T>,
    /// `[T, B, M]` head-averaged null attention, as the selection saw it.
    pub null: Vec<f64>,
    /// `[T, B, M]` active modules.
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
    /// `[T, B, M, Hc·dv]` communication reads `u`.
    comm_read: Vec<T>,
    /// `[T, B, M, 2d]` pre-activations of `fc` (first `d`) then `gate_fc` (last `d`).
    fc_gate: Vec<T>,
}

impl<T: crate::kernels::Real> LayerSaved<T> {
    /// Zeroed buffers for layer `l` of sizes `s` over `steps × batch` rows.
    fn new(l: usize, s: &LayerSizes, steps: usize, batch: usize) -> Self {
        let rows = steps * batch;
        let per_module = |width: usize| vec![T::zero(); s.modules * rows * width];
        // Layer 0's bottom-up slot arrives projected: no input of its own to keep.
        let own_input = |slot: usize| !(l == 0 && slot == 0);
        LayerSaved {
            prev_h: per_module(s.module_size),
            prev_c: per_module(s.module_size),
            slot_inputs: s
                .slot_widths
                .iter()
                .enumerate()
                .map(|(slot, &w)| {
                    if own_input(slot) {
                        vec![T::zero(); rows * w]
                    } else {
                        vec![]
                    }
                })
                .collect(),
            slot_rstd: (0..s.slots())
                .map(|slot| {
                    if s.slot_norm && own_input(slot) {
                        vec![T::zero(); rows]
                    } else {
                        vec![]
                    }
                })
                .collect(),
            slot_kv: (0..s.slots())
                .map(|_| vec![T::zero(); rows * s.slot_kv_width()])
                .collect(),
            query: per_module(s.query_width()),
            input_probs: vec![T::zero(); rows * s.input_heads * s.modules * (s.slots() + 1)],
            null: vec![0.0; rows * s.modules],
            active: vec![false; rows * s.modules],
            read: per_module(s.read_width()),
            gates: per_module(s.gate_width()),
            cand_c: per_module(s.module_size),
            cand_h: per_module(s.module_size),
            comm_qkv: per_module(s.comm_qkv_width()),
            comm_probs: vec![T::zero(); rows * s.comm_heads * s.modules * s.modules],
            comm_read: vec![T::zero(); rows * s.modules * s.comm_read_width()],
            fc_gate: vec![T::zero(); rows * s.modules * 2 * s.module_size],
        }
    }
}

/// The gradients of one pass: every weight (in [`weights::weight_lens`] order, flat), `kv0`,
/// `state0`.
pub(crate) struct Gradients<T> {
    pub weights: Vec<Vec<T>>,
    pub kv0: Vec<T>,
    pub state0: Vec<T>,
}
