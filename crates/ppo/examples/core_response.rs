//! How much a freshly initialised core's output depends on the screen (issue: "BRIMs-PPO does
//! not learn Breakout").
//!
//! Plays Breakout with random actions, takes `--frames` observations from it, encodes them with
//! the Nature CNN of an Atari actor-critic and drives each core variant on those features for
//! `--steps` steps (every row keeps its own frame). For every variant it prints
//! - the features' scale, and per state part (`h`, `c` per layer) and for the output: the RMS and
//!   the spread across frames (mean over units of the std over the batch), and their ratio to
//!   the features' spread (`gain`: how much of the screen's variation gets through);
//! - gradient norms of a fixed random projection of the outputs, per parameter group;
//! - the largest difference between the fused sequence pass and the step-by-step reference, in
//!   outputs and in every gradient (CNN weights included), at these sizes.
//!
//! ```sh
//! cargo run --release -p ppo --example core_response -- --frames 64 --steps 16
//! ```

use std::collections::BTreeMap;

use brims::{
    AttentionInit, BrimsConfig, BrimsLayerConfig, CoreConfig, CoreState, LstmConfig, LstmInit,
};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use envs_api::Env;
use envs_atari::{make_atari, AtariConfig};
use ppo::{ActorCritic, NetworkConfig};
use rand::{Rng, SeedableRng};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `batch` Breakout observations `[batch, 1, 84, 84]` u8 from random play, one every 7 steps.
fn frames(batch: usize, seed: u64) -> Res<Tensor> {
    let cfg = AtariConfig {
        repeat_action_probability: 0.0,
        ..AtariConfig::default()
    };
    let mut env = make_atari("Breakout", &cfg, seed)?;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let (mut obs, _) = env.reset(Some(seed))?;
    let mut out = Vec::new();
    let mut step = 0;
    while out.len() < batch * obs.len() {
        let a = rng.gen_range(0..4);
        let s = env.step(a)?;
        obs = if s.terminated || s.truncated {
            env.reset(None)?.0
        } else {
            s.obs
        };
        step += 1;
        if step % 7 == 0 {
            out.extend_from_slice(&obs);
        }
    }
    Ok(Tensor::from_vec(out, (batch, 1, 84, 84), &Device::Cpu)?)
}

/// `(rms, spread)` of `[B, W]`: spread = mean over columns of the std over rows.
fn scale(x: &Tensor) -> Res<(f64, f64)> {
    let x = x.to_dtype(DType::F64)?;
    let rms = x.sqr()?.mean_all()?.to_scalar::<f64>()?.sqrt();
    let mean = x.mean_keepdim(0)?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean(0)?;
    let spread = var.sqrt()?.mean_all()?.to_scalar::<f64>()?;
    Ok((rms, spread))
}

fn layer(hidden_size: usize, modules: usize, active: usize) -> BrimsLayerConfig {
    BrimsLayerConfig {
        hidden_size,
        modules,
        active,
    }
}

/// The variants compared: name and core.
fn variants() -> Vec<(&'static str, CoreConfig)> {
    let brims = || BrimsConfig::with_layers(vec![layer(256, 8, 4), layer(128, 4, 2)]);
    let rims = || BrimsConfig::with_layers(vec![layer(256, 8, 4)]);
    let with_std = |mut c: BrimsConfig, std: f64| {
        c.attention_init_std = std;
        c
    };
    let scaled = |mut c: BrimsConfig, attention: AttentionInit, lstm: LstmInit| {
        c.attention_init = attention;
        c.lstm_init = lstm;
        c
    };
    use AttentionInit::FanIn;
    use LstmInit::Module;
    vec![
        ("lstm128", CoreConfig::Lstm(LstmConfig::new(128))),
        ("brims-ref", CoreConfig::Brims(brims())),
        ("brims-std0.1", CoreConfig::Brims(with_std(brims(), 0.1))),
        (
            "brims-fanin",
            CoreConfig::Brims(scaled(brims(), FanIn, LstmInit::Reference)),
        ),
        (
            "brims-module-lstm",
            CoreConfig::Brims(scaled(brims(), AttentionInit::Reference, Module)),
        ),
        (
            "brims-fanin+module",
            CoreConfig::Brims(scaled(brims(), FanIn, Module)),
        ),
        (
            "brims-fanin+module+slotnorm",
            CoreConfig::Brims(BrimsConfig {
                slot_norm: true,
                ..scaled(brims(), FanIn, Module)
            }),
        ),
        ("rims-ref", CoreConfig::Brims(rims())),
        (
            "rims-fanin+module",
            CoreConfig::Brims(scaled(rims(), FanIn, Module)),
        ),
        (
            "rims-fanin+module+slotnorm",
            CoreConfig::Brims(BrimsConfig {
                slot_norm: true,
                ..scaled(rims(), FanIn, Module)
            }),
        ),
        (
            "rims-allactive",
            CoreConfig::Brims(BrimsConfig::with_layers(vec![layer(128, 4, 4)])),
        ),
    ]
}

