//! The production sampler's contract: double buffering changes nothing, what it records replays
//! exactly (ratio 1, from the stored start state and reset flags), and a stop abandons the
//! rollout.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use brims::{BrimsConfig, BrimsLayerConfig, CoreConfig, LstmConfig};
use candle_core::Device;
use common::SyncEnvs;
use envs_api::{memory_cue, CartPole, EpisodeStatistics, MemoryCue, TimeLimit};
use ppo::{
    ActEvent, Activation, EncoderConfig, Learner, NetworkConfig, PpoConfig, Rollout, Sampler,
    SamplerEvents,
};

fn learner(core: CoreConfig, obs: usize, num_envs: usize, num_steps: usize) -> Learner {
    let cfg = PpoConfig {
        seed: 5,
        num_envs,
        num_steps,
        num_minibatches: 2,
        update_epochs: 2,
        total_timesteps: (100 * num_envs * num_steps) as u64,
        ..Default::default()
    };
    let net = NetworkConfig {
        encoder: EncoderConfig::Mlp {
            hidden: vec![16],
            activation: Activation::Tanh,
        },
        core: Some(core),
    };
    Learner::new(cfg.validate().unwrap(), net, &[obs], 2, &Device::Cpu).unwrap()
}

fn lstm() -> CoreConfig {
    CoreConfig::Lstm(LstmConfig::new(8))
}

fn brims() -> CoreConfig {
    let layer = |hidden_size, modules, active| BrimsLayerConfig {
        hidden_size,
        modules,
        active,
    };
    let mut cfg = BrimsConfig::with_layers(vec![layer(8, 4, 2), layer(4, 2, 1)]);
    cfg.input_attention.key_size = 4;
    cfg.comm_attention.key_size = 4;
    cfg.comm_attention.value_size = 4;
    CoreConfig::Brims(cfg)
}

/// CartPole cut at 7 steps: most episodes are truncated, so final values are recorded.
fn short_cartpole() -> EpisodeStatistics<TimeLimit<CartPole>> {
    EpisodeStatistics::new(TimeLimit::new(CartPole::new(), 7).unwrap())
}

/// `max |a − b|`.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The envs split into two groups that alternate fill the same rollouts (observations, actions'
/// effects, values, truncation values through the advantages, episodes) as one group of all.
#[test]
fn two_groups_fill_the_rollouts_one_group_does() {
    let (n, steps) = (6, 10);
    let never = AtomicBool::new(false);
    let mut runs = Vec::new();
    for grouped in [false, true] {
        let mut learner = learner(lstm(), 4, n, steps);
        let envs = if grouped {
            SyncEnvs::grouped(
                vec![
                    (0..n / 2).map(|_| short_cartpole()).collect(),
                    (n / 2..n).map(|_| short_cartpole()).collect(),
                ],
                9,
            )
        } else {
            SyncEnvs::new((0..n).map(|_| short_cartpole()).collect(), 9)
        };
        let mut sampler = Sampler::new(envs);
        let mut rollout = Rollout::new::<f32>(steps, n, &[4]);
        let mut out = Vec::new();
        for _ in 0..3 {
            let (net, rng) = learner.acting();
            let collected = sampler
                .collect(net, rng, &mut rollout, &never, &mut ())
                .unwrap()
                .unwrap();
            let obs = rollout
                .obs_tensor(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let (advantages, _) = rollout.advantages(0.99, 0.95);
            out.push((obs, rollout.values().to_vec(), advantages, collected));
            learner.update(&rollout).unwrap();
        }
        runs.push(out);
    }
    let truncations: usize = runs[0]
        .iter()
        .map(|r| r.3.episodes.iter().filter(|(_, e)| e.len == 7).count())
        .sum();
    assert!(truncations > 0, "no episode was truncated");
    for (one, two) in runs[0].iter().zip(&runs[1]) {
        assert_eq!(one.0, two.0, "observations differ");
        assert!(max_diff(&one.1, &two.1) < 1e-5, "values differ");
        assert!(max_diff(&one.2, &two.2) < 1e-4, "advantages differ");
        assert_eq!(one.3, two.3, "episodes differ");
    }
}

/// What the sampler records replays exactly: the learner's first minibatch sees ratio 1, on the
/// second rollout too (a non-zero start state, episodes straddling the segment boundary).
#[test]
fn replay_of_what_the_sampler_recorded_has_ratio_one() {
    for (name, core) in [("lstm", lstm()), ("brims", brims())] {
        let (n, steps) = (4, 8);
        let mut learner = learner(core, 2, n, steps);
        let envs = SyncEnvs::grouped(
            vec![
                (0..2)
                    .map(|_| memory_cue(MemoryCue::DEFAULT_DELAY))
                    .collect(),
                (2..4)
                    .map(|_| memory_cue(MemoryCue::DEFAULT_DELAY))
                    .collect(),
            ],
            3,
        );
        let mut sampler = Sampler::new(envs);
        let mut rollout = Rollout::new::<f32>(steps, n, &[2]);
        let never = AtomicBool::new(false);
        for update in 0..3 {
            let (net, rng) = learner.acting();
            sampler
                .collect(net, rng, &mut rollout, &never, &mut ())
                .unwrap()
                .unwrap();
            let m = learner.update(&rollout).unwrap();
            assert!(
                m.first_ratio_deviation < 1e-5,
                "{name}, update {update}: |r − 1| = {}",
                m.first_ratio_deviation
            );
        }
    }
}

/// Raises the stop flag when the policy has acted at step `at`, and counts the acting calls.
struct StopAt<'a> {
    at: usize,
    stop: &'a AtomicBool,
    calls: usize,
}

impl SamplerEvents for StopAt<'_> {
    fn on_act(&mut self, event: &ActEvent<'_>) -> ppo::Result<()> {
        assert_eq!(event.next_state.batch_size()?, 2);
        assert_eq!(event.resets.len(), 2);
        assert_eq!(event.envs.start, 2 * event.group);
        self.calls += 1;
        if event.t == self.at {
            self.stop.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A stop before the first step leaves the sampler usable; a stop in the middle abandons the
/// rollout, and the sampler refuses to go on with envs in the middle of a step.
#[test]
fn a_stop_abandons_the_rollout() {
    let (n, steps) = (4, 8);
    let mut learner = learner(lstm(), 2, n, steps);
    let envs = SyncEnvs::grouped(
        vec![
            (0..2)
                .map(|_| memory_cue(MemoryCue::DEFAULT_DELAY))
                .collect(),
            (2..4)
                .map(|_| memory_cue(MemoryCue::DEFAULT_DELAY))
                .collect(),
        ],
        3,
    );
    let mut sampler = Sampler::new(envs);
    let mut rollout = Rollout::new::<f32>(steps, n, &[2]);
    let stop = AtomicBool::new(true);
    let (net, rng) = learner.acting();
    let stopped = sampler.collect(net, rng, &mut rollout, &stop, &mut ());
    assert!(stopped.unwrap().is_none());

    stop.store(false, Ordering::SeqCst);
    let mut events = StopAt {
        at: 2,
        stop: &stop,
        calls: 0,
    };
    let stopped = sampler.collect(net, rng, &mut rollout, &stop, &mut events);
    assert!(stopped.unwrap().is_none());
    // Both groups acted at steps 0, 1 and 2, then the stop was seen before step 3.
    assert_eq!(events.calls, 6);
    stop.store(false, Ordering::SeqCst);
    let err = sampler
        .collect(net, rng, &mut rollout, &stop, &mut ())
        .unwrap_err();
    assert!(matches!(err, ppo::PpoError::Sampler(_)), "{err}");
}
