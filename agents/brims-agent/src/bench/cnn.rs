//! `brims bench cnn` (see ../shared/ARCHITECTURE.md, "Commands"): the Nature CNN encoder
//! (3 convs + ReLU, Linear 3136 -> 512) forward + backward on u8 frames scaled to [0, 1],
//! timed with fastconv's convolutions and, in the same run, with candle's own `conv2d`
//! (same weights) and, where /work/pyenv has torch, with torch on 2 threads.

use anyhow::Context;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use std::time::Instant;

/// Arguments of `brims bench cnn`.
#[derive(Args, Debug, Clone)]
pub(crate) struct CnnArgs {
    /// Frames per forward+backward pass.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Timed passes per network (after one warm-up pass); the fastest is reported, the one
    /// least disturbed by other load on the machine.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Python interpreter used for the torch comparison (skipped if it cannot import torch).
    #[arg(long, default_value = "/work/pyenv/bin/python")]
    python: String,
    /// Skip the (slow) comparisons with candle's conv2d and torch.
    #[arg(long)]
    no_compare: bool,
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

/// Times `iters` forward+backward passes after one warm-up pass.
fn time_fwd_bwd<C: Module>(
    net: &NatureCnn<C>,
    frames: &Tensor,
    iters: usize,
) -> anyhow::Result<PassTime> {
    let pass = || -> anyhow::Result<f64> {
        let start = Instant::now();
        let grads = net.forward(frames)?.mean_all()?.backward()?;
        drop(grads);
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    pass()?;
    let iters = iters.max(1);
    let cpu_start = process_cpu_ms();
    let times = (0..iters)
        .map(|_| pass())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cpu_ms = match (cpu_start, process_cpu_ms()) {
        (Some(start), Some(end)) => Some((end - start) / iters as f64),
        _ => None,
    };
    Ok(PassTime {
        wall_ms: times.into_iter().fold(f64::INFINITY, f64::min),
        cpu_ms,
    })
}

const TORCH_SCRIPT: &str = r#"
import sys, time, torch, torch.nn as nn
torch.set_num_threads(2)
batch, iters = int(sys.argv[1]), int(sys.argv[2])
net = nn.Sequential(
    nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
    nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU())
frames = torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8)
def run():
    start = time.perf_counter()
    net.zero_grad(set_to_none=True)
    net(frames.float() / 255.0).mean().backward()
    return (time.perf_counter() - start) * 1e3
run()
cpu_start = time.process_time()
wall = min(run() for _ in range(max(iters, 1)))
print(wall, (time.process_time() - cpu_start) * 1e3 / max(iters, 1))
"#;

/// The torch figures, or `None` (with the reason printed) where torch is not available.
fn torch_fwd_bwd(python: &str, batch: usize, iters: usize) -> Option<PassTime> {
    let out = std::process::Command::new(python)
        .args(["-c", TORCH_SCRIPT, &batch.to_string(), &iters.to_string()])
        .output();
    let parsed = match &out {
        Ok(out) if out.status.success() => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let mut numbers = stdout
                .lines()
                .last()?
                .split_whitespace()
                .map(str::parse::<f64>);
            match (numbers.next(), numbers.next()) {
                (Some(Ok(wall_ms)), Some(Ok(cpu_ms))) => Some(PassTime {
                    wall_ms,
                    cpu_ms: Some(cpu_ms),
                }),
                _ => None,
            }
        }
        _ => None,
    };
    if parsed.is_none() {
        let why = match out {
            Ok(out) => String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no output")
                .to_string(),
            Err(e) => e.to_string(),
        };
        println!("torch comparison skipped ({python}: {why})");
    }
    parsed
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
    let anchor = candle_net(&vb).context("building the candle Nature CNN")?;
    let frames = Tensor::rand(0f32, 256.0, (args.batch, FRAMES, SIDE, SIDE), &device)?
        .floor()?
        .to_dtype(DType::U8)?;
    // The timed networks must compute the same function; check on a few frames.
    let sample = frames.narrow(0, 0, args.batch.min(8))?;
    let (ours, reference) = (fused.forward(&sample)?, anchor.forward(&sample)?);
    let diff = (&ours - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = reference.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
    anyhow::ensure!(
        diff <= 1e-4 * scale,
        "fastconv and candle disagree: max |diff| {diff:e} (scale {scale:e})"
    );
    let threads = candle_core::utils::get_num_threads();
    println!(
        "Nature CNN forward+backward, batch {}, {threads} threads, fastest of {} passes, mean CPU",
        args.batch, args.iters
    );

    let fast = time_fwd_bwd(&fused, &frames, args.iters)?;
    println!("  fastconv, fused:        {fast}   (u8 frames and ReLU inside the convs)");
    let unfused = time_fwd_bwd(&unfused_net, &frames, args.iters)?;
    println!("  fastconv, unfused:      {unfused}   (candle's /255 and ReLU)");
    let mut json = serde_json::json!({
        "batch": args.batch,
        "fwd_bwd_ms": fast.wall_ms,
        "cpu_ms": fast.cpu_ms,
        "unfused_fwd_bwd_ms": unfused.wall_ms,
        "threads": threads,
    });
    if args.no_compare {
        return Ok(json);
    }
    let candle = time_fwd_bwd(&anchor, &frames, args.iters)?;
    println!(
        "  candle conv2d:          {candle}  -> candle / fastconv = {:.2}",
        candle.wall_ms / fast.wall_ms
    );
    json["candle_conv_fwd_bwd_ms"] = candle.wall_ms.into();
    json["candle_conv_cpu_ms"] = candle.cpu_ms.into();
    json["speedup_vs_candle_conv"] = (candle.wall_ms / fast.wall_ms).into();
    if let Some(torch) = torch_fwd_bwd(&args.python, args.batch, args.iters) {
        println!(
            "  torch CPU (2 threads):  {torch}  -> fastconv / torch = {:.2}",
            fast.wall_ms / torch.wall_ms
        );
        json["torch_fwd_bwd_ms"] = torch.wall_ms.into();
        json["torch_cpu_ms"] = torch.cpu_ms.into();
        json["fastconv_over_torch"] = (fast.wall_ms / torch.wall_ms).into();
    }
    Ok(json)
}
