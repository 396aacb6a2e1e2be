//! The BRIMs core (spec §§4.1–4.7): layers of modules with input attention, top-k selection,
//! per-module LSTMs computed in one batched matmul, and gated communication.
//!
//! This file is the readable reference step, a composition of candle ops with one function per
//! spec section (`slot_keys_values` §4.1, `input_attention` §4.2, `select_active` §4.3,
//! `module_lstms` §4.4, `communication` §4.5, `commit` §4.6, `step_layers` §4.7); the fixture
//! is checked against it. The fused CPU loops in [`crate::brims_seq`] implement the same
//! sections under the same names (see the table there).

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::brims_seq::{self, BrimsSeqOp};
use crate::config::{AttentionInit, BrimsConfig, CoreOutput, LstmInit, TieBreak};
use crate::core::{act_by_stepping, Core, CoreState, LayerTrace, StepTrace};
use crate::error::BrimsError;
use crate::lesion::{LayerLesion, Lesion};
use crate::norm::normalise_rows;
use crate::shape::{check_width, expect_shape, fast_tanh};
use crate::sizes::LayerSizes;
use crate::topk::active_modules;

/// One BRIMs layer's parameters (its sizes are the [`LayerSizes`] of the same index). Every
/// weight is stored `[.., in, out]` so a forward `x.matmul(&w)` reads it as stored and its
/// gradient accumulates contiguously. The names are the checkpoint's.
#[derive(Clone, Debug)]
struct LayerParams {
    /// `[M, d, Hi·dk]`: input-attention queries, one matrix per module.
    inp_q: Tensor,
    /// Per real slot (bottom-up, then top-down) `[D_s, Hi·dk + Hi·dv]`: keys then values.
    inp_kv: Vec<Tensor>,
    /// `[M, Hi·dv, 4d]`: per-module LSTM input weights, gate-major columns `i, f, g, o`.
    lstm_ih: Tensor,
    /// `[M, d, 4d]`: per-module LSTM recurrent weights.
    lstm_hh: Tensor,
    /// `[M, 1, 4d]`: per-module LSTM bias (`bias_ih + bias_hh` of the reference).
    lstm_b: Tensor,
    /// `[M, d, Hc·(2dk + dv)]`: communication queries, keys, values per module.
    comm_qkv: Tensor,
    /// `[Hc·dv, 2d]`: the shared `fc` (first `d` columns) and `gate_fc` (last `d`) weights.
    comm_out_w: Tensor,
    /// `[2d]`: their biases.
    comm_out_b: Tensor,
    /// `[4d]`: 1 on the `i, f, o` gate columns, 2 on `g` (see [`Brims::module_lstms`]).
    gate_scale: Tensor,
}

/// `[4d]`: 1 on the `i, f, o` gate columns, 2 on `g`.
fn gate_scale(s: &LayerSizes, dev: &Device, dtype: DType) -> Result<Tensor> {
    let d = s.module_size;
    Tensor::cat(
        &[
            Tensor::ones(2 * d, dtype, dev)?,
            Tensor::full(2f64, d, dev)?.to_dtype(dtype)?,
            Tensor::ones(d, dtype, dev)?,
        ],
        0,
    )
}

/// Everything one layer computed at one step (kept for the fixture checker and the trace).
// The candidate and communication tensors are read only by the fixture checker.
#[cfg_attr(not(feature = "fixture"), allow(dead_code))]
pub(crate) struct LayerOut {
    /// `[B, Hi, M, S]` input attention, slots `[null, bottom-up(, top-down)]`.
    pub inp_probs: Tensor,
    /// `[B, M]` head-averaged null attention.
    pub null: Tensor,
    /// `[B·M]` env-major: active modules.
    pub active: Vec<bool>,
    /// `[B·M]` env-major null attention, as used by the selection.
    pub null_scores: Vec<f64>,
    /// `[M, B, Hi·dv]` the attention reads (LSTM inputs).
    pub read: Tensor,
    /// `[M, B, d]` candidate `h̃` and `c̃` of every module.
    pub lstm_h: Tensor,
    /// `[M, B, d]`.
    pub lstm_c: Tensor,
    /// `[B, Hc, M, M]` communication attention.
    pub comm_probs: Tensor,
    /// `[B, M, d]` communication update `Δ`.
    pub comm_upd: Tensor,
    /// `[B, N]` committed state.
    pub h: Tensor,
    /// `[B, N]`.
    pub c: Tensor,
}

/// BRIMs: `L` layers of `M_l` modules each; RIMs is one layer. Input `[B, E]`, output the top
/// layer's `h` `[B, N_{L-1}]`; state `[h_0, c_0, h_1, c_1, …]`, each `[B, N_l]`, module-major.
#[derive(Clone, Debug)]
pub struct Brims {
    cfg: BrimsConfig,
    layers: Vec<LayerParams>,
    sizes: Vec<LayerSizes>,
    input_size: usize,
    training: bool,
}

fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// A layer step's input-attention entropy (nats, head-averaged) and read RMS, each `[B·M]`
/// env-major, and its head-averaged attention on each real slot `[B·M·S]`, as [`LayerTrace`]
/// reports them.
fn attention_stats(o: &LayerOut) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let probs = o.inp_probs.to_dtype(DType::F64)?; // [B, Hi, M, S]
    let heads = probs.dim(1)?;
    // log p where p > 0, and 0 (log 1) where p = 0: 0·log 0 counts as 0.
    let log_p = probs
        .gt(0.0)?
        .where_cond(&probs, &probs.ones_like()?)?
        .log()?;
    let entropy = (&probs * log_p)?
        .sum(D::Minus1)?
        .sum(1)?
        .affine(-1.0 / heads as f64, 0.0)?; // [B, M]
    let read = o.read.to_dtype(DType::F64)?; // [M, B, R]
    let rms = read.sqr()?.mean(D::Minus1)?.sqrt()?.t()?; // [B, M]
    let flat =
        |x: Tensor| -> Result<Vec<f32>> { x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>() };
    // [B, Hi, M, S+1] → mean over heads → [B, M, S+1] → the real slots.
    let slots = probs.dim(3)?;
    let per_slot = probs.mean(1)?.narrow(2, 1, slots - 1)?.contiguous()?;
    Ok((flat(entropy)?, flat(rms.contiguous()?)?, flat(per_slot)?))
}

