//! `brims bench cnn` (see ../shared/ARCHITECTURE.md, "Commands"): the Nature CNN encoder
//! (3 convs + ReLU, Linear 3136 -> 512) forward + backward on u8 frames scaled to [0, 1],
//! timed with fastconv's convolutions and, in the same rounds, with candle's own `conv2d`
//! (same weights) and with torch, the anchor, where a Python with torch is given (see
//! [`super::anchor`]). Each round times one pass of every network, so that load from other
//! processes drifting during the run affects every figure alike.

use anyhow::Context;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use serde_json::json;
use std::time::Instant;

use super::anchor::{self, Anchor, AnchorArgs, Worker};

/// Source of the torch worker (see its docstring).
const TORCH_WORKER: &str = include_str!("anchors/torch_cnn_worker.py");

/// Arguments of `brims bench cnn`.
#[derive(Args, Debug, Clone)]
pub(crate) struct CnnArgs {
    /// Frames per forward+backward pass.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Rounds: each times one pass of every network (after one warm-up pass each); the fastest
    /// pass is reported, the one least disturbed by other load on the machine.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// torch's thread count (0: torch's default); default: the thread count of ours.
    #[arg(long)]
    torch_threads: Option<usize>,
    /// Skip the (slow) comparisons with candle's conv2d and torch.
    #[arg(long)]
    no_compare: bool,
    #[command(flatten)]
    anchor: AnchorArgs,
}

/// Stacked frames per observation and the frame side.
const FRAMES: usize = 4;
const SIDE: usize = 84;

/// The Nature CNN with either convolution; `C` is the conv layer type.
struct NatureCnn<C> {
    convs: [C; 3],
    /// Whether the convs apply their ReLU themselves and the first reads u8 frames itself.
    fused: bool,
    linear: candle_nn::Linear,
}

impl<C: Module> NatureCnn<C> {
    /// `frames` `[B, 4, 84, 84]` u8 -> features `[B, 512]`.
    fn forward(&self, frames: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = if self.fused {
            frames.clone()
        } else {
            (frames.to_dtype(DType::F32)? / 255.0)?
        };
        for conv in &self.convs {
            x = conv.forward(&x)?;
            if !self.fused {
                x = x.relu()?;
            }
        }
        self.linear.forward(&x.flatten_from(1)?)?.relu()
    }
}

/// (in, out, kernel, stride) of the three convolutions.
const CONVS: [(usize, usize, usize, usize); 3] =
    [(FRAMES, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)];

/// FLOPs of one forward+backward pass of the net over one frame stack (2 per multiply-add):
/// each layer's forward over its output pixels, a backward of twice that (input and weight
/// gradients), except the first conv's input gradient, which is never computed (its input
/// is the frames).
fn pass_flops() -> u64 {
    let mut side = SIDE;
    let mut forward = Vec::new();
    for (c_in, c_out, k, stride) in CONVS {
        side = (side - k) / stride + 1;
        forward.push(2 * (c_out * c_in * k * k * side * side) as u64);
    }
    forward.push(2 * (64 * side * side * 512) as u64);
    let total: u64 = forward.iter().sum();
    3 * total - forward[0]
}

fn fast_net(vb: &VarBuilder, fused: bool) -> anyhow::Result<NatureCnn<fastconv::Conv2d>> {
    let conv = |i: usize| {
        let (c_in, c_out, k, s) = CONVS[i];
        let conv = fastconv::Conv2d::load(c_in, c_out, k, s, vb.pp(format!("conv{i}")))?;
        anyhow::Ok(match (fused, i) {
            (false, _) => conv,
            (true, 0) => conv.with_relu().with_input_scale(1.0 / 255.0),
            (true, _) => conv.with_relu(),
        })
    };
    Ok(NatureCnn {
        convs: [conv(0)?, conv(1)?, conv(2)?],
        fused,
        linear: candle_nn::linear(64 * 7 * 7, 512, vb.pp("linear"))?,
    })
}

fn candle_net(vb: &VarBuilder) -> anyhow::Result<NatureCnn<candle_nn::Conv2d>> {
    let conv = |i: usize| {
        let (c_in, c_out, k, stride) = CONVS[i];
        let cfg = candle_nn::Conv2dConfig {
            stride,
            ..Default::default()
        };
        candle_nn::conv2d(c_in, c_out, k, cfg, vb.pp(format!("conv{i}")))
    };
    Ok(NatureCnn {
        convs: [conv(0)?, conv(1)?, conv(2)?],
        fused: false,
        linear: candle_nn::linear(64 * 7 * 7, 512, vb.pp("linear"))?,
    })
}

