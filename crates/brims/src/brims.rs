//! The BRIMs core (spec §§4.1–4.7): layers of modules with input attention, top-k selection,
//! per-module LSTMs computed in one batched matmul, and gated communication.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::brims_seq::{self, BrimsSeqOp};
use crate::config::{AttentionInit, BrimsConfig, CoreOutput, LstmInit, TieBreak, TopDown};
use crate::core::{act_by_stepping, Core, CoreState, LayerTrace, StepTrace};
use crate::error::BrimsError;
use crate::lstm::{check_width, expect_shape, fast_tanh};
use crate::topk::active_modules;

/// ε of `slot_norm`'s variance (as torch's LayerNorm).
pub(crate) const SLOT_NORM_EPS: f64 = 1e-5;

/// One BRIMs layer's sizes and parameters. Every weight is stored `[.., in, out]` so a forward
/// `x.matmul(&w)` reads it as stored and its gradient accumulates contiguously.
#[derive(Clone, Debug)]
struct Layer {
    hidden: usize,
    modules: usize,
    module_size: usize,
    active: usize,
    /// Layer whose previous-step `h` is this layer's top-down slot, if any.
    top_down: Option<usize>,
    inp_heads: usize,
    inp_key: usize,
    inp_value: usize,
    comm_heads: usize,
    comm_key: usize,
    comm_value: usize,
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
    /// `[4d]`: 1 on the `i, f, o` gate columns, 2 on `g` (see `layer_step`); a constant.
    gate_scale: Tensor,
}

