//! Learning proofs (release mode, fixed seeds): CartPole-v1 with LSTM and BRIMs cores, and a
//! memory task that recurrent cores solve and a feed-forward policy cannot.

mod common;

use brims::{BrimsConfig, BrimsLayerConfig, CoreConfig, LstmConfig};
use candle_core::Device;
use common::{train, ScaleReward, SyncEnvs};
use envs_api::{cartpole_v1, memory_cue, MemoryCue};
use ppo::{Activation, EncoderConfig, Learner, NetworkConfig, PpoConfig};

fn mlp(core: Option<CoreConfig>, hidden: usize) -> NetworkConfig {
    NetworkConfig {
        encoder: EncoderConfig::Mlp {
            hidden: vec![hidden],
            activation: Activation::Tanh,
        },
        core,
    }
}

fn small_brims(hidden: usize) -> CoreConfig {
    let layers = vec![
        BrimsLayerConfig {
            hidden_size: hidden,
            modules: 4,
            active: 2,
        },
        BrimsLayerConfig {
            hidden_size: hidden / 2,
            modules: 2,
            active: 1,
        },
    ];
    let mut cfg = BrimsConfig::with_layers(layers);
    cfg.input_attention.key_size = 16;
    cfg.comm_attention.key_size = 16;
    cfg.comm_attention.value_size = 16;
    CoreConfig::Brims(cfg)
}

/// One-layer BRIMs (= RIMs): `hidden` split into 4 modules, 2 active.
fn rims(hidden: usize) -> CoreConfig {
    let mut cfg = BrimsConfig::with_layers(vec![BrimsLayerConfig {
        hidden_size: hidden,
        modules: 4,
        active: 2,
    }]);
    cfg.input_attention.key_size = 16;
    cfg.comm_attention.key_size = 16;
    cfg.comm_attention.value_size = 16;
    CoreConfig::Brims(cfg)
}

const CARTPOLE_ENVS: usize = 8;
const CARTPOLE_STEPS: usize = 32;
const CARTPOLE_UPDATES: usize = 200;

fn cartpole(core: Option<CoreConfig>, updates: usize, num_minibatches: usize) -> f64 {
    let (scale, max_grad_norm) = (0.1, 0.5);
    let cfg = PpoConfig {
        seed: 1,
        num_envs: CARTPOLE_ENVS,
        num_steps: CARTPOLE_STEPS,
        num_minibatches,
        update_epochs: 4,
        learning_rate: 2.5e-3,
        ent_coef: 0.0,
        clip_coef: 0.2,
        clip_vloss: false,
        max_grad_norm,
        total_timesteps: (updates * CARTPOLE_ENVS * CARTPOLE_STEPS) as u64,
        ..Default::default()
    };
    let mut learner = Learner::new(
        cfg.validate().unwrap(),
        mlp(core, 64),
        &[4],
        2,
        &Device::Cpu,
    )
    .unwrap();
    let envs = SyncEnvs::new(
        (0..CARTPOLE_ENVS)
            .map(|_| ScaleReward {
                env: cartpole_v1(),
                scale,
            })
            .collect(),
        7,
    );
    let out = train(&mut learner, envs, updates, Some((20, 195.0)));
    let mean = out.mean_last(20);
    eprintln!(
        "cartpole: {} episodes, mean of last 20 = {mean:.1}",
        out.returns.len()
    );
    mean
}

#[test]
fn cartpole_lstm_reaches_195() {
    let lstm = CoreConfig::Lstm(LstmConfig::new(64));
    let mean = cartpole(Some(lstm), CARTPOLE_UPDATES, 2);
    assert!(
        mean >= 195.0,
        "mean return of the last 20 episodes {mean:.1} < 195"
    );
}

#[test]
fn cartpole_brims_reaches_195() {
    let mean = cartpole(Some(rims(32)), 150, 1);
    assert!(
        mean >= 195.0,
        "mean return of the last 20 episodes {mean:.1} < 195"
    );
}

const MEMORY_ENVS: usize = 8;
const MEMORY_STEPS: usize = 8;

/// Mean return of the last 100 episodes of MemoryCue (delay 4: 6-step episodes, so most
/// episodes straddle two 8-step segments and need the stored start state when replayed).
fn memory(core: Option<CoreConfig>, updates: usize) -> f64 {
    let cfg = PpoConfig {
        seed: 3,
        num_envs: MEMORY_ENVS,
        num_steps: MEMORY_STEPS,
        num_minibatches: 2,
        update_epochs: 4,
        learning_rate: 2.5e-3,
        clip_coef: 0.2,
        ent_coef: 0.01,
        gamma: 0.99,
        total_timesteps: (updates * MEMORY_ENVS * MEMORY_STEPS) as u64,
        ..Default::default()
    };
    let mut learner = Learner::new(
        cfg.validate().unwrap(),
        mlp(core, 32),
        &[2],
        2,
        &Device::Cpu,
    )
    .unwrap();
    let envs = SyncEnvs::new(
        (0..MEMORY_ENVS)
            .map(|_| memory_cue(MemoryCue::DEFAULT_DELAY))
            .collect(),
        11,
    );
    let out = train(
        &mut learner,
        envs,
        updates,
        Some((100, MemoryCue::SUCCESS_RETURN)),
    );
    let mean = out.mean_last(100);
    eprintln!(
        "memory: {} episodes, mean of last 100 = {mean:.2}",
        out.returns.len()
    );
    mean
}

const MEMORY_UPDATES: usize = 150;

#[test]
fn memory_lstm_solves_what_feed_forward_cannot() {
    let lstm = || Some(CoreConfig::Lstm(LstmConfig::new(32)));
    let solved = memory(lstm(), MEMORY_UPDATES);
    assert!(
        solved >= MemoryCue::SUCCESS_RETURN,
        "LSTM: {solved:.2} < {}",
        MemoryCue::SUCCESS_RETURN
    );
    let ff = memory(None, MEMORY_UPDATES);
    assert!(
        ff < MemoryCue::SUCCESS_RETURN,
        "feed-forward solved a memory task: {ff:.2}"
    );
    // The runs use the production sampler: one that does not carry the core state between
    // acting steps does not solve the task (0.26 of 0.8; checked by breaking it by hand). A
    // replay from a zero start state instead of the stored one is caught by the ratio-1 tests
    // in update.rs.
}

#[test]
fn memory_brims_solves_it() {
    let solved = memory(Some(small_brims(32)), MEMORY_UPDATES);
    assert!(
        solved >= MemoryCue::SUCCESS_RETURN,
        "BRIMs: {solved:.2} < {}",
        MemoryCue::SUCCESS_RETURN
    );
}
