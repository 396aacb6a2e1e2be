//! Checks the BRIMs cell against golden fixtures produced by the reference code (spec §11).
//!
//! A fixture is `NAME.safetensors` plus `NAME.json` beside it. The JSON gives the config
//! (`config.{ninp, nhid, num_blocks, topk}`), the cases and every tensor's shape; attention
//! sizes are read from the tensors. Nothing of a particular fixture is hard-coded.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::brims::{Brims, LayerOut};
use crate::config::{
    BrimsConfig, BrimsLayerConfig, CommAttentionConfig, InputAttentionConfig, TieBreak, TopDown,
};
use crate::core::{Core, CoreState};
use crate::error::BrimsError;
use crate::lstm::Lstm;

/// The result of one fixture case.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// Case name (`rand`, `zero`, …).
    pub name: String,
    /// The case's float type.
    pub dtype: DType,
    /// Worst absolute error over every compared tensor.
    pub max_abs_err: f64,
    /// The tensor (and step) where it occurred.
    pub worst: String,
    /// How many recorded tensors (per step) were compared.
    pub compared: usize,
    /// Mask entries `(layer, t, b, module)` that differ.
    pub mask_mismatches: Vec<(usize, usize, usize, usize)>,
    /// The tolerance for this dtype (f32: 1e-5, f64: 1e-10).
    pub tolerance: f64,
}

impl CaseReport {
    /// Every mask matches and the error is within tolerance.
    pub fn passed(&self) -> bool {
        self.mask_mismatches.is_empty() && self.max_abs_err <= self.tolerance
    }
}

/// The result of a whole fixture.
#[derive(Clone, Debug)]
pub struct FixtureReport {
    /// One entry per case, in the JSON's order.
    pub cases: Vec<CaseReport>,
}

impl FixtureReport {
    /// Every case passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.cases.is_empty() && self.cases.iter().all(CaseReport::passed)
    }
}

fn mismatch(msg: String) -> BrimsError {
    BrimsError::FixtureMismatch(msg)
}

fn usize_list(cfg: &Value, key: &str) -> Result<Vec<usize>, BrimsError> {
    let v = cfg
        .get(key)
        .ok_or_else(|| mismatch(format!("config.{key} is missing")))?;
    let as_usize = |x: &Value| {
        x.as_u64()
            .map(|u| u as usize)
            .ok_or_else(|| mismatch(format!("config.{key} must hold non-negative integers")))
    };
    match v {
        Value::Array(items) => items.iter().map(as_usize).collect(),
        other => Ok(vec![as_usize(other)?]),
    }
}

struct Tensors {
    map: HashMap<String, Tensor>,
}

impl Tensors {
    fn get(&self, name: &str) -> Result<&Tensor, BrimsError> {
        self.map.get(name).ok_or_else(|| BrimsError::MissingTensor {
            name: name.to_string(),
        })
    }
    fn opt(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }
}

