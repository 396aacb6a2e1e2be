//! `brims bench core` (see ../shared/ARCHITECTURE.md, "Commands"): the Atari-preset core (the
//! core of configs/breakout_{lstm,brims}.toml), one forward step at batch 16 and a 128-step
//! sequence forward+backward at batch 8.

use std::time::Instant;

use anyhow::Context;
use brims::{build_core, BrimsConfig, Core, CoreConfig, CoreState, LstmConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::{Args, ValueEnum};

/// Which core to measure.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub(crate) enum CoreKind {
    /// The LSTM baseline, Atari preset (hidden 128, as configs/breakout_lstm.toml).
    Lstm,
    /// BRIMs, Atari preset (layers of 256: 8 modules / 4 active, and 128: 4 modules / 2
    /// active; as configs/breakout_brims.toml).
    Brims,
}

/// Arguments of `brims bench core`.
#[derive(Args, Debug, Clone)]
pub(crate) struct CoreArgs {
    /// The core to measure.
    #[arg(long, value_enum)]
    core: CoreKind,
    /// Input width (the Nature CNN's feature size).
    #[arg(long, default_value_t = 512)]
    input_size: usize,
    /// Timed single steps (the median is reported).
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Timed sequence passes (the median is reported).
    #[arg(long, default_value_t = 5)]
    seqs: usize,
}

const STEP_BATCH: usize = 16;
const SEQ_BATCH: usize = 8;
const SEQ_LEN: usize = 128;

/// `(median, min)` in ms: the median is reported; the min shows the floor on a busy machine.
fn median_min_ms(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2] * 1e3, samples[0] * 1e3)
}

fn random_state(core: &dyn Core, batch: usize) -> candle_core::Result<CoreState> {
    let zero = core.zero_state(batch)?;
    let parts = zero
        .parts
        .iter()
        .map(|p| Tensor::randn(0f32, 0.5, p.dims(), p.device()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(CoreState { parts })
}

/// Runs the benchmark; returns the JSON object printed as the last line.
pub(crate) fn run(args: &CoreArgs) -> anyhow::Result<serde_json::Value> {
    let (name, cfg) = match args.core {
        CoreKind::Lstm => ("lstm", CoreConfig::Lstm(LstmConfig::atari())),
        CoreKind::Brims => ("brims", CoreConfig::Brims(BrimsConfig::atari())),
    };
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let core = build_core(&cfg, args.input_size, vb).context("building the core")?;
    let params: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
    println!(
        "core {name}: input {} -> output {}, {params} parameters, {:?}",
        args.input_size,
        core.output_size(),
        cfg
    );

    // One forward step at batch 16 from a non-zero state, as acting runs it (`Core::act`:
    // forward only, one env starting a new episode).
    let x = Tensor::randn(0f32, 1.0, (STEP_BATCH, args.input_size), &dev)?;
    let state = random_state(core.as_ref(), STEP_BATCH)?;
    let mut reset = vec![0f32; STEP_BATCH];
    reset[0] = 1.0;
    let reset = Tensor::from_vec(reset, STEP_BATCH, &dev)?;
    for _ in 0..10 {
        core.act(&x, &state, &reset, false)?;
    }
    let mut samples = Vec::with_capacity(args.steps);
    for _ in 0..args.steps.max(1) {
        let t0 = Instant::now();
        let (y, _, _) = core.act(&x, &state, &reset, false)?;
        std::hint::black_box(y);
        samples.push(t0.elapsed().as_secs_f64());
    }
    let (step_ms, step_min) = median_min_ms(samples);
    println!(
        "step fwd   B={STEP_BATCH}: {step_ms:.3} ms (median of {}, min {step_min:.3})",
        args.steps.max(1)
    );

    // A 128-step replay at batch 8 with resets, forward + backward to every parameter.
    let xs = Tensor::randn(0f32, 1.0, (SEQ_LEN, SEQ_BATCH, args.input_size), &dev)?;
    let resets = Tensor::rand(0f32, 1.0, (SEQ_LEN, SEQ_BATCH), &dev)?
        .ge(0.99)?
        .to_dtype(DType::F32)?;
    let start = random_state(core.as_ref(), SEQ_BATCH)?;
    let w = Tensor::randn(0f32, 1.0, (SEQ_LEN, SEQ_BATCH, core.output_size()), &dev)?;
    let mut samples = Vec::with_capacity(args.seqs);
    for i in 0..=args.seqs.max(1) {
        let t0 = Instant::now();
        let (ys, _) = core.seq(&xs, &resets, &start)?;
        let grads = ys.mul(&w)?.sum_all()?.backward()?;
        std::hint::black_box(grads);
        if i > 0 {
            samples.push(t0.elapsed().as_secs_f64());
        }
    }
    let (seq_ms, seq_min) = median_min_ms(samples);
    println!(
        "seq fwd+bwd T={SEQ_LEN} B={SEQ_BATCH}: {seq_ms:.1} ms (median of {}, min {seq_min:.1})",
        args.seqs.max(1)
    );
    Ok(serde_json::json!({
        "core": name,
        "step_fwd_ms": step_ms,
        "seq_fwd_bwd_ms": seq_ms,
    }))
}
