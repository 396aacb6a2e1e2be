//! A profiling harness: `passes` forward+backward passes of the Nature CNN encoder on u8
//! frames `[batch, cin, 84, 84]` (/255 and the ReLUs fused into the convs; conv 8x8/4 (32),
//! 4x4/2 (64), 3x3/1 (64), Linear 3136 -> 512, ReLU), after one warm-up pass.
//! `cargo run --release -p fastconv --example nature_cnn_pass -- [batch] [cin] [passes]`
//!
//! Meant to run under `valgrind --tool=callgrind` (instruction counts do not depend on other
//! load on the machine); it also prints the mean wall time per pass, which does.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::time::Instant;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (batch, c_in, passes) = (arg(1, 256), arg(2, 4), arg(3, 3));
    let dev = Device::Cpu;
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
    let convs = [
        fastconv::Conv2d::load(c_in, 32, 8, 4, vb.pp("conv0"))?.with_input_scale(1.0 / 255.0),
        fastconv::Conv2d::load(32, 64, 4, 2, vb.pp("conv1"))?,
        fastconv::Conv2d::load(64, 64, 3, 1, vb.pp("conv2"))?,
    ]
    .map(|c| c.with_relu());
    let linear = candle_nn::linear(64 * 7 * 7, 512, vb.pp("linear"))?;
    // Deterministic "frames": a cheap hash of the index, so runs are repeatable.
    let pixels: Vec<u8> = (0..batch * c_in * 84 * 84)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let frames = Tensor::from_vec(pixels, (batch, c_in, 84, 84), &dev)?;
    let pass = || -> candle_core::Result<()> {
        let mut x = frames.clone();
        for conv in &convs {
            x = conv.forward(&x)?;
        }
        let features = linear.forward(&x.flatten_from(1)?)?.relu()?;
        drop(features.mean_all()?.backward()?);
        Ok(())
    };
    pass()?;
    let start = Instant::now();
    for _ in 0..passes {
        pass()?;
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / passes.max(1) as f64;
    println!(
        "batch {batch}, cin {c_in}: {passes} passes, {ms:.1} ms per pass (wall, load-dependent)"
    );
    Ok(())
}