/// Wall and CPU time of a network's forward+backward pass, in milliseconds.
#[derive(Clone, Copy, Debug)]
struct PassTime {
    /// The fastest pass (the one least disturbed by other load on the machine).
    wall_ms: f64,
    /// CPU time of all threads per pass, averaged over the passes (where measurable).
    cpu_ms: Option<f64>,
}

impl std::fmt::Display for PassTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:8.1} ms", self.wall_ms)?;
        match self.cpu_ms {
            Some(cpu) => write!(f, "  (CPU {cpu:7.1} ms)"),
            None => Ok(()),
        }
    }
}

/// CPU time used so far by this process, all threads, in ms (Linux: /proc/self/stat).
fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the ")" that closes the command name, utime and stime are the 12th and 13th fields.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Linux reports in USER_HZ, which is 100 on every architecture it supports.
    Some(ticks * 10.0)
}

/// Pass times of one network over the rounds.
#[derive(Default)]
struct Passes {
    wall_ms: Vec<f64>,
    cpu_ms: Vec<f64>,
    /// Whether CPU time could be measured for every pass.
    cpu_known: bool,
}

impl Passes {
    fn add(&mut self, wall_ms: f64, cpu_ms: Option<f64>) {
        if self.wall_ms.is_empty() {
            self.cpu_known = true;
        }
        self.wall_ms.push(wall_ms);
        match cpu_ms {
            Some(c) => self.cpu_ms.push(c),
            None => self.cpu_known = false,
        }
    }

    fn time(&self) -> PassTime {
        PassTime {
            wall_ms: self.wall_ms.iter().copied().fold(f64::INFINITY, f64::min),
            cpu_ms: (self.cpu_known && !self.cpu_ms.is_empty())
                .then(|| self.cpu_ms.iter().sum::<f64>() / self.cpu_ms.len() as f64),
        }
    }
}