/// Sums of squared gradients per parameter group (`encoder`, `core.layer0`, …, `heads`).
fn group_norms(
    vars: &BTreeMap<String, Var>,
    grads: &candle_core::backprop::GradStore,
) -> Res<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for (name, var) in vars {
        let group = {
            let parts: Vec<&str> = name.split('.').collect();
            match parts[0] {
                "core" if parts.len() > 2 => format!("core.{}.{}", parts[1], parts[2]),
                "core" => format!("core.{}", parts[1]),
                "encoder" => "encoder".to_string(),
                _ => "heads".to_string(),
            }
        };
        if let Some(g) = grads.get(var.as_tensor()) {
            let sq = g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
            *out.entry(group).or_insert(0.0) += sq;
        }
    }
    Ok(out.into_iter().map(|(k, v)| (k, v.sqrt())).collect())
}

fn main() -> Res<()> {
    let batch = arg("--frames", 64);
    let steps = arg("--steps", 16);
    let dev = Device::Cpu;
    let obs = frames(batch, 11)?;
    println!("{batch} Breakout frames (random play), {steps} steps per frame\n");
    for (name, core_cfg) in variants() {
        let mut varmap = VarMap::new();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
        let net = ActorCritic::new(
            &NetworkConfig::atari(Some(core_cfg)),
            &[1, 84, 84],
            4,
            &mut varmap,
            &dev,
            &mut rng,
        )?;
        let core = net.core().ok_or("variant without a core")?;
        let features = net.features(&obs)?;
        let (f_rms, f_spread) = scale(&features)?;
        // Acting path: each row sees its own frame every step.
        let mut state = core.zero_state(batch)?;
        let no_reset = Tensor::zeros(batch, DType::F32, &dev)?;
        let mut out = features.zeros_like()?;
        for _ in 0..steps {
            let (o, next, _) = core.act(&features.detach(), &state, &no_reset, false)?;
            out = o;
            state = next;
        }
        println!("{name}: features rms {f_rms:.3}, spread {f_spread:.4}");
        let report = |what: &str, x: &Tensor| -> Res<()> {
            let (rms, spread) = scale(x)?;
            println!(
                "  {what:<10} rms {rms:9.2e}  spread {spread:9.2e}  gain {:9.2e}",
                spread / f_spread
            );
            Ok(())
        };
        for (i, part) in state.parts.iter().enumerate() {
            let label = format!("{}{}", if i % 2 == 0 { "h" } else { "c" }, i / 2);
            report(&label, part)?;
        }
        report("output", &out)?;

        // Replay: fused sequence pass vs the step loop, through the CNN.
        let vars: BTreeMap<String, Var> = varmap
            .data()
            .lock()
            .map_err(|_| "poisoned varmap")?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let seq_in = Tensor::stack(&vec![features.clone(); steps], 0)?; // [T, B, E]
        let resets = Tensor::zeros((steps, batch), DType::F32, &dev)?;
        let start = core.zero_state(batch)?;
        let proj = Tensor::randn(0f32, 1.0, (steps, batch, core.output_size()), &dev)?;
        let (fused_out, _) = core.seq(&seq_in, &resets, &start)?;
        let fused_grads = (&fused_out * &proj)?.sum_all()?.backward()?;
        let mut st: CoreState = start.clone();
        let mut outs = Vec::new();
        for t in 0..steps {
            let (o, next) = core.step_with_reset(&seq_in.get(t)?, &st, &resets.get(t)?)?;
            outs.push(o);
            st = next;
        }
        let ref_out = Tensor::stack(&outs, 0)?;
        let ref_grads = (&ref_out * &proj)?.sum_all()?.backward()?;
        let out_diff = (&fused_out - &ref_out)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        let mut worst = (0f64, String::new());
        for (n, v) in &vars {
            if let (Some(a), Some(b)) =
                (fused_grads.get(v.as_tensor()), ref_grads.get(v.as_tensor()))
            {
                let scale = b.abs()?.max_all()?.to_scalar::<f32>()? as f64;
                let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()? as f64;
                let rel = d / scale.max(1e-30);
                if rel > worst.0 {
                    worst = (rel, n.clone());
                }
            }
        }
        println!(
            "  fused vs step loop: outputs differ by {out_diff:.2e}; worst gradient {} (relative {:.2e})",
            worst.1, worst.0
        );
        println!("  gradient norms of a random projection of the outputs (fused):");
        for (g, n) in group_norms(&vars, &fused_grads)? {
            println!("    {g:<22} {n:9.2e}");
        }
        println!();
    }
    Ok(())
}