/// Reads `PATH` (safetensors) and the JSON of the same stem, builds the cell from the JSON's
/// config, runs every case and compares every recorded tensor.
pub fn check_fixture(path: &Path) -> Result<FixtureReport, BrimsError> {
    let json_path = path.with_extension("json");
    let text = std::fs::read_to_string(&json_path).map_err(|e| BrimsError::FixtureJson {
        path: json_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|e| BrimsError::FixtureJson {
        path: json_path.display().to_string(),
        reason: e.to_string(),
    })?;
    if !path.exists() {
        return Err(BrimsError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let tensors = Tensors {
        map: candle_core::safetensors::load(path, &Device::Cpu)?,
    };
    verify_listing(&json, &tensors)?;

    let cfg = json
        .get("config")
        .ok_or_else(|| mismatch("the JSON has no `config`".into()))?;
    let ninp = usize_list(cfg, "ninp")?[0];
    let nhid = usize_list(cfg, "nhid")?;
    let blocks = usize_list(cfg, "num_blocks")?;
    let topk = usize_list(cfg, "topk")?;
    if nhid.len() != blocks.len() || nhid.len() != topk.len() {
        return Err(mismatch(format!(
            "config lists {} nhid, {} num_blocks, {} topk",
            nhid.len(),
            blocks.len(),
            topk.len()
        )));
    }
    let layers: Vec<BrimsLayerConfig> = (0..nhid.len())
        .map(|l| BrimsLayerConfig {
            hidden_size: nhid[l],
            modules: blocks[l],
            active: topk[l],
        })
        .collect();
    let mut brims_cfg = BrimsConfig::with_layers(layers);
    brims_cfg.top_down = TopDown::Reference;
    brims_cfg.tie_break = TieBreak::TorchCpu;
    brims_cfg.validate(ninp)?;

    let case_names: Vec<String> = match json.get("cases") {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => return Err(mismatch("the JSON has no `cases` object".into())),
    };
    let mut reports = Vec::new();
    for name in case_names {
        reports.push(run_case(&name, &brims_cfg, ninp, &tensors)?);
    }
    Ok(FixtureReport { cases: reports })
}

/// Every tensor the JSON lists must exist with the listed shape.
fn verify_listing(json: &Value, tensors: &Tensors) -> Result<(), BrimsError> {
    let Some(Value::Object(listing)) = json.get("tensors") else {
        return Ok(());
    };
    for (name, meta) in listing {
        let t = tensors.get(name)?;
        if let Some(Value::Array(shape)) = meta.get("shape") {
            let want: Vec<usize> = shape
                .iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as usize)
                .collect();
            if t.dims() != want.as_slice() {
                return Err(BrimsError::WeightShape {
                    name: name.clone(),
                    expected: want,
                    got: t.dims().to_vec(),
                });
            }
        }
    }
    Ok(())
}

/// Attention sizes from the recorded shapes (heads from the probabilities, sizes from weights).
fn attention_sizes(
    cfg: &mut BrimsConfig,
    case: &str,
    params: &HashMap<String, Tensor>,
    tensors: &Tensors,
) -> Result<(), BrimsError> {
    let heads = |name: &str, default: usize| {
        tensors
            .opt(&format!("case.{case}.l0.{name}"))
            .and_then(|t| t.dims().get(2).copied())
            .unwrap_or(default)
    };
    let width = |name: &str| -> Result<usize, BrimsError> {
        let full = format!("model.bc_lst.0.{name}");
        let t = params
            .get(&full)
            .ok_or(BrimsError::MissingTensor { name: full.clone() })?;
        Ok(t.dims().last().copied().unwrap_or(0))
    };
    let hi = heads("inp_probs", 4);
    let hc = heads("comm_probs", 4);
    let d0 = cfg.layers[0].hidden_size / cfg.layers[0].modules;
    let dv = width("inp_att.GLN_vs.w")? / hi.max(1);
    cfg.input_attention = InputAttentionConfig {
        heads: hi,
        key_size: width("inp_att.GLN_qs.w")? / hi.max(1),
        value_size: (dv != d0).then_some(dv),
    };
    cfg.comm_attention = CommAttentionConfig {
        heads: hc,
        key_size: width("mha.GLN_qs.w")? / hc.max(1),
        value_size: width("mha.GLN_vs.w")? / hc.max(1),
    };
    Ok(())
}

struct Comparer<'a> {
    tensors: &'a Tensors,
    case: String,
    max_err: f64,
    worst: String,
    compared: usize,
}

impl Comparer<'_> {
    /// Compares `ours` with the fixture tensor `name` (step `t` of it when given), if recorded.
    fn cmp(&mut self, name: &str, t: Option<usize>, ours: &Tensor) -> Result<(), BrimsError> {
        self.cmp_as(name, name, t, ours)
    }

    /// [`Comparer::cmp`], naming the comparison `label` in the report.
    fn cmp_as(
        &mut self,
        label: &str,
        name: &str,
        t: Option<usize>,
        ours: &Tensor,
    ) -> Result<(), BrimsError> {
        let full = format!("case.{}.{name}", self.case);
        let Some(theirs) = self.tensors.opt(&full) else {
            return Ok(());
        };
        let theirs = match t {
            Some(t) => theirs.get(t)?,
            None => theirs.clone(),
        };
        if theirs.dims() != ours.dims() {
            return Err(mismatch(format!(
                "{full}: recorded shape {:?}, the cell computed {:?}",
                theirs.dims(),
                ours.dims()
            )));
        }
        let err = ours
            .to_dtype(DType::F64)?
            .sub(&theirs.to_dtype(DType::F64)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        self.compared += 1;
        if err > self.max_err || err.is_nan() {
            self.max_err = if err.is_nan() { f64::INFINITY } else { err };
            self.worst = match t {
                Some(t) => format!("{label}[t={t}]"),
                None => label.to_string(),
            };
        }
        Ok(())
    }
}

fn run_case(
    case: &str,
    base_cfg: &BrimsConfig,
    ninp: usize,
    tensors: &Tensors,
) -> Result<CaseReport, BrimsError> {
    let n_layers = base_cfg.layers.len();
    let init_h0 = tensors.get(&format!("case.{case}.init.h.l0"))?;
    let dtype = init_h0.dtype();
    let batch = init_h0.dim(0)?;
    let conv = |t: &Tensor| t.to_dtype(dtype);
    let params: HashMap<String, Tensor> = tensors
        .map
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("param.").map(|s| (s.to_string(), v)))
        .map(|(k, v)| Ok((k, conv(v)?)))
        .collect::<Result<_, candle_core::Error>>()?;
    let mut cfg = base_cfg.clone();
    attention_sizes(&mut cfg, case, &params, tensors)?;
    let cell = Brims::from_reference(&cfg, ninp, &params, "model.bc_lst.")?;

    let x = conv(tensors.get("input.x")?)?;
    let steps = x.dim(0)?;
    if x.dim(1)? != batch {
        return Err(mismatch(format!(
            "input.x has batch {}, the case's initial state {batch}",
            x.dim(1)?
        )));
    }
    // The encoder is a plain linear layer outside the core; without one, the recorded `emb`
    // is the core's input.
    let emb = match (params.get("encoder.weight"), params.get("encoder.bias")) {
        (Some(w), Some(b)) => x.broadcast_matmul(&w.t()?)?.broadcast_add(b)?,
        _ => conv(tensors.get(&format!("case.{case}.emb"))?)?,
    };
    let mut c = Comparer {
        tensors,
        case: case.to_string(),
        max_err: 0.0,
        worst: String::new(),
        compared: 0,
    };
    c.cmp("emb", None, &emb)?;

    let mut parts = Vec::new();
    for l in 0..n_layers {
        parts.push(conv(tensors.get(&format!("case.{case}.init.h.l{l}"))?)?);
        parts.push(conv(tensors.get(&format!("case.{case}.init.c.l{l}"))?)?);
    }
    let mut state = CoreState { parts };
    let start = state.clone();
    let mut mask_mismatches = Vec::new();
    let mut outputs = Vec::new();
    for t in 0..steps {
        let input = emb.get(t)?;
        let outs: Vec<LayerOut> = cell.step_layers(&input, None, &state)?;
        for (l, o) in outs.iter().enumerate() {
            let (m, b) = (o.lstm_h.dim(0)?, o.lstm_h.dim(1)?);
            let below = if l == 0 { &input } else { &outs[l - 1].h };
            c.cmp(&format!("l{l}.layer_in"), Some(t), below)?;
            c.cmp(&format!("l{l}.inp_probs"), Some(t), &o.inp_probs)?;
            c.cmp(&format!("l{l}.null_attn"), Some(t), &o.null)?;
            c.cmp(&format!("l{l}.inp_read"), Some(t), &o.read.transpose(0, 1)?)?;
            let flat = |x: &Tensor| x.transpose(0, 1)?.reshape((b, ()));
            c.cmp(&format!("l{l}.lstm_h"), Some(t), &flat(&o.lstm_h)?)?;
            c.cmp(&format!("l{l}.lstm_c"), Some(t), &flat(&o.lstm_c)?)?;
            c.cmp(&format!("l{l}.comm_probs"), Some(t), &o.comm_probs)?;
            c.cmp(&format!("l{l}.comm_upd"), Some(t), &o.comm_upd)?;
            c.cmp(&format!("l{l}.h"), Some(t), &o.h)?;
            c.cmp(&format!("l{l}.c"), Some(t), &o.c)?;
            compare_mask(
                tensors,
                case,
                (l, t),
                &o.active,
                b * m,
                m,
                &mut mask_mismatches,
            )?;
        }
        let mut parts = Vec::new();
        for o in outs {
            parts.push(o.h);
            parts.push(o.c);
        }
        state = CoreState { parts };
        let out = state.parts[2 * (n_layers - 1)].clone();
        c.cmp("output", Some(t), &out)?;
        outputs.push(out);
    }
    if let (Some(w), Some(b)) = (params.get("decoder.weight"), params.get("decoder.bias")) {
        let logits = Tensor::stack(&outputs, 0)?
            .broadcast_matmul(&w.t()?)?
            .broadcast_add(b)?;
        c.cmp("logits", None, &logits)?;
    }
    for l in 0..n_layers {
        c.cmp(&format!("final.h.l{l}"), None, &state.parts[2 * l])?;
        c.cmp(&format!("final.c.l{l}"), None, &state.parts[2 * l + 1])?;
    }
    check_fused(
        &cell,
        case,
        &emb,
        &start,
        tensors,
        &mut c,
        &mut mask_mismatches,
    )?;
    check_control_lstm(case, dtype, &x, tensors, &mut c)?;
    Ok(CaseReport {
        name: case.to_string(),
        dtype,
        max_abs_err: c.max_err,
        worst: c.worst,
        compared: c.compared,
        mask_mismatches,
        tolerance: if dtype == DType::F64 { 1e-10 } else { 1e-5 },
    })
}