/// `1 − reset` of every entry of `resets` (any shape, row-major): the fused loops' keep flags.
fn keep_values(resets: &Tensor) -> Result<Vec<f64>> {
    let resets = resets
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok(resets.iter().map(|r| 1.0 - r).collect())
}

/// `[T, ..]` into its `T` steps `[..]`, through √T-step chunks. Candle's gradient of a slice is
/// zero-padded to the whole tensor, so slicing `T` steps directly costs `T` whole-size gradients
/// (quadratic in `T`); two levels cost about `2√T`. The padding is exact zeros, so the summed
/// gradient is unchanged.
fn split_steps(x: &Tensor) -> Result<Vec<Tensor>> {
    let steps = x.dim(0)?;
    let chunk = ((steps as f64).sqrt().ceil() as usize).max(1);
    let mut out = Vec::with_capacity(steps);
    for start in (0..steps).step_by(chunk) {
        let part = x.narrow(0, start, chunk.min(steps - start))?;
        for t in 0..part.dim(0)? {
            out.push(part.get(t)?);
        }
    }
    Ok(out)
}

impl Brims {
    /// Builds BRIMs with input width `input_size`, parameters from `vb` (names
    /// `layer{l}.{inp_q, inp_kv{s}, lstm_ih, lstm_hh, lstm_b, comm_qkv, comm_out_w, comm_out_b}`).
    /// Init as the reference by default: attention projections `N(0, attention_init_std²)`,
    /// LSTM `U(±1/√N_l)`, communication output `U(±1/√(Hc·dv))`. `attention_init = "fan_in"`
    /// draws the projections `N(0, 1/fan_in)`; `lstm_init = "module"` draws the LSTMs
    /// `U(±1/√d_l)`.
    pub fn new(
        cfg: &BrimsConfig,
        input_size: usize,
        vb: VarBuilder,
    ) -> std::result::Result<Self, BrimsError> {
        cfg.validate(input_size)?;
        // A projection reading `fan_in` values.
        let projection = |fan_in: usize| Init::Randn {
            mean: 0.0,
            stdev: match cfg.attention_init {
                AttentionInit::Reference => cfg.attention_init_std,
                AttentionInit::FanIn => cfg.attention_init_gain / (fan_in as f64).sqrt(),
            },
        };
        let uniform = |fan: usize| {
            let b = 1.0 / (fan as f64).sqrt();
            Init::Uniform { lo: -b, up: b }
        };
        let sizes = LayerSizes::of_config(cfg, input_size);
        let mut layers = Vec::new();
        for (l, s) in sizes.iter().enumerate() {
            let vb = vb.pp(format!("layer{l}"));
            let (m, d) = (s.modules, s.module_size);
            let lstm = uniform(match cfg.lstm_init {
                LstmInit::Reference => s.hidden,
                LstmInit::Module => d,
            });
            // Created in this order (keys/values first): a seeded init draws them in it.
            let inp_kv = s
                .slot_widths
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    vb.get_with_hints((w, s.slot_kv_width()), &format!("inp_kv{i}"), projection(w))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = s.comm_read_width();
            layers.push(LayerParams {
                inp_q: vb.get_with_hints((m, d, s.query_width()), "inp_q", projection(d))?,
                inp_kv,
                lstm_ih: vb.get_with_hints((m, s.read_width(), 4 * d), "lstm_ih", lstm)?,
                lstm_hh: vb.get_with_hints((m, d, 4 * d), "lstm_hh", lstm)?,
                lstm_b: vb.get_with_hints((m, 1, 4 * d), "lstm_b", lstm)?,
                comm_qkv: vb.get_with_hints(
                    (m, d, s.comm_qkv_width()),
                    "comm_qkv",
                    projection(d),
                )?,
                comm_out_w: vb.get_with_hints((out, 2 * d), "comm_out_w", uniform(out))?,
                comm_out_b: vb.get_with_hints(2 * d, "comm_out_b", uniform(out))?,
                gate_scale: gate_scale(s, vb.device(), vb.dtype())?,
            });
        }
        Ok(Brims {
            cfg: cfg.clone(),
            layers,
            sizes,
            input_size,
            training: false,
        })
    }

