//! One layer's weights as the fused loops read them: flat row-major slices in a fixed packing
//! order (the custom op receives them as one packed tensor), and their transposes for the
//! backward's input gradients.

use candle_core::{bail, Result};

use super::math::transpose_blocks;
use crate::kernels::Real;
use crate::sizes::LayerSizes;

/// One layer's weights as flat row-major slices (shapes as the fields of `brims::LayerParams`,
/// whose names they keep).
pub(crate) struct LayerWeights<'a, T> {
    /// `[M, d, Hi·dk]` input-attention queries, per module.
    pub inp_q: &'a [T],
    /// Per real slot `[D_s, Hi·(dk + dv)]` keys then values; `None` for layer 0's bottom-up
    /// slot, whose keys and values arrive projected (`kv0`).
    pub slot_kv: Vec<Option<&'a [T]>>,
    /// `[M, Hi·dv, 4d]` module LSTM input weights.
    pub lstm_ih: &'a [T],
    /// `[M, d, 4d]` module LSTM recurrent weights.
    pub lstm_hh: &'a [T],
    /// `[M, 4d]` module LSTM biases.
    pub lstm_b: &'a [T],
    /// `[M, d, Hc·(2dk + dv)]` communication queries, keys, values, per module.
    pub comm_qkv: &'a [T],
    /// `[Hc·dv, 2d]` communication `fc` then `gate_fc`, shared by the modules.
    pub comm_out_w: &'a [T],
    /// `[2d]` their biases.
    pub comm_out_b: &'a [T],
}

/// Whether layer `l`'s slot `slot` has its own key/value matrix in the fused pass (layer 0's
/// bottom-up slot is projected outside, for all steps at once).
fn has_slot_matrix(l: usize, slot: usize) -> bool {
    !(l == 0 && slot == 0)
}

/// The element counts of one layer's weights, in the packing order of [`LayerWeights`]
/// (`inp_q`, the slot matrices other than layer 0's bottom-up, `lstm_ih`, `lstm_hh`, `lstm_b`,
/// `comm_qkv`, `comm_out_w`, `comm_out_b`).
pub(crate) fn weight_lens(l: usize, s: &LayerSizes) -> Vec<usize> {
    let (m, d) = (s.modules, s.module_size);
    let mut lens = vec![m * d * s.query_width()];
    for (slot, &width) in s.slot_widths.iter().enumerate() {
        if has_slot_matrix(l, slot) {
            lens.push(width * s.slot_kv_width());
        }
    }
    lens.extend([
        m * s.read_width() * s.gate_width(),
        m * d * s.gate_width(),
        m * s.gate_width(),
        m * d * s.comm_qkv_width(),
        s.comm_read_width() * 2 * d,
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
        let slot_kv = (0..s.slots())
            .map(|slot| has_slot_matrix(l, slot).then(&mut pop))
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

/// One layer's weights transposed, for the backward's input gradients (`dx = dy · Wᵀ`).
pub(super) struct LayerWeightsT<T> {
    /// `[M, Hi·dk, d]`.
    pub inp_q: Vec<T>,
    /// Per real slot `[Hi·(dk + dv), D_s]` (empty where projected outside).
    pub slot_kv: Vec<Vec<T>>,
    /// `[M, 4d, Hi·dv]`.
    pub lstm_ih: Vec<T>,
    /// `[M, 4d, d]`.
    pub lstm_hh: Vec<T>,
    /// `[M, Hc·(2dk + dv), d]`.
    pub comm_qkv: Vec<T>,
    /// `[2d, Hc·dv]`.
    pub comm_out_w: Vec<T>,
}

impl<T: Real> LayerWeightsT<T> {
    /// `w` transposed, block by block.
    pub fn of(s: &LayerSizes, w: &LayerWeights<T>) -> Self {
        let (m, d) = (s.modules, s.module_size);
        LayerWeightsT {
            inp_q: transpose_blocks(w.inp_q, m, d, s.query_width()),
            slot_kv: w
                .slot_kv
                .iter()
                .zip(&s.slot_widths)
                .map(|(kv, &width)| {
                    kv.map_or(vec![], |kv| {
                        transpose_blocks(kv, 1, width, s.slot_kv_width())
                    })
                })
                .collect(),
            lstm_ih: transpose_blocks(w.lstm_ih, m, s.read_width(), s.gate_width()),
            lstm_hh: transpose_blocks(w.lstm_hh, m, d, s.gate_width()),
            comm_qkv: transpose_blocks(w.comm_qkv, m, d, s.comm_qkv_width()),
            comm_out_w: transpose_blocks(w.comm_out_w, 1, s.comm_read_width(), 2 * d),
        }
    }
}