/// Everything one layer computed at one step (kept for the fixture checker and the trace).
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
    layers: Vec<Layer>,
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
    let flat = |x: Tensor| -> Result<Vec<f32>> {
        Ok(x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
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

/// Sizes of layer `l` derived from the config (before any parameter exists).
#[derive(Clone, Debug)]
pub(crate) struct LayerSizes {
    /// `N_l`.
    pub hidden: usize,
    /// `M_l`.
    pub modules: usize,
    /// `d_l = N_l / M_l`.
    pub d: usize,
    /// `k_l`.
    pub active: usize,
    /// Layer whose previous-step `h` is the top-down slot, if any.
    pub top_down: Option<usize>,
    /// Widths of the real slots: bottom-up, then top-down if any.
    pub slot_widths: Vec<usize>,
    /// Input attention heads, key and value size.
    pub hi: usize,
    pub dk: usize,
    pub dv: usize,
    /// Communication heads, key and value size.
    pub hc: usize,
    pub dkc: usize,
    pub dvc: usize,
    /// Whether slot inputs are normalised before their projection (`slot_norm`).
    pub slot_norm: bool,
}

fn layer_sizes(cfg: &BrimsConfig, input_size: usize) -> Vec<LayerSizes> {
    let n_layers = cfg.layers.len();
    (0..n_layers)
        .map(|l| {
            let lc = cfg.layers[l];
            let top_down = match cfg.top_down {
                TopDown::Reference => (l == 0).then_some(n_layers - 1),
                TopDown::Paper => (l + 1 < n_layers).then_some(l + 1),
                TopDown::None => None,
            };
            let bottom = if l == 0 {
                input_size
            } else {
                cfg.layers[l - 1].hidden_size
            };
            let mut slot_widths = vec![bottom];
            if let Some(src) = top_down {
                slot_widths.push(cfg.layers[src].hidden_size);
            }
            let d = lc.hidden_size / lc.modules;
            LayerSizes {
                hidden: lc.hidden_size,
                modules: lc.modules,
                d,
                active: lc.active,
                top_down,
                slot_widths,
                hi: cfg.input_attention.heads,
                dk: cfg.input_attention.key_size,
                dv: cfg.input_attention.value_size.unwrap_or(d),
                hc: cfg.comm_attention.heads,
                dkc: cfg.comm_attention.key_size,
                dvc: cfg.comm_attention.value_size,
                slot_norm: cfg.slot_norm,
            }
        })
        .collect()
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
        let mut layers = Vec::new();
        for (l, s) in layer_sizes(cfg, input_size).into_iter().enumerate() {
            let vb = vb.pp(format!("layer{l}"));
            let (m, d) = (s.modules, s.d);
            let lstm = uniform(match cfg.lstm_init {
                LstmInit::Reference => s.hidden,
                LstmInit::Module => d,
            });
            let inp_kv = s
                .slot_widths
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    vb.get_with_hints(
                        (w, s.hi * (s.dk + s.dv)),
                        &format!("inp_kv{i}"),
                        projection(w),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let out = s.hc * s.dvc;
            layers.push(Layer {
                inp_q: vb.get_with_hints((m, d, s.hi * s.dk), "inp_q", projection(d))?,
                inp_kv,
                lstm_ih: vb.get_with_hints((m, s.hi * s.dv, 4 * d), "lstm_ih", lstm)?,
                lstm_hh: vb.get_with_hints((m, d, 4 * d), "lstm_hh", lstm)?,
                lstm_b: vb.get_with_hints((m, 1, 4 * d), "lstm_b", lstm)?,
                comm_qkv: vb.get_with_hints(
                    (m, d, s.hc * (2 * s.dkc + s.dvc)),
                    "comm_qkv",
                    projection(d),
                )?,
                comm_out_w: vb.get_with_hints((out, 2 * d), "comm_out_w", uniform(out))?,
                comm_out_b: vb.get_with_hints(2 * d, "comm_out_b", uniform(out))?,
                ..Self::sizes_only(&s, vb.device(), vb.dtype())?
            });
        }
        Ok(Brims {
            cfg: cfg.clone(),
            layers,
            sizes: layer_sizes(cfg, input_size),
            input_size,
            training: false,
        })
    }

    fn sizes_only(s: &LayerSizes, dev: &Device, dtype: DType) -> Result<Layer> {
        let z = Tensor::zeros(1, dtype, dev)?;
        Ok(Layer {
            hidden: s.hidden,
            modules: s.modules,
            module_size: s.d,
            active: s.active,
            top_down: s.top_down,
            inp_heads: s.hi,
            inp_key: s.dk,
            inp_value: s.dv,
            comm_heads: s.hc,
            comm_key: s.dkc,
            comm_value: s.dvc,
            inp_q: z.clone(),
            inp_kv: vec![],
            lstm_ih: z.clone(),
            lstm_hh: z.clone(),
            lstm_b: z.clone(),
            comm_qkv: z.clone(),
            comm_out_w: z.clone(),
            comm_out_b: z,
            gate_scale: Tensor::cat(
                &[
                    Tensor::ones(2 * s.d, dtype, dev)?,
                    Tensor::full(2f64, s.d, dev)?.to_dtype(dtype)?,
                    Tensor::ones(s.d, dtype, dev)?,
                ],
                0,
            )?,
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
        let mut layers = Vec::new();
        for (l, s) in layer_sizes(cfg, input_size).into_iter().enumerate() {
            let get = |name: &str, shape: &[usize]| -> std::result::Result<Tensor, BrimsError> {
                let full = format!("{prefix}{l}.{name}");
                let t = tensors
                    .get(&full)
                    .ok_or_else(|| BrimsError::MissingTensor { name: full.clone() })?;
                expect_shape(&full, t, shape)?;
                Ok(t.clone())
            };
            let (m, d, n) = (s.modules, s.d, s.hidden);
            let slots = s.slot_widths.len() + 1;
            let width = s.slot_widths[0];
            if s.slot_widths.iter().any(|&w| w != width) {
                return Err(BrimsError::FixtureMismatch(format!(
                    "the reference stores one key/value width per layer; layer {l} has slot widths {:?}",
                    s.slot_widths
                )));
            }
            let ks = get("inp_att.GLN_ks.w", &[slots, width, s.hi * s.dk])?;
            let vs = get("inp_att.GLN_vs.w", &[slots, width, s.hi * s.dv])?;
            let inp_kv = (1..slots)
                .map(|i| Tensor::cat(&[ks.get(i)?, vs.get(i)?], 1))
                .collect::<Result<Vec<_>>>()?;
            let r = s.hi * s.dv;
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
            let cq = s.hc * s.dkc;
            let comm_qkv = Tensor::cat(
                &[
                    get("mha.GLN_qs.w", &[m, d, cq])?,
                    get("mha.GLN_ks.w", &[m, d, cq])?,
                    get("mha.GLN_vs.w", &[m, d, s.hc * s.dvc])?,
                ],
                2,
            )?;
            let out = s.hc * s.dvc;
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
            layers.push(Layer {
                inp_q: get("inp_att.GLN_qs.w", &[m, d, s.hi * s.dk])?,
                inp_kv,
                lstm_ih: Tensor::stack(&ih, 0)?,
                lstm_hh: Tensor::stack(&hh, 0)?,
                lstm_b: Tensor::stack(&bias, 0)?,
                comm_qkv,
                comm_out_w,
                comm_out_b,
                ..Self::sizes_only(&s, &dev, ks.dtype())?
            });
        }
        Ok(Brims {
            cfg: cfg.clone(),
            layers,
            sizes: layer_sizes(cfg, input_size),
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

    /// One step of every layer. `bottom_kv` is layer 0's bottom-up keys/values if already
    /// projected (the sequence pass projects all steps at once).
    pub(crate) fn step_layers(
        &self,
        input: &Tensor,
        bottom_kv: Option<Tensor>,
        state: &CoreState,
    ) -> Result<Vec<LayerOut>> {
        self.check_input(input).map_err(BrimsError::into_candle)?;
        self.check_state(state)?;
        let mut outs: Vec<LayerOut> = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let bottom_kv = match (l, &bottom_kv) {
                (0, Some(kv)) => kv.clone(),
                (0, None) => self.slot_input(input)?.matmul(&layer.inp_kv[0])?,
                _ => self.slot_input(&outs[l - 1].h)?.matmul(&layer.inp_kv[0])?,
            };
            let mut kv = vec![bottom_kv];
            if let Some(src) = layer.top_down {
                kv.push(
                    self.slot_input(&state.parts[2 * src])?
                        .matmul(&layer.inp_kv[1])?,
                );
            }
            let out = self.layer_step(layer, &kv, &state.parts[2 * l], &state.parts[2 * l + 1])?;
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
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred.broadcast_div(&(var + SLOT_NORM_EPS)?.sqrt()?)
    }

    fn layer_step(&self, ly: &Layer, kv: &[Tensor], h: &Tensor, c: &Tensor) -> Result<LayerOut> {
        let b = h.dim(0)?;
        let (m, d) = (ly.modules, ly.module_size);
        let (hi, dk, dv) = (ly.inp_heads, ly.inp_key, ly.inp_value);
        let slots = kv.len();
        // [M, B, d] views of the previous state: batched matmuls take them without a copy.
        let h_mb = h.reshape((b, m, d))?.transpose(0, 1)?;
        let c_mb = c.reshape((b, m, d))?.transpose(0, 1)?;

        // Input attention (spec §4.2). The null slot's key and value are exactly zero.
        let q = h_mb
            .matmul(&ly.inp_q)?
            .reshape((m, b, hi, dk))?
            .permute((1, 2, 0, 3))?
            .contiguous()?
            .reshape((b * hi, m, dk))?;
        let split = |t: &Tensor, off: usize, width: usize| -> Result<Tensor> {
            t.narrow(1, off, hi * width)?.reshape((b, hi, 1, width))
        };
        let keys = kv
            .iter()
            .map(|t| split(t, 0, dk))
            .collect::<Result<Vec<_>>>()?;
        let values = kv
            .iter()
            .map(|t| split(t, hi * dk, dv))
            .collect::<Result<Vec<_>>>()?;
        let keys = Tensor::cat(&keys, 2)?.reshape((b * hi, slots, dk))?;
        let values = Tensor::cat(&values, 2)?.reshape((b * hi, slots, dv))?;
        let logits = q
            .matmul(&keys.t()?)?
            .affine(1.0 / (dk as f64).sqrt(), 0.0)?;
        let null_logit = Tensor::zeros((b * hi, m, 1), logits.dtype(), logits.device())?;
        let probs = softmax_last(&Tensor::cat(&[&null_logit, &logits], 2)?)?;
        let null = probs.narrow(2, 0, 1)?.reshape((b, hi, m))?.mean(1)?;
        let mut read = probs
            .narrow(2, 1, slots)?
            .matmul(&values)?
            .reshape((b, hi, m, dv))?
            .permute((2, 0, 1, 3))?
            .contiguous()?
            .reshape((m, b, hi * dv))?;
        if self.training && self.cfg.read_dropout > 0.0 {
            read = candle_nn::ops::dropout(&read, self.cfg.read_dropout)?;
        }

        // Selection (spec §4.3): on the CPU, over a small [B, M] matrix.
        let null_scores: Vec<f64> = null.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let mut active = Vec::with_capacity(b * m);
        for row in null_scores.chunks(m) {
            active.extend(active_modules(row, ly.active, self.cfg.tie_break));
        }

        // Per-module LSTMs, all modules in one batched op (spec §4.4).
        let gates = read
            .matmul(&ly.lstm_ih)?
            .add(&h_mb.matmul(&ly.lstm_hh)?)?
            .broadcast_add(&ly.lstm_b)?;
        // One sigmoid over all four gates: the `g` columns are doubled first (exact), so they
        // come out as σ(2x) and `g = 2σ(2x) − 1` is `fast_tanh`'s value bit for bit.
        let sig = candle_nn::ops::sigmoid(&gates.broadcast_mul(&ly.gate_scale)?)?;
        let g = sig.narrow(2, 2 * d, d)?.affine(2.0, -1.0)?;
        let lstm_c = sig
            .narrow(2, d, d)?
            .mul(&c_mb)?
            .add(&sig.narrow(2, 0, d)?.mul(&g)?)?;
        let lstm_h = sig.narrow(2, 3 * d, d)?.mul(&fast_tanh(&lstm_c)?)?;

        // Communication (spec §4.5). Its input is h̃ with the gradient masked to active modules.
        let dtype = h.dtype();
        let dev = h.device();
        let mask_mb: Vec<f64> = (0..m * b)
            .map(|i| f64::from(u8::from(active[(i % b) * m + i / b])))
            .collect();
        let mask_mb = Tensor::from_vec(mask_mb, (m, b, 1), dev)?.to_dtype(dtype)?;
        let h_att = lstm_h
            .broadcast_mul(&mask_mb)?
            .add(&lstm_h.detach().broadcast_mul(&mask_mb.affine(-1.0, 1.0)?)?)?;
        let (hc, dkc, dvc) = (ly.comm_heads, ly.comm_key, ly.comm_value);
        let qkv = h_att.matmul(&ly.comm_qkv)?;
        let heads = |off: usize, width: usize| -> Result<Tensor> {
            qkv.narrow(2, off, hc * width)?
                .reshape((m, b, hc, width))?
                .permute((1, 2, 0, 3))?
                .contiguous()?
                .reshape((b * hc, m, width))
        };
        let cq = heads(0, dkc)?;
        let ck = heads(hc * dkc, dkc)?;
        let cv = heads(2 * hc * dkc, dvc)?;
        let comm_probs = softmax_last(
            &cq.matmul(&ck.t()?)?
                .affine(1.0 / (dkc as f64).sqrt(), 0.0)?,
        )?;
        let u = comm_probs
            .matmul(&cv)?
            .reshape((b, hc, m, dvc))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((b * m, hc * dvc))?;
        let fg = u.matmul(&ly.comm_out_w)?.broadcast_add(&ly.comm_out_b)?;
        let mut fc = fg.narrow(1, 0, d)?;
        if self.training && self.cfg.comm_dropout > 0.0 {
            fc = candle_nn::ops::dropout(&fc, self.cfg.comm_dropout)?;
        }
        let comm_upd = candle_nn::ops::sigmoid(&fg.narrow(1, d, d)?)?
            .mul(&fast_tanh(&fc)?)?
            .reshape((b, m, d))?;
        let h_new = lstm_h.transpose(0, 1)?.add(&comm_upd)?;

        // Commit (spec §4.6): inactive modules copy h and c bit-exactly.
        let mask_bm: Vec<u8> = active.iter().map(|&a| u8::from(a)).collect();
        let pred = Tensor::from_vec(mask_bm, (b, m, 1), dev)?.broadcast_as((b, m, d))?;
        let h_out = pred
            .where_cond(&h_new, &h.reshape((b, m, d))?)?
            .reshape((b, ly.hidden))?;
        let c_out = pred
            .where_cond(&lstm_c.transpose(0, 1)?, &c.reshape((b, m, d))?)?
            .reshape((b, ly.hidden))?;
        Ok(LayerOut {
            inp_probs: probs.reshape((b, hi, m, slots + 1))?,
            null,
            active,
            null_scores,
            read,
            lstm_h,
            lstm_c,
            comm_probs: comm_probs.reshape((b, hc, m, m))?,
            comm_upd,
            h: h_out,
            c: c_out,
        })
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

impl Brims {
    /// Every weight the fused pass reads, flat, in `brims_seq::weight_lens` order (layer 0's
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
        for ly in &self.layers {
            // Contiguous: the learner stores and index-selects state parts.
            parts.push(last.narrow(1, off, ly.hidden)?.contiguous()?);
            parts.push(last.narrow(1, off + ly.hidden, ly.hidden)?.contiguous()?);
            off += 2 * ly.hidden;
        }
        let y = match self.cfg.output {
            CoreOutput::Top => {
                let top = self.layers.last().map_or(0, |l| l.hidden);
                out.narrow(2, off - 2 * top, top)?
            }
            CoreOutput::AllLayers => {
                let mut hs = Vec::with_capacity(self.layers.len());
                let mut off = 0;
                for ly in &self.layers {
                    hs.push(out.narrow(2, off, ly.hidden)?);
                    off += 2 * ly.hidden;
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
        let slices = guards
            .iter()
            .map(|(storage, layout)| match &**storage {
                candle_core::Storage::Cpu(cpu) => {
                    crate::kernels::contiguous_slice::<T>(cpu, layout)
                }
                _ => candle_core::bail!("brims: the fused step runs on the CPU only"),
            })
            .collect::<Result<Vec<_>>>()?;
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
                .layers
                .iter()
                .enumerate()
                .map(|(l, ly)| {
                    let (active, null) = brims_seq::selection_rows(&saved, l, 1, batch, ly.modules);
                    let (entropy, read_rms, slots) =
                        brims_seq::attention_rows(&saved, l, &self.sizes[l], 1, batch);
                    LayerTrace {
                        num_modules: ly.modules,
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

    fn zero_state(&self, batch: usize) -> Result<CoreState> {
        let dev = self.layers[0].inp_q.device();
        let mut parts = Vec::with_capacity(2 * self.layers.len());
        for l in &self.layers {
            let z = Tensor::zeros((batch, l.hidden), self.dtype(), dev)?;
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
