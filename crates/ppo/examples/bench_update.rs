//! Time of one PPO update at CleanRL's Atari shape: rollout 8 envs × 128 steps of random
//! `[k, 84, 84]` u8 frames, 4 epochs × 4 minibatches, Nature CNN + core.
//!
//! `cargo run --release -p ppo --example bench_update -- [--frames K] [--steps T] [--cores lstm,lstm512,brims,none]`
//! Prints one line per core, then a JSON object with the timings (seconds).

use std::time::Instant;

use brims::{BrimsConfig, CoreConfig, LstmConfig};
use candle_core::{Device, Tensor};
use ppo::{sample_actions, Learner, NetworkConfig, PolicyStep, PpoConfig, Rollout};
use rand::{Rng, SeedableRng};

/// Peak resident memory of this process so far (Linux), in MiB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn core_named(name: &str) -> Option<CoreConfig> {
    match name {
        // The Atari presets, the cores of configs/breakout_{lstm,brims}.toml; the LSTM is
        // CleanRL's ppo_atari_lstm.py nn.LSTM(512, 128).
        "lstm" | "lstm128" => Some(CoreConfig::Lstm(LstmConfig::atari())),
        "brims" | "brims_breakout" => Some(CoreConfig::Brims(BrimsConfig::atari())),
        // A wider LSTM, the Atari preset before it matched the configs.
        "lstm512" => Some(CoreConfig::Lstm(LstmConfig::new(512))),
        // "none": the feed-forward network.
        _ => None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let frames: usize = value("--frames").map_or(Ok(1), |v| v.parse())?;
    let cores = value("--cores").unwrap_or_else(|| "lstm,lstm512,brims".into());
    let steps: usize = value("--steps").map_or(Ok(128), |v| v.parse())?;
    let plan = PpoConfig {
        num_steps: steps,
        ..Default::default()
    }
    .validate()?;
    let (t, n) = (plan.config.num_steps, plan.config.num_envs);
    let shape = [frames, 84, 84];
    let dev = Device::Cpu;
    let mut json = Vec::new();
    for name in cores.split(',') {
        let net = NetworkConfig::atari(core_named(name));
        let mut learner = Learner::new(plan.clone(), net, &shape, 6, &dev)?;
        let mut rng = rand_pcg::Pcg64::seed_from_u64(0);
        let mut rollout = Rollout::new::<u8>(t, n, &shape);
        let mut state = learner.net().zero_state(n)?;
        rollout.begin(&state)?;
        let started = Instant::now();
        for step in 0..t {
            let obs: Vec<u8> = (0..n * frames * 84 * 84).map(|_| rng.gen()).collect();
            let resets = vec![if step == 0 { 1.0 } else { 0.0 }; n];
            let obs_t = Tensor::from_slice(&obs, (n, frames, 84, 84), &dev)?;
            let resets_t = Tensor::from_slice(&resets, n, &dev)?;
            let out = learner.net().act(&obs_t, &state, &resets_t, false)?;
            let (logits, values, next) = (out.logits, out.values, out.next_state);
            let (actions, logprobs) = sample_actions(&logits, &mut rng)?;
            let values = values.to_vec1::<f32>()?;
            let ps = PolicyStep {
                obs: &obs,
                resets: &resets,
                actions: &actions,
                logprobs: &logprobs,
                values: &values,
            };
            rollout.record_policy(step, 0, ps)?;
            let rewards: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            rollout.record_outcome(step, 0, &rewards, &vec![false; n], &vec![false; n])?;
            state = next;
        }
        rollout.record_next_values(0, &vec![0.0; n])?;
        let act_secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: acted 8×128 in {act_secs:.2} s, peak RSS {:.0} MiB",
            peak_rss_mb()
        );
        let started = Instant::now();
        let m = learner.update(&rollout)?;
        let update_secs = started.elapsed().as_secs_f64();
        println!(
            "{name}: acting 8×128 {act_secs:.2} s, one update (4 epochs × 4 minibatches) {update_secs:.2} s, |ratio−1| {:.1e}, peak RSS {:.0} MiB",
            m.first_ratio_deviation,
            peak_rss_mb()
        );
        json.push(format!(
            "\"{name}_update_secs\": {update_secs:.3}, \"{name}_act_secs\": {act_secs:.3}"
        ));
    }
    println!(
        "{{\"frames\": {frames}, \"steps\": {steps}, \"threads\": {}, {}}}",
        candle_core::utils::get_num_threads(),
        json.join(", ")
    );
    Ok(())
}
