//! Per-layer timing of the Nature CNN convolutions (forward; backward with and without the
//! input gradient), as GFLOP/s next to a plain candle matmul of similar size.
//! `cargo run --release -p fastconv --example layers -- [batch]`

use candle_core::{Device, Tensor, Var};
use std::time::Instant;

fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[2]
}

fn main() -> candle_core::Result<()> {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (batch * 49, 576), &dev)?;
    let b = Tensor::randn(0f32, 1.0, (576, 64), &dev)?;
    let ms = median_ms(|| drop(a.matmul(&b).unwrap()));
    let flop = 2.0 * (batch * 49 * 576 * 64) as f64;
    println!(
        "candle matmul [{}x576]x[576x64]: {ms:.1} ms, {:.1} GFLOP/s",
        batch * 49,
        flop / ms / 1e6
    );
    for (c_in, h, c_out, k, s) in [(4, 84, 32, 8, 4), (32, 20, 64, 4, 2), (64, 9, 64, 3, 1)] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (batch, c_in, h, h), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (c_out, c_in, k, k), &dev)?)?;
        let ho = (h - k) / s + 1;
        let flop = 2.0 * (batch * c_out * c_in * k * k * ho * ho) as f64;
        let fwd = median_ms(|| drop(fastconv::conv2d(&x, &w, None, s).unwrap()));
        let candle_fwd = median_ms(|| drop(x.conv2d(&w, 0, s, 1, 1).unwrap()));
        let untracked = x.as_tensor().detach();
        let fwd_bwd_w = median_ms(|| {
            let y = fastconv::conv2d(&untracked, &w, None, s).unwrap();
            drop(y.sum_all().unwrap().backward().unwrap())
        });
        let fwd_bwd = median_ms(|| {
            let y = fastconv::conv2d(&x, &w, None, s).unwrap();
            drop(y.sum_all().unwrap().backward().unwrap())
        });
        let (bw, bi) = (fwd_bwd_w - fwd, fwd_bwd - fwd_bwd_w);
        println!(
            "conv {c_in}->{c_out} k{k} s{s} on {h}x{h}: fwd {fwd:.2} ms ({:.1} GF/s; candle {candle_fwd:.2} ms), d weight {bw:.1} ms ({:.1}), d input {bi:.1} ms ({:.1})",
            flop / fwd / 1e6, flop / bw / 1e6, flop / bi / 1e6
        );
    }
    Ok(())
}