    /// Builds BRIMs from a reference state-dict (spec §2): `tensors[prefix + "{l}.inp_att.GLN_qs.w"]`
    /// etc., with the dense block-diagonal `block_lstm.lstm.*` and GroupLinear `[G, din, dout]`
    /// weights converted to the per-module layout. The config must use the reference's
    /// attention sizes; `prefix` is e.g. `"model.bc_lst."`.
    pub fn from_reference(
        cfg: &BrimsConfig,
        input_size: usize,
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
    ) -> std::result::Result<Self, BrimsError> {
        cfg.validate(input_size)?;
        let sizes = LayerSizes::of_config(cfg, input_size);
        let mut layers = Vec::new();
        for (l, s) in sizes.iter().enumerate() {
            let get = |name: &str, shape: &[usize]| -> std::result::Result<Tensor, BrimsError> {
                let full = format!("{prefix}{l}.{name}");
                let t = tensors
                    .get(&full)
                    .ok_or_else(|| BrimsError::MissingTensor { name: full.clone() })?;
                expect_shape(&full, t, shape)?;
                Ok(t.clone())
            };
            let (m, d, n) = (s.modules, s.module_size, s.hidden);
            let slots = s.slots() + 1;
            let width = s.slot_widths[0];
            if s.slot_widths.iter().any(|&w| w != width) {
                return Err(BrimsError::FixtureMismatch(format!(
                    "the reference stores one key/value width per layer; layer {l} has slot widths {:?}",
                    s.slot_widths
                )));
            }
            let ks = get("inp_att.GLN_ks.w", &[slots, width, s.query_width()])?;
            let vs = get("inp_att.GLN_vs.w", &[slots, width, s.read_width()])?;
            let inp_kv = (1..slots)
                .map(|i| Tensor::cat(&[ks.get(i)?, vs.get(i)?], 1))
                .collect::<Result<Vec<_>>>()?;
            let r = s.read_width();
            let w_ih = get("block_lstm.lstm.weight_ih", &[4 * n, m * r])?;
            let w_hh = get("block_lstm.lstm.weight_hh", &[4 * n, n])?;
            let b = get("block_lstm.lstm.bias_ih", &[4 * n])?
                .add(&get("block_lstm.lstm.bias_hh", &[4 * n])?)?;
            // Module j, gate e: rows [e·N + j·d, +d); input columns [j·r, +r), hidden [j·d, +d).
            let (mut ih, mut hh, mut bias) = (vec![], vec![], vec![]);
            for j in 0..m {
                let rows = |w: &Tensor, col0: usize, cols: usize| -> Result<Tensor> {
                    let gates = (0..4)
                        .map(|e| w.narrow(0, e * n + j * d, d)?.narrow(1, col0, cols))
                        .collect::<Result<Vec<_>>>()?;
                    Tensor::cat(&gates, 0)?.t()?.contiguous()
                };
                ih.push(rows(&w_ih, j * r, r)?);
                hh.push(rows(&w_hh, j * d, d)?);
                let bs = (0..4)
                    .map(|e| b.narrow(0, e * n + j * d, d))
                    .collect::<Result<Vec<_>>>()?;
                bias.push(Tensor::cat(&bs, 0)?.unsqueeze(0)?);
            }
            let cq = s.comm_heads * s.comm_key;
            let comm_qkv = Tensor::cat(
                &[
                    get("mha.GLN_qs.w", &[m, d, cq])?,
                    get("mha.GLN_ks.w", &[m, d, cq])?,
                    get("mha.GLN_vs.w", &[m, d, s.comm_heads * s.comm_value])?,
                ],
                2,
            )?;
            let out = s.comm_read_width();
            let comm_out_w = Tensor::cat(
                &[
                    get("mha.fc.weight", &[d, out])?.t()?,
                    get("mha.gate_fc.weight", &[d, out])?.t()?,
                ],
                1,
            )?
            .contiguous()?;
            let comm_out_b = Tensor::cat(
                &[get("mha.fc.bias", &[d])?, get("mha.gate_fc.bias", &[d])?],
                0,
            )?;
            let dev = ks.device().clone();
            layers.push(LayerParams {
                inp_q: get("inp_att.GLN_qs.w", &[m, d, s.query_width()])?,
                inp_kv,
                lstm_ih: Tensor::stack(&ih, 0)?,
                lstm_hh: Tensor::stack(&hh, 0)?,
                lstm_b: Tensor::stack(&bias, 0)?,
                comm_qkv,
                comm_out_w,
                comm_out_b,
                gate_scale: gate_scale(s, &dev, ks.dtype())?,
            });
        }
        Ok(Brims {
            cfg: cfg.clone(),
            layers,
            sizes,
            input_size,
            training: false,
        })
    }

    /// The config this core was built from.
    pub fn config(&self) -> &BrimsConfig {
        &self.cfg
    }

    /// Checks that `input` is `[.., E]` with this core's `E`.
    pub fn check_input(&self, input: &Tensor) -> std::result::Result<(), BrimsError> {
        check_width(input, self.input_size)
    }

    fn check_state(&self, state: &CoreState) -> Result<()> {
        let want = 2 * self.layers.len();
        if state.parts.len() != want {
            return Err(BrimsError::State {
                expected: format!(
                    "{want} tensors [h_0, c_0, …] for {} layers",
                    self.layers.len()
                ),
                got: format!("{} tensors", state.parts.len()),
            }
            .into_candle());
        }
        Ok(())
    }

    fn dtype(&self) -> DType {
        self.layers[0].inp_q.dtype()
    }

    /// Spec §4.7, one step of every layer, bottom to top: layer `l ≥ 1` reads the layer below
    /// at this step, a top-down slot the state before the step. `bottom_kv` is layer 0's
    /// bottom-up keys/values if already projected (the sequence pass projects all steps at
    /// once). Fused: [`forward`](crate::brims_seq::forward::forward).
    pub(crate) fn step_layers(
        &self,
        input: &Tensor,
        bottom_kv: Option<Tensor>,
        state: &CoreState,
    ) -> Result<Vec<LayerOut>> {
        self.step_layers_lesioned(input, bottom_kv, state, &Lesion::default())
    }

    /// [`step_layers`](Self::step_layers) under `lesion` (the empty lesion: the same step).
    fn step_layers_lesioned(
        &self,
        input: &Tensor,
        bottom_kv: Option<Tensor>,
        state: &CoreState,
        lesion: &Lesion,
    ) -> Result<Vec<LayerOut>> {
        self.check_input(input).map_err(BrimsError::into_candle)?;
        self.check_state(state)?;
        let mut outs: Vec<LayerOut> = Vec::with_capacity(self.layers.len());
        for l in 0..self.layers.len() {
            let below = match outs.last() {
                Some(o) => &o.h,
                None => input,
            };
            let projected = bottom_kv.as_ref().filter(|_| l == 0);
            let layer_lesion = lesion.layer(l);
            let top_down = layer_lesion.and_then(|x| x.top_down.as_ref());
            let kv = self.slot_keys_values(l, below, projected, top_down, state)?;
            let (h, c) = (&state.parts[2 * l], &state.parts[2 * l + 1]);
            let out = self.layer_step(l, &kv, h, c, layer_lesion)?;
            outs.push(out);
        }
        Ok(outs)
    }

