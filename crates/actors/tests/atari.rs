//! The pool over real ALE envs: created concurrently in their shard threads, and the same
//! trajectories as the same envs stepped one after another on one thread.

use actors::{ActorPool, PoolConfig};
use envs_api::{Env, EnvError, VecEnv};
use envs_atari::{make_atari, AtariConfig, AtariEnv};

const SEED: u64 = 11;

fn breakout(i: usize) -> Result<AtariEnv, EnvError> {
    let seed = SEED + i as u64;
    make_atari("Breakout", &AtariConfig::default(), seed).map_err(EnvError::from)
}

fn action(env: usize, t: usize, n: usize) -> usize {
    (env * 5 + t * 7 + t / 3) % n
}

#[test]
fn breakout_pool_matches_the_sequential_envs() {
    let (n, steps) = (4, 150);
    let envs: Vec<AtariEnv> = (0..n).map(|i| breakout(i).expect("Breakout")).collect();
    let num_actions = envs[0].action_space().n().expect("discrete");
    let mut reference = VecEnv::new(envs).expect("vec env");
    let first = reference.reset(Some(SEED)).expect("reset");
    // [step] -> (obs [n * obs_size], rewards, dones)
    let expected: Vec<(Vec<u8>, Vec<f32>, Vec<bool>)> = (0..steps)
        .map(|t| {
            let actions: Vec<usize> = (0..n).map(|i| action(i, t, num_actions)).collect();
            let s = reference.step(&actions).expect("step");
            let dones = s
                .terminated
                .iter()
                .zip(&s.truncated)
                .map(|(a, b)| a | b)
                .collect();
            (s.obs, s.rewards, dones)
        })
        .collect();
    let dones = expected.iter().flat_map(|e| &e.2).filter(|&&d| d).count();
    assert!(dones > 0, "a life must be lost in the reference run");

    for (threads, double_buffer) in [(2, true), (1, false)] {
        let cfg = PoolConfig {
            num_envs: n,
            num_threads: threads,
            double_buffer,
            seed: SEED,
        };
        let mut pool = ActorPool::new(cfg, breakout).expect("pool");
        assert_eq!(pool.obs_shape(), &[1, 84, 84]);
        assert_eq!(pool.reset().expect("reset"), first);
        let obs_size = pool.obs_size();
        // Each env's emulator frame count as last reported (0: not yet seen).
        let mut frames = vec![0u64; n];
        for (t, (obs, rewards, dones)) in expected.iter().enumerate() {
            for g in 0..pool.num_groups() {
                let envs = pool.group_envs(g);
                let actions: Vec<usize> = envs.clone().map(|i| action(i, t, num_actions)).collect();
                pool.send_actions(g, &actions).expect("send");
            }
            for g in 0..pool.num_groups() {
                let step = pool.recv(g).expect("recv");
                let e = step.envs.clone();
                let what = format!(
                    "step {t}, envs {e:?}, threads {threads}, double buffer {double_buffer}"
                );
                assert!(
                    step.obs == obs[e.start * obs_size..e.end * obs_size],
                    "obs differ: {what}"
                );
                assert_eq!(step.rewards, rewards[e.clone()], "{what}");
                let got: Vec<bool> = (0..e.len()).map(|k| step.done(k)).collect();
                assert_eq!(got, dones[e.clone()], "{what}");
                // Frame counts: 4 per step, more where the env also reset (the resets'
                // frames are emulated too).
                for (k, i) in e.enumerate() {
                    let now = step.frame_numbers[k];
                    if t > 0 && step.done(k) {
                        assert!(now > frames[i] + 4, "env {i}: {what}");
                    } else if t > 0 {
                        assert_eq!(now, frames[i] + 4, "env {i}: {what}");
                    }
                    frames[i] = now;
                }
            }
        }
    }
}