/// Compares layer `l`'s active modules at step `t` (`[B·M]`, env-major) with the recorded mask,
/// if any; differences go to `mismatches` as `(layer, step, env, module)`.
fn compare_mask(
    tensors: &Tensors,
    case: &str,
    (l, t): (usize, usize),
    active: &[bool],
    expected_len: usize,
    modules: usize,
    mismatches: &mut Vec<(usize, usize, usize, usize)>,
) -> Result<(), BrimsError> {
    let Some(mask) = tensors.opt(&format!("case.{case}.l{l}.mask")) else {
        return Ok(());
    };
    let mask: Vec<f64> = mask
        .get(t)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1()?;
    if mask.len() != expected_len || active.len() != expected_len {
        return Err(mismatch(format!(
            "case.{case}.l{l}.mask has {} entries per step, expected B·M = {expected_len}",
            mask.len()
        )));
    }
    for (i, (&want, &got)) in mask.iter().zip(active).enumerate() {
        if (want > 0.5) != got {
            mismatches.push((l, t, i / modules, i % modules));
        }
    }
    Ok(())
}

/// The fused loops (what acting and the learner run) against the same recordings: acting step
/// by step (every layer's `h`, `c` and mask), and the sequence pass (outputs, final state).
fn check_fused(
    cell: &Brims,
    case: &str,
    emb: &Tensor,
    start: &CoreState,
    tensors: &Tensors,
    c: &mut Comparer,
    mask_mismatches: &mut Vec<(usize, usize, usize, usize)>,
) -> Result<(), BrimsError> {
    let (steps, batch) = (emb.dim(0)?, emb.dim(1)?);
    let no_reset = Tensor::zeros(batch, emb.dtype(), emb.device())?;
    let mut state = start.clone();
    for t in 0..steps {
        let (_, next, trace) = cell.act(&emb.get(t)?, &state, &no_reset, true)?;
        let trace = trace.ok_or_else(|| mismatch("the fused step gave no trace".into()))?;
        for (l, lt) in trace.layers.iter().enumerate() {
            c.cmp_as(
                &format!("fused l{l}.h"),
                &format!("l{l}.h"),
                Some(t),
                &next.parts[2 * l],
            )?;
            c.cmp_as(
                &format!("fused l{l}.c"),
                &format!("l{l}.c"),
                Some(t),
                &next.parts[2 * l + 1],
            )?;
            let m = lt.num_modules;
            compare_mask(
                tensors,
                case,
                (l, t),
                &lt.active,
                batch * m,
                m,
                mask_mismatches,
            )?;
        }
        state = next;
    }
    let resets = Tensor::zeros((steps, batch), emb.dtype(), emb.device())?;
    let (outputs, last) = cell.seq(emb, &resets, start)?;
    for t in 0..steps {
        c.cmp_as("fused seq output", "output", Some(t), &outputs.get(t)?)?;
    }
    for (l, pair) in last.parts.chunks(2).enumerate() {
        c.cmp_as(
            &format!("fused seq final.h.l{l}"),
            &format!("final.h.l{l}"),
            None,
            &pair[0],
        )?;
        c.cmp_as(
            &format!("fused seq final.c.l{l}"),
            &format!("final.c.l{l}"),
            None,
            &pair[1],
        )?;
    }
    Ok(())
}

/// The plain `LSTMCell` control, if the fixture has one.
fn check_control_lstm(
    case: &str,
    dtype: DType,
    x: &Tensor,
    tensors: &Tensors,
    c: &mut Comparer,
) -> Result<(), BrimsError> {
    let names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"];
    let Some(p) = names
        .iter()
        .map(|n| tensors.opt(&format!("lstm.param.{n}")))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(());
    };
    let p = p
        .iter()
        .map(|t| t.to_dtype(dtype))
        .collect::<Result<Vec<_>, _>>()?;
    let lstm = Lstm::from_tensors(p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone())?;
    let (Some(h0), Some(c0)) = (
        tensors.opt(&format!("case.{case}.lstm.init.h")),
        tensors.opt(&format!("case.{case}.lstm.init.c")),
    ) else {
        return Ok(());
    };
    let mut state = CoreState {
        parts: vec![h0.to_dtype(dtype)?, c0.to_dtype(dtype)?],
    };
    for t in 0..x.dim(0)? {
        let (_, next) = lstm.step(&x.get(t)?, &state)?;
        c.cmp("lstm.h", Some(t), &next.parts[0])?;
        c.cmp("lstm.c", Some(t), &next.parts[1])?;
        state = next;
    }
    Ok(())
}