/// One forward+backward pass: (wall ms, process CPU ms where measurable).
fn fwd_bwd<C: Module>(net: &NatureCnn<C>, frames: &Tensor) -> anyhow::Result<(f64, Option<f64>)> {
    let cpu_start = process_cpu_ms();
    let start = Instant::now();
    let grads = net.forward(frames)?.mean_all()?.backward()?;
    drop(grads);
    let wall = start.elapsed().as_secs_f64() * 1e3;
    let cpu = match (cpu_start, process_cpu_ms()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok((wall, cpu))
}

/// Starts the torch worker (which runs its own warm-up pass), or says why not.
fn start_torch(args: &CnnArgs, threads: usize) -> Result<(Worker, Anchor), Anchor> {
    let python = args
        .anchor
        .interpreter()
        .map_err(|why| Anchor::skipped("torch", why))?;
    let config = json!({
        "batch": args.batch,
        "threads": args.torch_threads.unwrap_or(threads),
    });
    match Worker::start(&python, TORCH_WORKER, &config) {
        Ok((worker, info)) => Ok((worker, Anchor::Measured { info, python })),
        Err(why) => Err(Anchor::skipped(
            "torch",
            format!("{}: {why}", python.display()),
        )),
    }
}

/// Runs the benchmark; returns the JSON object printed as the last line.
pub(crate) fn run(args: &CnnArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.batch > 0, "--batch must be positive");
    let device = Device::Cpu;
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &device);
    // Both nets read the same variables, so they compute the same function.
    let fused = fast_net(&vb, true).context("building the fastconv Nature CNN")?;
    let unfused_net = fast_net(&vb, false).context("building the fastconv Nature CNN")?;
    let reference_net = candle_net(&vb).context("building the candle Nature CNN")?;
    let frames = Tensor::rand(0f32, 256.0, (args.batch, FRAMES, SIDE, SIDE), &device)?
        .floor()?
        .to_dtype(DType::U8)?;
    // The timed networks must compute the same function; check on a few frames.
    let sample = frames.narrow(0, 0, args.batch.min(8))?;
    let (ours, reference) = (fused.forward(&sample)?, reference_net.forward(&sample)?);
    let diff = (&ours - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = reference.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
    anyhow::ensure!(
        diff <= 1e-4 * scale,
        "fastconv and candle disagree: max |diff| {diff:e} (scale {scale:e})"
    );
    let threads = candle_core::utils::get_num_threads();
    let peak = super::peak::Peak::measure(threads);
    println!("{}", peak.describe());
    let mut torch = if args.no_compare {
        None
    } else {
        Some(start_torch(args, threads))
    };
    let rounds = args.iters.max(1);
    println!(
        "Nature CNN forward+backward, batch {}, {threads} threads, {rounds} interleaved rounds; \
         fastest pass, mean CPU",
        args.batch
    );
    // Warm-up: one pass each.
    fwd_bwd(&fused, &frames)?;
    fwd_bwd(&unfused_net, &frames)?;
    if !args.no_compare {
        fwd_bwd(&reference_net, &frames)?;
    }
    let (mut fast, mut unfused, mut candle, mut torch_passes) = (
        Passes::default(),
        Passes::default(),
        Passes::default(),
        Passes::default(),
    );
    for _ in 0..rounds {
        let (w, c) = fwd_bwd(&fused, &frames)?;
        fast.add(w, c);
        let (w, c) = fwd_bwd(&unfused_net, &frames)?;
        unfused.add(w, c);
        if args.no_compare {
            continue;
        }
        let (w, c) = fwd_bwd(&reference_net, &frames)?;
        candle.add(w, c);
        if let Some(Ok((worker, info))) = &mut torch {
            match worker.request("1") {
                Ok(r) => {
                    let ms = r["ms"].as_array().and_then(|a| a.first()?.as_f64());
                    torch_passes.add(ms.unwrap_or(f64::NAN), r["cpu_ms"].as_f64());
                }
                Err(e) => {
                    let label = info.label();
                    torch = Some(Err(Anchor::skipped(
                        "torch",
                        format!("{label} failed while measuring: {e}"),
                    )));
                }
            }
        }
    }
    let fast = fast.time();
    let unfused = unfused.time();
    println!("  fastconv, fused:        {fast}   (u8 frames and ReLU inside the convs)");
    println!("  fastconv, unfused:      {unfused}   (candle's /255 and ReLU)");
    let flops = pass_flops() * args.batch as u64;
    let gflops = flops as f64 / (fast.wall_ms * 1e-3) / 1e9;
    println!(
        "  fastconv, fused: {:.2} GFLOP per pass = {gflops:.1} GFLOP/s = {:.0}% of the FP32 peak \
         (target >= 85%)",
        flops as f64 / 1e9,
        100.0 * peak.fp32_share(gflops)
    );
    let mut json = json!({
        "flops_per_pass": flops,
        "gflops": gflops,
        "peak": peak.to_json(),
        "share_of_fp32_peak": peak.fp32_share(gflops),
        "batch": args.batch,
        "fwd_bwd_ms": fast.wall_ms,
        "cpu_ms": fast.cpu_ms,
        "unfused_fwd_bwd_ms": unfused.wall_ms,
        "threads": threads,
        "rounds": rounds,
    });
    let Some(torch) = torch else {
        json["anchor"] = Anchor::skipped("torch", "--no-compare").to_json();
        return Ok(json);
    };
    let candle = candle.time();
    println!(
        "  candle conv2d:          {candle}  -> candle / fastconv = {:.2}",
        candle.wall_ms / fast.wall_ms
    );
    json["candle_conv_fwd_bwd_ms"] = candle.wall_ms.into();
    json["candle_conv_cpu_ms"] = candle.cpu_ms.into();
    json["speedup_vs_candle_conv"] = (candle.wall_ms / fast.wall_ms).into();
    let anchor = match torch {
        Ok((worker, anchor)) => {
            drop(worker);
            let t = torch_passes.time();
            let ratio = anchor::ratio(fast.wall_ms, t.wall_ms);
            println!(
                "  {} ({} threads): {t}  -> fastconv / torch = {} (target <= 1)",
                anchor.label(),
                match &anchor {
                    Anchor::Measured { info, .. } => info["threads"].to_string(),
                    Anchor::Skipped { .. } => "?".into(),
                },
                ratio.map_or("?".into(), |r| format!("{r:.2}")),
            );
            json["torch_fwd_bwd_ms"] = t.wall_ms.into();
            json["torch_cpu_ms"] = t.cpu_ms.into();
            json["fastconv_over_torch"] = ratio.into();
            anchor
        }
        Err(skipped) => skipped,
    };
    json["anchor"] = anchor.to_json();
    Ok(json)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// The bench's count (from its layer table) agrees with ppo's count of the training
    /// network (from its layers' weights), heads left out.
    #[test]
    fn the_pass_count_agrees_with_the_training_networks_count() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(0);
        let actions = 4;
        let net = ppo::ActorCritic::new(
            &ppo::NetworkConfig::atari(None),
            &[FRAMES, SIDE, SIDE],
            actions,
            &mut VarMap::new(),
            &Device::Cpu,
            &mut rng,
        )
        .unwrap();
        let counted = net.forward_flops();
        let encoder = counted.total - 2 * 512 * (actions as u64 + 1);
        assert_eq!(pass_flops(), 3 * encoder - counted.first_layer);
    }
}
