//! One-thread speed of the preprocessed env against raw ALE, measured in alternating rounds
//! of the same run (the machine is shared, so only same-run ratios mean anything).
//!
//! `cargo run --release -p envs-atari --example speed -- [GAME] [SECONDS]`

use std::time::Instant;

use envs_api::{Env, EnvError};
use envs_atari::{make_atari, raw_frames_per_sec, AtariConfig, AtariEnv};

/// Steps `env` with fixed pseudo-random actions for `seconds`; returns emulator frames/s.
fn env_frames_per_sec(env: &mut AtariEnv, seconds: f64) -> Result<f64, EnvError> {
    let n = env.action_space().n().unwrap_or(1);
    let first = env.step(0)?;
    let (first_frame, mut last_frame) = (first.info.frame_number, first.info.frame_number);
    let (start, mut t) = (Instant::now(), 0usize);
    while start.elapsed().as_secs_f64() < seconds {
        t += 1;
        let step = env.step(((t * 7919) >> 3) % n)?;
        last_frame = step.info.frame_number;
        if step.terminated || step.truncated {
            env.reset(None)?;
        }
    }
    Ok((last_frame - first_frame) as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let game = args.next().unwrap_or_else(|| "Breakout".into());
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(6.0);
    let rounds = 6;
    let mut env = make_atari(&game, &AtariConfig::default(), 0)?;
    env.reset(None)?;
    let (mut raws, mut envs, mut ratios) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        let raw = raw_frames_per_sec(&game, seconds / rounds as f64 / 2.0)?;
        let pre = env_frames_per_sec(&mut env, seconds / rounds as f64 / 2.0)?;
        raws.push(raw);
        envs.push(pre);
        ratios.push(pre / raw);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{game}, one thread, median of {rounds} alternating rounds: raw ALE {:.0} frames/s, \
         preprocessed env {:.0} frames/s, ratio {:.1}%",
        median(&mut raws),
        median(&mut envs),
        100.0 * median(&mut ratios)
    );
    Ok(())
}