    /// A slot's input `[B, D]` as its key/value projection reads it: as it is, or normalised
    /// over `D` (zero mean, unit variance, ε = 1e-5) with `slot_norm`.
    fn slot_input(&self, x: &Tensor) -> Result<Tensor> {
        if !self.cfg.slot_norm {
            return Ok(x.clone());
        }
        normalise_rows(x)
    }

    /// Spec §4.1, input slots: the keys and values `[B, Hi·(dk + dv)]` of layer `l`'s real
    /// slots, bottom-up (`below`: the encoder output, or the layer below at this step; or
    /// `projected` already) then top-down (the source layer's `h` in `state`, before the step).
    /// Fused: [`slot_keys_values`](crate::brims_seq::forward::slot_keys_values).
    /// `top_down` replaces the source layer's `h` (a lesion).
    fn slot_keys_values(
        &self,
        l: usize,
        below: &Tensor,
        projected: Option<&Tensor>,
        top_down: Option<&Tensor>,
        state: &CoreState,
    ) -> Result<Vec<Tensor>> {
        let w = &self.layers[l];
        let bottom_up = match projected {
            Some(kv) => kv.clone(),
            None => self.slot_input(below)?.matmul(&w.inp_kv[0])?,
        };
        let mut kv = vec![bottom_up];
        if let Some(src) = self.sizes[l].top_down {
            let source = top_down.unwrap_or(&state.parts[2 * src]);
            expect_shape("top-down lesion", source, state.parts[2 * src].dims())
                .map_err(BrimsError::into_candle)?;
            kv.push(self.slot_input(source)?.matmul(&w.inp_kv[1])?);
        }
        Ok(kv)
    }

    /// One layer's step from its slots' keys and values `kv` and its state `h`, `c` (`[B, N]`),
    /// section by section (§§4.2–4.6).
    /// `lesion` masks modules or changes `k` (see [`LayerLesion`]).
    fn layer_step(
        &self,
        l: usize,
        kv: &[Tensor],
        h: &Tensor,
        c: &Tensor,
        lesion: Option<&LayerLesion>,
    ) -> Result<LayerOut> {
        let (s, w) = (&self.sizes[l], &self.layers[l]);
        let b = h.dim(0)?;
        let (m, d) = (s.modules, s.module_size);
        // [M, B, d] views of the previous state: batched matmuls take them without a copy.
        let h_mb = h.reshape((b, m, d))?.transpose(0, 1)?;
        let c_mb = c.reshape((b, m, d))?.transpose(0, 1)?;
        let attention = self.input_attention(s, w, kv, &h_mb)?;
        let (active, null_scores) = self.select_active(s, &attention.null, lesion)?;
        let (lstm_h, lstm_c) = Self::module_lstms(s, w, &attention.read, &h_mb, &c_mb)?;
        let comm = self.communication(s, w, &lstm_h, &active)?;
        let (h_out, c_out) = Self::commit(s, &active, &comm.h_new, &lstm_c, h, c)?;
        Ok(LayerOut {
            inp_probs: attention.probs,
            null: attention.null,
            active,
            null_scores,
            read: attention.read,
            lstm_h,
            lstm_c,
            comm_probs: comm.probs,
            comm_upd: comm.update,
            h: h_out,
            c: c_out,
        })
    }

    /// Spec §4.2, input attention: each module's queries from its previous `h` (`h_mb`,
    /// `[M, B, d]`), per head a softmax over `[null, slots…]` (the null slot's key and value
    /// are exactly zero), the read (dropout in training), and the head-averaged null attention.
    /// Fused: [`input_attention`](crate::brims_seq::forward::input_attention).
    fn input_attention(
        &self,
        s: &LayerSizes,
        w: &LayerParams,
        kv: &[Tensor],
        h_mb: &Tensor,
    ) -> Result<InputAttention> {
        let b = h_mb.dim(1)?;
        let m = s.modules;
        let (heads, key, value) = (s.input_heads, s.input_key, s.input_value);
        let slots = kv.len();
        let queries = h_mb
            .matmul(&w.inp_q)?
            .reshape((m, b, heads, key))?
            .permute((1, 2, 0, 3))?
            .contiguous()?
            .reshape((b * heads, m, key))?;
        let split = |t: &Tensor, off: usize, width: usize| -> Result<Tensor> {
            t.narrow(1, off, heads * width)?
                .reshape((b, heads, 1, width))
        };
        let keys = kv
            .iter()
            .map(|t| split(t, 0, key))
            .collect::<Result<Vec<_>>>()?;
        let values = kv
            .iter()
            .map(|t| split(t, heads * key, value))
            .collect::<Result<Vec<_>>>()?;
        let keys = Tensor::cat(&keys, 2)?.reshape((b * heads, slots, key))?;
        let values = Tensor::cat(&values, 2)?.reshape((b * heads, slots, value))?;
        let logits = queries
            .matmul(&keys.t()?)?
            .affine(1.0 / (key as f64).sqrt(), 0.0)?;
        let null_logit = Tensor::zeros((b * heads, m, 1), logits.dtype(), logits.device())?;
        let probs = softmax_last(&Tensor::cat(&[&null_logit, &logits], 2)?)?;
        let null = probs.narrow(2, 0, 1)?.reshape((b, heads, m))?.mean(1)?;
        let mut read = probs
            .narrow(2, 1, slots)?
            .matmul(&values)?
            .reshape((b, heads, m, value))?
            .permute((2, 0, 1, 3))?
            .contiguous()?
            .reshape((m, b, heads * value))?;
        if self.training && self.cfg.read_dropout > 0.0 {
            read = candle_nn::ops::dropout(&read, self.cfg.read_dropout)?;
        }
        Ok(InputAttention {
            probs: probs.reshape((b, heads, m, slots + 1))?,
            null,
            read,
        })
    }

