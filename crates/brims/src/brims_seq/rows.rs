//! The batch's rows split over the rayon threads: envs are independent in the recurrence, so
//! each thread runs all `T` steps of the forward (and the backward) for its contiguous rows,
//! with no per-step synchronisation; only the weight gradients are summed at the end. Also the
//! per-layer views of the trace (selection, attention) gathered back into `[T, B, M]`.

use std::ops::Range;

use candle_core::Result;
use rayon::prelude::*;

use super::backward::backward;
use super::forward::forward;
use super::weights::{LayerWeights, LayerWeightsT};
use super::{Gradients, LayerSaved, Plan};
use crate::config::TieBreak;
use crate::kernels::{gather_rows, row_parts, scatter_rows, Real};
use crate::sizes::LayerSizes;

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
    let kv_width = plan.sizes[0].slot_kv_width();
    // Per row range: its outputs `[T, rows, W]` and what its layers kept.
    type Part<T> = (Range<usize>, Vec<T>, Vec<LayerSaved<T>>);
    let parts: Vec<Part<T>> = row_parts(batch)
        .into_par_iter()
        .map(|rows| {
            let (out, saved) = forward(
                &plan.with_batch(rows.len()),
                weights,
                &gather_rows(kv0, steps, batch, kv_width, &rows),
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
    let (m, heads, read_width) = (s.modules, s.input_heads, s.read_width());
    let (real, slots) = (s.slots(), s.slots() + 1);
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
                    for a in 0..heads {
                        let probs_row = (((t * nb + b) * heads + a) * m + j) * slots;
                        let probs = &sv.input_probs[probs_row..probs_row + slots];
                        for (slot, p) in probs.iter().enumerate() {
                            let p = p.to_f64();
                            if p > 0.0 {
                                h -= p * p.ln();
                            }
                            if slot > 0 {
                                part_slots[((t * nb + b) * m + j) * real + slot - 1] +=
                                    p / heads as f64;
                            }
                        }
                    }
                    part_entropy[(t * nb + b) * m + j] = h / heads as f64;
                    let read_row = ((j * steps + t) * nb + b) * read_width;
                    let sq: f64 = sv.read[read_row..read_row + read_width]
                        .iter()
                        .map(|x| x.to_f64() * x.to_f64())
                        .sum();
                    part_rms[(t * nb + b) * m + j] = (sq / read_width as f64).sqrt();
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
    let kv_width = plan.sizes[0].slot_kv_width();
    // Transposed once, shared by every row range.
    let transposed: Vec<LayerWeightsT<T>> = plan
        .sizes
        .iter()
        .zip(weights)
        .map(|(s, w)| LayerWeightsT::of(s, w))
        .collect();
    let parts: Vec<(Range<usize>, Gradients<T>)> = saved
        .par_iter()
        .map(|(rows, layers)| {
            let grads = backward(
                &plan.with_batch(rows.len()),
                &transposed,
                layers,
                &gather_rows(grad_out, steps, batch, width, rows),
                &gather_rows(keep, steps, batch, 1, rows),
            )?;
            Ok((rows.clone(), grads))
        })
        .collect::<Result<_>>()?;
    let mut total = Gradients {
        weights: vec![],
        kv0: vec![T::zero(); steps * batch * kv_width],
        state0: vec![T::zero(); batch * width],
    };
    for (rows, grads) in parts {
        scatter_rows(&mut total.kv0, &grads.kv0, batch, kv_width, &rows);
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