    /// Spec §4.3, selection: per env (row of `null`, `[B, M]`), the `M − k` modules with the
    /// largest null attention are inactive, on the CPU. Returns the mask and the scores it saw,
    /// `[B·M]` env-major. Fused: [`select_active`](crate::brims_seq::forward::select_active).
    /// A lesion's masked modules score `+∞` (never among the `k` least null-attending), and
    /// its `active` replaces `k`; `k` is at most the unmasked count.
    fn select_active(
        &self,
        s: &LayerSizes,
        null: &Tensor,
        lesion: Option<&LayerLesion>,
    ) -> Result<(Vec<bool>, Vec<f64>)> {
        let null_scores: Vec<f64> = null.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let masked: &[usize] = lesion.map_or(&[], |x| &x.masked_modules);
        if let Some(&j) = masked.iter().find(|&&j| j >= s.modules) {
            candle_core::bail!("lesion: module {j} does not exist ({} modules)", s.modules);
        }
        let k = lesion
            .and_then(|x| x.active)
            .unwrap_or(s.active)
            .min(s.modules.saturating_sub(masked.len()));
        let mut active = Vec::with_capacity(null_scores.len());
        for row in null_scores.chunks(s.modules) {
            let mut row = row.to_vec();
            for &j in masked {
                row[j] = f64::INFINITY;
            }
            active.extend(active_modules(&row, k, self.cfg.tie_break));
        }
        Ok((active, null_scores))
    }

    /// Spec §4.4, the module LSTMs, all modules in one batched op (inactive ones too: their
    /// candidates are keys and values of the communication): gates from the reads (`[M, B, Hi·dv]`)
    /// and the previous `h`, `c` (`[M, B, d]`); returns the candidates `h̃`, `c̃` (`[M, B, d]`).
    /// Fused: [`module_lstms`](crate::brims_seq::forward::module_lstms).
    fn module_lstms(
        s: &LayerSizes,
        w: &LayerParams,
        read: &Tensor,
        h_mb: &Tensor,
        c_mb: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let d = s.module_size;
        let gates = read
            .matmul(&w.lstm_ih)?
            .add(&h_mb.matmul(&w.lstm_hh)?)?
            .broadcast_add(&w.lstm_b)?;
        // One sigmoid over all four gates: the `g` columns are doubled first (exact), so they
        // come out as σ(2x) and `g = 2σ(2x) − 1` is `fast_tanh`'s value bit for bit.
        let sig = candle_nn::ops::sigmoid(&gates.broadcast_mul(&w.gate_scale)?)?;
        let g = sig.narrow(2, 2 * d, d)?.affine(2.0, -1.0)?;
        let lstm_c = sig
            .narrow(2, d, d)?
            .mul(c_mb)?
            .add(&sig.narrow(2, 0, d)?.mul(&g)?)?;
        let lstm_h = sig.narrow(2, 3 * d, d)?.mul(&fast_tanh(&lstm_c)?)?;
        Ok((lstm_h, lstm_c))
    }

    /// Spec §4.5, communication over every module's candidate `h̃` (`[M, B, d]`), whose gradient
    /// reaches active modules only: attention, the gated update `Δ` (`fc` dropout in training)
    /// and `ĥ = h̃ + Δ`. Fused: [`communication`](crate::brims_seq::forward::communication).
    fn communication(
        &self,
        s: &LayerSizes,
        w: &LayerParams,
        lstm_h: &Tensor,
        active: &[bool],
    ) -> Result<Communication> {
        let (m, b, d) = lstm_h.dims3()?;
        let (dtype, dev) = (lstm_h.dtype(), lstm_h.device());
        let mask_mb: Vec<f64> = (0..m * b)
            .map(|i| f64::from(u8::from(active[(i % b) * m + i / b])))
            .collect();
        let mask_mb = Tensor::from_vec(mask_mb, (m, b, 1), dev)?.to_dtype(dtype)?;
        let h_att = lstm_h
            .broadcast_mul(&mask_mb)?
            .add(&lstm_h.detach().broadcast_mul(&mask_mb.affine(-1.0, 1.0)?)?)?;
        let (heads, key, value) = (s.comm_heads, s.comm_key, s.comm_value);
        let qkv = h_att.matmul(&w.comm_qkv)?;
        let split_heads = |off: usize, width: usize| -> Result<Tensor> {
            qkv.narrow(2, off, heads * width)?
                .reshape((m, b, heads, width))?
                .permute((1, 2, 0, 3))?
                .contiguous()?
                .reshape((b * heads, m, width))
        };
        let queries = split_heads(0, key)?;
        let keys = split_heads(heads * key, key)?;
        let values = split_heads(2 * heads * key, value)?;
        let probs = softmax_last(
            &queries
                .matmul(&keys.t()?)?
                .affine(1.0 / (key as f64).sqrt(), 0.0)?,
        )?;
        let u = probs
            .matmul(&values)?
            .reshape((b, heads, m, value))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((b * m, heads * value))?;
        let fc_gate = u.matmul(&w.comm_out_w)?.broadcast_add(&w.comm_out_b)?;
        let mut fc = fc_gate.narrow(1, 0, d)?;
        if self.training && self.cfg.comm_dropout > 0.0 {
            fc = candle_nn::ops::dropout(&fc, self.cfg.comm_dropout)?;
        }
        let update = candle_nn::ops::sigmoid(&fc_gate.narrow(1, d, d)?)?
            .mul(&fast_tanh(&fc)?)?
            .reshape((b, m, d))?;
        let h_new = lstm_h.transpose(0, 1)?.add(&update)?;
        Ok(Communication {
            probs: probs.reshape((b, heads, m, m))?,
            update,
            h_new,
        })
    }

    /// Spec §4.6, commit: active modules take `ĥ` (`h_new`, `[B, M, d]`) and `c̃` (`[M, B, d]`),
    /// inactive ones copy the previous `h` and `c` (`[B, N]`) bit-exactly. Returns the new `h`,
    /// `c` (`[B, N]`). Fused: [`commit`](crate::brims_seq::forward::commit).
    fn commit(
        s: &LayerSizes,
        active: &[bool],
        h_new: &Tensor,
        lstm_c: &Tensor,
        h: &Tensor,
        c: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let b = h.dim(0)?;
        let (m, d) = (s.modules, s.module_size);
        let mask: Vec<u8> = active.iter().map(|&a| u8::from(a)).collect();
        let pred = Tensor::from_vec(mask, (b, m, 1), h.device())?.broadcast_as((b, m, d))?;
        let h_out = pred
            .where_cond(h_new, &h.reshape((b, m, d))?)?
            .reshape((b, s.hidden))?;
        let c_out = pred
            .where_cond(&lstm_c.transpose(0, 1)?, &c.reshape((b, m, d))?)?
            .reshape((b, s.hidden))?;
        Ok((h_out, c_out))
    }

    fn finish(
        outs: Vec<LayerOut>,
        traced: bool,
        output: CoreOutput,
    ) -> Result<(Tensor, CoreState, Option<StepTrace>)> {
        let trace = traced.then(|| -> Result<StepTrace> {
            Ok(StepTrace {
                layers: outs
                    .iter()
                    .map(|o| -> Result<LayerTrace> {
                        let (attention_entropy, read_rms, slot_attention) = attention_stats(o)?;
                        Ok(LayerTrace {
                            num_modules: o.null.dims().get(1).copied().unwrap_or(0),
                            active: o.active.clone(),
                            null_attention: o.null_scores.iter().map(|&x| x as f32).collect(),
                            attention_entropy,
                            read_rms,
                            slot_attention,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            })
        });
        let trace = trace.transpose()?;
        let mut parts = Vec::with_capacity(2 * outs.len());
        for o in outs {
            parts.push(o.h);
            parts.push(o.c);
        }
        let out = match output {
            CoreOutput::Top => parts[parts.len() - 2].clone(),
            CoreOutput::AllLayers => {
                let hs: Vec<&Tensor> = parts.iter().step_by(2).collect();
                Tensor::cat(&hs, 1)?
            }
        };
        Ok((out, CoreState { parts }, trace))
    }

    /// The tie-break rule in use.
    pub fn tie_break(&self) -> TieBreak {
        self.cfg.tie_break
    }
}

/// What [`Brims::input_attention`] computes.
struct InputAttention {
    /// `[B, Hi, M, S + 1]` attention, null slot first.
    probs: Tensor,
    /// `[B, M]` head-averaged null attention.
    null: Tensor,
    /// `[M, B, Hi·dv]` the reads (the module LSTMs' inputs).
    read: Tensor,
}

/// What [`Brims::communication`] computes.
struct Communication {
    /// `[B, Hc, M, M]` attention.
    probs: Tensor,
    /// `[B, M, d]` the gated update `Δ`.
    update: Tensor,
    /// `[B, M, d]` `ĥ = h̃ + Δ`.
    h_new: Tensor,
}

impl Brims {
    /// Every weight the fused pass reads, in `brims_seq`'s packing order (layer 0's
    /// bottom-up key/value matrix is applied outside, to all steps at once).
    fn fused_weights(&self) -> Vec<&Tensor> {
        let mut out = Vec::new();
        for (l, ly) in self.layers.iter().enumerate() {
            out.push(&ly.inp_q);
            out.extend(ly.inp_kv.iter().skip(usize::from(l == 0)));
            out.extend([
                &ly.lstm_ih,
                &ly.lstm_hh,
                &ly.lstm_b,
                &ly.comm_qkv,
                &ly.comm_out_w,
                &ly.comm_out_b,
            ]);
        }
        out
    }

    /// Whether the fused loops run for these tensors: CPU f32/f64, and no dropout in use
    /// (dropout runs on the candle path).
    fn fused_for(&self, t: &Tensor) -> bool {
        let dropout = self.training && (self.cfg.read_dropout > 0.0 || self.cfg.comm_dropout > 0.0);
        crate::lstm_seq::fused_supported(t.device(), t.dtype()) && !dropout
    }

    /// `[T, B, W]` committed states (`W = Σ 2·N_l`, rows `[h_0, c_0, h_1, …]`) into the top
    /// layer's outputs `[T, B, N_top]` and the state after the last step.
    fn split_states(&self, out: &Tensor) -> Result<(Tensor, CoreState)> {
        let steps = out.dim(0)?;
        let last = out.get(steps - 1)?;
        let mut parts = Vec::with_capacity(2 * self.layers.len());
        let mut off = 0;
        for s in &self.sizes {
            // Contiguous: the learner stores and index-selects state parts.
            parts.push(last.narrow(1, off, s.hidden)?.contiguous()?);
            parts.push(last.narrow(1, off + s.hidden, s.hidden)?.contiguous()?);
            off += 2 * s.hidden;
        }
        let y = match self.cfg.output {
            CoreOutput::Top => {
                let top = self.sizes.last().map_or(0, |s| s.hidden);
                out.narrow(2, off - 2 * top, top)?
            }
            CoreOutput::AllLayers => {
                let mut hs = Vec::with_capacity(self.layers.len());
                let mut off = 0;
                for s in &self.sizes {
                    hs.push(out.narrow(2, off, s.hidden)?);
                    off += 2 * s.hidden;
                }
                Tensor::cat(&hs, 2)?
            }
        };
        Ok((y, CoreState { parts }))
    }

    /// The fused, differentiable sequence pass (see `brims_seq`).
    fn seq_fused(
        &self,
        inputs: &Tensor,
        keep: Vec<f64>,
        start: &CoreState,
    ) -> Result<(Tensor, CoreState)> {
        let (steps, batch, e) = inputs.dims3()?;
        let kv0 = self
            .slot_input(&inputs.reshape((steps * batch, e))?)?
            .matmul(&self.layers[0].inp_kv[0])?;
        let kv0 = kv0.reshape((steps, batch, kv0.dim(1)?))?;
        let flat: Vec<Tensor> = self
            .fused_weights()
            .into_iter()
            .map(|w| w.flatten_all())
            .collect::<Result<_>>()?;
        let packed = Tensor::cat(&flat, 0)?;
        let state0 = Tensor::cat(&start.parts, 1)?.contiguous()?;
        let op = BrimsSeqOp::new(self.sizes.clone(), steps, batch, keep, self.cfg.tie_break);
        let out = kv0.contiguous()?.apply_op3(&packed, &state0, op)?;
        self.split_states(&out)
    }

    /// One forward-only fused step (acting): no autograd node, the weights read in place.
    fn act_fused<T: crate::kernels::Real + Send + Sync>(
        &self,
        input: &Tensor,
        state: &CoreState,
        keep: Vec<f64>,
        traced: bool,
    ) -> Result<(Tensor, CoreState, Option<StepTrace>)> {
        let batch = input.dim(0)?;
        let kv0 = self
            .slot_input(&input.detach())?
            .matmul(&self.layers[0].inp_kv[0].detach())?
            .flatten_all()?
            .to_vec1::<T>()?;
        let state0 = Tensor::cat(&state.parts, 1)?
            .flatten_all()?
            .to_vec1::<T>()?;
        let tensors = self.fused_weights();
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let slices = crate::kernels::cpu_slices::<T, _>(&guards, "brims")?;
        let weights = brims_seq::layer_weights(&self.sizes, &slices)?;
        let plan = brims_seq::Plan {
            sizes: &self.sizes,
            steps: 1,
            batch,
        };
        let (out, saved) =
            brims_seq::forward_rows(&plan, &weights, &kv0, &state0, &keep, self.cfg.tie_break);
        let width = plan.width();
        let out = Tensor::from_vec(out, (1, batch, width), input.device())?;
        let (y, next) = self.split_states(&out)?;
        let trace = traced.then(|| StepTrace {
            layers: self
                .sizes
                .iter()
                .enumerate()
                .map(|(l, s)| {
                    let (active, null) = brims_seq::selection_rows(&saved, l, 1, batch, s.modules);
                    let (entropy, read_rms, slots) =
                        brims_seq::attention_rows(&saved, l, s, 1, batch);
                    LayerTrace {
                        num_modules: s.modules,
                        active,
                        null_attention: null.iter().map(|&x| x as f32).collect(),
                        attention_entropy: entropy.iter().map(|&x| x as f32).collect(),
                        read_rms: read_rms.iter().map(|&x| x as f32).collect(),
                        slot_attention: slots.iter().map(|&x| x as f32).collect(),
                    }
                })
                .collect(),
        });
        Ok((y.squeeze(0)?, next, trace))
    }
}

impl Core for Brims {
    fn input_size(&self) -> usize {
        self.input_size
    }

    fn output_size(&self) -> usize {
        self.cfg.output_size()
    }

    fn forward_flops(&self) -> u64 {
        self.sizes.iter().map(LayerSizes::forward_flops).sum()
    }

    fn zero_state(&self, batch: usize) -> Result<CoreState> {
        let dev = self.layers[0].inp_q.device();
        let mut parts = Vec::with_capacity(2 * self.layers.len());
        for s in &self.sizes {
            let z = Tensor::zeros((batch, s.hidden), self.dtype(), dev)?;
            parts.push(z.clone());
            parts.push(z);
        }
        Ok(CoreState { parts })
    }

    fn step(&self, input: &Tensor, state: &CoreState) -> Result<(Tensor, CoreState)> {
        let (out, next, _) = Self::finish(
            self.step_layers(input, None, state)?,
            false,
            self.cfg.output,
        )?;
        Ok((out, next))
    }

    fn step_traced(
        &self,
        input: &Tensor,
        state: &CoreState,
    ) -> Result<(Tensor, CoreState, Option<StepTrace>)> {
        Self::finish(self.step_layers(input, None, state)?, true, self.cfg.output)
    }

    fn step_lesioned(
        &self,
        input: &Tensor,
        state: &CoreState,
        lesion: &Lesion,
    ) -> Result<(Tensor, CoreState, Option<StepTrace>)> {
        let outs = self.step_layers_lesioned(input, None, state, lesion)?;
        Self::finish(outs, true, self.cfg.output)
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn act(
        &self,
        input: &Tensor,
        state: &CoreState,
        reset: &Tensor,
        traced: bool,
    ) -> Result<(Tensor, CoreState, Option<StepTrace>)> {
        self.check_input(input).map_err(BrimsError::into_candle)?;
        self.check_state(state)?;
        expect_shape("reset", reset, &[input.dim(0)?]).map_err(BrimsError::into_candle)?;
        if !self.fused_for(input) {
            return act_by_stepping(self, input, state, reset, traced);
        }
        let keep = keep_values(reset)?;
        match input.dtype() {
            DType::F64 => self.act_fused::<f64>(input, state, keep, traced),
            _ => self.act_fused::<f32>(input, state, keep, traced),
        }
    }

    fn seq(
        &self,
        inputs: &Tensor,
        resets: &Tensor,
        start: &CoreState,
    ) -> Result<(Tensor, CoreState)> {
        self.check_input(inputs).map_err(BrimsError::into_candle)?;
        self.check_state(start)?;
        let (steps, batch, e) = inputs.dims3()?;
        expect_shape("resets", resets, &[steps, batch]).map_err(BrimsError::into_candle)?;
        if steps > 0 && batch > 0 && self.fused_for(inputs) {
            return self.seq_fused(inputs, keep_values(resets)?, start);
        }
        // Layer 0's bottom-up keys and values for all steps in one matmul.
        let kv0 = self
            .slot_input(&inputs.reshape((steps * batch, e))?)?
            .matmul(&self.layers[0].inp_kv[0])?;
        let kv0 = kv0.reshape((steps, batch, kv0.dim(1)?))?;
        let kv0 = split_steps(&kv0)?;
        let keep = resets.affine(-1.0, 1.0)?;
        // Masking a step without resets multiplies by exactly 1: skip it (fewer graph nodes).
        let any_reset: Vec<bool> = resets
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?
            .iter()
            .map(|row| row.iter().any(|&r| r != 0.0))
            .collect();
        let mut state = start.clone();
        let mut outputs = Vec::with_capacity(steps);
        for (t, kv0_t) in kv0.into_iter().enumerate() {
            if any_reset[t] {
                state = state.masked(&keep.get(t)?)?;
            }
            let outs = self.step_layers(&inputs.get(t)?, Some(kv0_t), &state)?;
            let (out, next, _) = Self::finish(outs, false, self.cfg.output)?;
            outputs.push(out);
            state = next;
        }
        Ok((Tensor::stack(&outputs, 0)?, state))
    }
}

impl candle_nn::rnn::RNN for Brims {
    type State = CoreState;

    fn zero_state(&self, batch_dim: usize) -> Result<CoreState> {
        Core::zero_state(self, batch_dim)
    }

    fn step(&self, input: &Tensor, state: &CoreState) -> Result<CoreState> {
        Ok(Core::step(self, input, state)?.1)
    }

    /// The top layer's `h` of every state, `[B, T, N_{L-1}]` (as candle's LSTM).
    fn states_to_tensor(&self, states: &[CoreState]) -> Result<Tensor> {
        let top = 2 * (self.layers.len() - 1);
        let hs: Vec<Tensor> = states.iter().map(|s| s.parts[top].clone()).collect();
        Tensor::stack(&hs, 1)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::config::{BrimsLayerConfig, CommAttentionConfig, InputAttentionConfig};

    /// The FLOP count applies every weight tensor the layer holds once per env and step (the
    /// shared communication output layer once per module) and adds the attention contractions.
    #[test]
    fn forward_flops_apply_every_weight_once_plus_the_attention_contractions() {
        let layer = |hidden_size, modules, active| BrimsLayerConfig {
            hidden_size,
            modules,
            active,
        };
        let cfg = BrimsConfig::with_layers(vec![layer(12, 4, 2), layer(8, 2, 1)]);
        let vm = VarMap::new();
        let core = Brims::new(
            &cfg,
            5,
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let mut expected = 0;
        for (p, s) in core.layers.iter().zip(&core.sizes) {
            let m = s.modules;
            let weights = p.inp_q.elem_count()
                + p.inp_kv.iter().map(Tensor::elem_count).sum::<usize>()
                + p.lstm_ih.elem_count()
                + p.lstm_hh.elem_count()
                + p.comm_qkv.elem_count()
                + m * p.comm_out_w.elem_count();
            let attention = m * (s.slots() + 1) * s.input_heads * (s.input_key + s.input_value)
                + m * m * s.comm_heads * (s.comm_key + s.comm_value);
            expected += 2 * (weights + attention) as u64;
        }
        assert!(core.sizes[1].top_down.is_none() && core.sizes[0].top_down == Some(1));
        assert_eq!(core.forward_flops(), expected);
    }

    /// `seq` (one projection of layer 0's keys/values, chunked slicing, reset masks only where
    /// resets occur) gives the step loop's outputs and gradients, to every parameter and the
    /// input, over a length that leaves a partial last chunk.
    #[test]
    fn seq_gradients_match_the_step_loop() {
        let layer = |hidden_size, modules, active| BrimsLayerConfig {
            hidden_size,
            modules,
            active,
        };
        let mut cfg = BrimsConfig::with_layers(vec![layer(8, 4, 2), layer(6, 3, 2)]);
        cfg.input_attention = InputAttentionConfig {
            heads: 2,
            key_size: 4,
            value_size: Some(3),
        };
        cfg.comm_attention = CommAttentionConfig {
            heads: 2,
            key_size: 3,
            value_size: 2,
        };
        cfg.attention_init_std = 0.7;
        let (steps, batch, e) = (7, 2, 3);
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let core = Brims::new(&cfg, e, VarBuilder::from_varmap(&vm, DType::F64, &dev)).unwrap();
        let xs =
            Var::from_tensor(&Tensor::randn(0f64, 1.0, (steps, batch, e), &dev).unwrap()).unwrap();
        let mut resets = vec![0f64; steps * batch];
        resets[2 * batch + 1] = 1.0;
        resets[5 * batch] = 1.0;
        let resets = Tensor::from_vec(resets, (steps, batch), &dev).unwrap();
        let start = CoreState {
            parts: core
                .zero_state(batch)
                .unwrap()
                .parts
                .iter()
                .map(|p| Tensor::randn(0f64, 1.0, p.dims(), &dev).unwrap())
                .collect(),
        };
        let w = Tensor::randn(0f64, 1.0, (steps, batch, 6), &dev).unwrap();

        let (ys, _) = core.seq(&xs, &resets, &start).unwrap();
        let seq_grads = ys.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let mut state = start.clone();
        let mut outs = Vec::new();
        for t in 0..steps {
            let (y, next) = core
                .step_with_reset(&xs.get(t).unwrap(), &state, &resets.get(t).unwrap())
                .unwrap();
            outs.push(y);
            state = next;
        }
        let loop_ys = Tensor::stack(&outs, 0).unwrap();
        let loop_grads = loop_ys
            .mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let max_diff = |a: &Tensor, b: &Tensor| -> f64 {
            a.sub(b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert!(max_diff(&ys, &loop_ys) < 1e-12);
        let mut vars = vm.all_vars();
        vars.push(xs.clone());
        for v in &vars {
            let (a, b) = (seq_grads.get(v).unwrap(), loop_grads.get(v).unwrap());
            assert!(max_diff(a, b) < 1e-12, "{:?}", v.dims());
        }
        let xs_grad = seq_grads.get(&xs).unwrap();
        assert!(
            xs_grad
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                > 0.0
        );
    }
}
