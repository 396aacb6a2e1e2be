//! The update on synthetic rollouts: ratio 1 on the first minibatch, resume == straight run,
//! non-finite stop, checkpoint errors.

use brims::{BrimsConfig, BrimsLayerConfig, LstmConfig};
use candle_core::{Device, Tensor};
use ppo::{
    Activation, CoreConfig, EncoderConfig, Learner, NetworkConfig, PolicyStep, PpoConfig, PpoError,
    Rollout,
};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

const T: usize = 16;
const N: usize = 4;

fn plan() -> ppo::PpoPlan {
    PpoConfig {
        num_envs: N,
        num_steps: T,
        num_minibatches: 2,
        update_epochs: 2,
        total_timesteps: (8 * T * N) as u64,
        learning_rate: 1e-3,
        ..Default::default()
    }
    .validate()
    .unwrap()
}

fn mlp(core: Option<CoreConfig>, hidden: usize) -> NetworkConfig {
    NetworkConfig {
        encoder: EncoderConfig::Mlp {
            hidden: vec![hidden],
            activation: Activation::Tanh,
        },
        core,
    }
}

fn lstm() -> NetworkConfig {
    mlp(Some(CoreConfig::Lstm(LstmConfig::new(8))), 16)
}

/// Acts with the learner's network on random observations for `T` steps, after a few warm-up
/// steps so the stored start state is not zero; episodes end at random. `zero_start` stores a
/// zero start state instead of the real one (a sabotaged storage, for negative controls).
fn fill(learner: &mut Learner, rollout: &mut Rollout, seed: u64, zero_start: bool) {
    let mut env_rng = Pcg64::seed_from_u64(seed);
    let dev = Device::Cpu;
    let net_obs =
        |rng: &mut Pcg64| -> Vec<f32> { (0..N * 3).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let mut state = learner.net().zero_state(N).unwrap();
    let mut resets = vec![1.0f32; N];
    for _ in 0..5 {
        let obs = Tensor::from_vec(net_obs(&mut env_rng), (N, 3), &dev).unwrap();
        let r = Tensor::from_slice(&resets, N, &dev).unwrap();
        state = learner
            .net()
            .act(&obs, &state, &r, false)
            .unwrap()
            .next_state;
        resets = vec![0.0; N];
    }
    let start = if zero_start {
        learner.net().zero_state(N).unwrap()
    } else {
        state.clone()
    };
    rollout.begin(&start).unwrap();
    for t in 0..T {
        let obs_v = net_obs(&mut env_rng);
        let obs = Tensor::from_slice(&obs_v, (N, 3), &dev).unwrap();
        let r = Tensor::from_slice(&resets, N, &dev).unwrap();
        let out = learner.net().act(&obs, &state, &r, false).unwrap();
        let (logits, values, next) = (out.logits, out.values, out.next_state);
        let (actions, logprobs) = ppo::sample_actions(&logits, learner.rng_mut()).unwrap();
        let values = values.to_vec1::<f32>().unwrap();
        let step = PolicyStep {
            obs: &obs_v,
            resets: &resets,
            actions: &actions,
            logprobs: &logprobs,
            values: &values,
        };
        rollout.record_policy(t, 0, step).unwrap();
        let rewards: Vec<f32> = (0..N).map(|_| env_rng.gen_range(-1.0..1.0)).collect();
        let term: Vec<bool> = (0..N).map(|_| env_rng.gen_bool(0.08)).collect();
        let trunc: Vec<bool> = (0..N).map(|_| env_rng.gen_bool(0.04)).collect();
        rollout
            .record_outcome(t, 0, &rewards, &term, &trunc)
            .unwrap();
        for (e, &cut) in trunc.iter().enumerate() {
            if cut {
                rollout
                    .record_final_value(t, e, env_rng.gen_range(-1.0..1.0))
                    .unwrap();
            }
        }
        resets = (0..N)
            .map(|e| f32::from(u8::from(term[e] || trunc[e])))
            .collect();
        state = next;
    }
    let next_values: Vec<f32> = (0..N).map(|_| env_rng.gen_range(-1.0..1.0)).collect();
    rollout.record_next_values(0, &next_values).unwrap();
}

fn new_learner(net: NetworkConfig) -> Learner {
    Learner::new(plan(), net, &[3], 3, &Device::Cpu).unwrap()
}

#[test]
fn ratio_is_one_on_first_minibatch_lstm() {
    let mut learner = new_learner(lstm());
    let mut rollout = Rollout::new::<f32>(T, N, &[3]);
    for seed in 0..3 {
        fill(&mut learner, &mut rollout, seed, false);
        let m = learner.update(&rollout).unwrap();
        assert!(
            m.first_ratio_deviation < 1e-5,
            "update {}: |ratio − 1| = {}",
            m.update,
            m.first_ratio_deviation
        );
        assert!(
            m.pg_loss.is_finite() && m.v_loss.is_finite() && m.grad_norm > 0.0,
            "{m:?}"
        );
    }
    // Negative control: replaying from a zero state instead of the stored one breaks the invariant.
    fill(&mut learner, &mut rollout, 9, true);
    let m = learner.update(&rollout).unwrap();
    assert!(
        m.first_ratio_deviation > 1e-4,
        "sabotaged start state went unnoticed: {}",
        m.first_ratio_deviation
    );
}

/// A small two-layer BRIMs: 16 = 4 modules of 4 (2 active), 8 = 2 modules of 4 (1 active).
fn small_brims() -> NetworkConfig {
    let layers = vec![
        BrimsLayerConfig {
            hidden_size: 16,
            modules: 4,
            active: 2,
        },
        BrimsLayerConfig {
            hidden_size: 8,
            modules: 2,
            active: 1,
        },
    ];
    let mut cfg = BrimsConfig::with_layers(layers);
    cfg.input_attention.key_size = 8;
    cfg.comm_attention.key_size = 8;
    cfg.comm_attention.value_size = 8;
    mlp(Some(CoreConfig::Brims(cfg)), 16)
}

#[test]
fn ratio_is_one_on_first_minibatch_brims() {
    let mut learner = new_learner(small_brims());
    let mut rollout = Rollout::new::<f32>(T, N, &[3]);
    for seed in 0..3 {
        fill(&mut learner, &mut rollout, seed, false);
        let m = learner.update(&rollout).unwrap();
        assert!(
            m.first_ratio_deviation < 1e-5,
            "update {}: |ratio − 1| = {}",
            m.update,
            m.first_ratio_deviation
        );
    }
    fill(&mut learner, &mut rollout, 9, true);
    let m = learner.update(&rollout).unwrap();
    assert!(
        m.first_ratio_deviation > 1e-4,
        "sabotaged start state went unnoticed: {}",
        m.first_ratio_deviation
    );
}

#[test]
fn ratio_is_one_feed_forward() {
    let mut learner = new_learner(mlp(None, 16));
    let mut rollout = Rollout::new::<f32>(T, N, &[3]);
    fill(&mut learner, &mut rollout, 0, false);
    let m = learner.update(&rollout).unwrap();
    assert!(
        m.first_ratio_deviation < 1e-5,
        "{}",
        m.first_ratio_deviation
    );
}

#[test]
fn ratio_is_one_nature_cnn_lstm_u8() {
    let (t, n) = (6, 2);
    let plan = PpoConfig {
        num_envs: n,
        num_steps: t,
        num_minibatches: 2,
        update_epochs: 1,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let net = NetworkConfig::atari(Some(CoreConfig::Lstm(LstmConfig::new(32))));
    let shape = [2usize, 84, 84];
    let mut learner = Learner::new(plan, net, &shape, 4, &Device::Cpu).unwrap();
    let mut rng = Pcg64::seed_from_u64(3);
    let mut rollout = Rollout::new::<u8>(t, n, &shape);
    let mut state = learner.net().zero_state(n).unwrap();
    rollout.begin(&state).unwrap();
    for step in 0..t {
        let frame: Vec<u8> = (0..n * 2 * 84 * 84).map(|_| rng.gen()).collect();
        let resets = vec![if step == 0 || step == 3 { 1.0 } else { 0.0 }; n];
        let obs = Tensor::from_slice(&frame, (n, 2, 84, 84), &Device::Cpu).unwrap();
        let r = Tensor::from_slice(&resets, n, &Device::Cpu).unwrap();
        let out = learner.net().act(&obs, &state, &r, false).unwrap();
        let (logits, values, next) = (out.logits, out.values, out.next_state);
        let (a, lp) = ppo::sample_actions(&logits, &mut rng).unwrap();
        let values = values.to_vec1::<f32>().unwrap();
        let ps = PolicyStep {
            obs: &frame,
            resets: &resets,
            actions: &a,
            logprobs: &lp,
            values: &values,
        };
        rollout.record_policy(step, 0, ps).unwrap();
        rollout
            .record_outcome(step, 0, &[1.0; 2], &[false; 2], &[false; 2])
            .unwrap();
        state = next;
    }
    rollout.record_next_values(0, &[0.0, 0.0]).unwrap();
    let m = learner.update(&rollout).unwrap();
    assert!(
        m.first_ratio_deviation < 1e-5,
        "{}",
        m.first_ratio_deviation
    );
}

fn max_diff(a: &Learner, b: &Learner) -> f32 {
    let (pa, pb) = (a.parameters(), b.parameters());
    assert_eq!(pa.len(), pb.len());
    pa.iter()
        .zip(&pb)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0.0, f32::max)
}

#[test]
fn resume_equals_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut rollout = Rollout::new::<f32>(T, N, &[3]);
    let mut straight = new_learner(lstm());
    for u in 0..4 {
        fill(&mut straight, &mut rollout, 100 + u, false);
        straight.update(&rollout).unwrap();
    }
    let mut first = new_learner(lstm());
    for u in 0..2 {
        fill(&mut first, &mut rollout, 100 + u, false);
        first.update(&rollout).unwrap();
    }
    let header = first.save_checkpoint(dir.path(), 3).unwrap();
    drop(first);
    let mut resumed = Learner::resume(&header, &Device::Cpu).unwrap();
    assert_eq!(
        (resumed.updates(), resumed.global_step()),
        (2, (2 * T * N) as u64)
    );
    for u in 2..4 {
        fill(&mut resumed, &mut rollout, 100 + u, false);
        resumed.update(&rollout).unwrap();
    }
    let d = max_diff(&straight, &resumed);
    assert!(d <= 1e-6, "resumed run differs by {d}");
    // The learning rate annealed identically, and the runs really moved.
    assert_eq!(straight.updates(), resumed.updates());
    assert!(max_diff(&straight, &new_learner(lstm())) > 1e-3);
}

#[test]
fn non_finite_loss_stops_and_leaves_checkpoint_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut learner = new_learner(lstm());
    let mut rollout = Rollout::new::<f32>(T, N, &[3]);
    fill(&mut learner, &mut rollout, 0, false);
    learner.update(&rollout).unwrap();
    let header = learner.save_checkpoint(dir.path(), 2).unwrap();
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    fill(&mut learner, &mut rollout, 1, false);
    rollout
        .record_outcome(3, 0, &[f32::MAX; N], &[false; N], &[false; N])
        .unwrap();
    let err = learner.update(&rollout).unwrap_err();
    assert!(
        matches!(err, PpoError::NonFinite { update: 2, .. }),
        "{err}"
    );
    for (p, b) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} changed", p.display());
    }
    assert_eq!(ppo::latest_checkpoint(dir.path()).unwrap().unwrap(), header);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before.len());
}

#[test]
fn checkpoint_of_other_shape_or_truncated_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let saved = new_learner(mlp(Some(CoreConfig::Lstm(LstmConfig::new(8))), 32));
    let header = saved.save_checkpoint(dir.path(), 2).unwrap();

    // Another network shape: error names the file and the tensor; nothing changes.
    let mut other = new_learner(lstm());
    let before = other.parameters();
    match other.restore(&header).unwrap_err() {
        PpoError::CheckpointShape { path, name, .. } => {
            assert!(
                path.ends_with("ckpt-00000000.safetensors"),
                "{}",
                path.display()
            );
            assert!(
                name.starts_with("model.") || name.starts_with("adam."),
                "{name}"
            );
        }
        e => panic!("expected a shape error, got {e}"),
    }
    assert_eq!(max_diff_params(&before, &other.parameters()), 0.0);

    // A truncated tensor file.
    let tensors = dir.path().join("ckpt-00000000.safetensors");
    let bytes = std::fs::read(&tensors).unwrap();
    std::fs::write(&tensors, &bytes[..bytes.len() / 2]).unwrap();
    let err = Learner::resume(&header, &Device::Cpu)
        .err()
        .expect("truncated file must fail");
    assert!(
        matches!(&err, PpoError::Checkpoint { path, .. } if path == &tensors),
        "{err}"
    );
    assert!(
        err.to_string().contains("ckpt-00000000.safetensors"),
        "{err}"
    );

    // A garbage header.
    std::fs::write(&header, b"{ not json").unwrap();
    let err = Learner::resume(&header, &Device::Cpu)
        .err()
        .expect("bad header must fail");
    assert!(
        matches!(&err, PpoError::Checkpoint { path, .. } if path == &header),
        "{err}"
    );
}

fn max_diff_params(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f32 {
    a.iter()
        .zip(b)
        .map(|((_, x), (_, y))| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0.0, f32::max)
}

#[test]
fn keeps_only_the_last_k_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut learner = new_learner(lstm());
    let mut rollout = Rollout::new::<f32>(T, N, &[3]);
    for u in 0..4 {
        fill(&mut learner, &mut rollout, u, false);
        learner.update(&rollout).unwrap();
        learner.save_checkpoint(dir.path(), 2).unwrap();
    }
    let kept: Vec<u64> = ppo::list_checkpoints(dir.path())
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(kept, vec![3, 4]);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        4,
        "two headers + two tensor files, no temp files"
    );
}

#[test]
fn target_kl_stops_epochs_early() {
    let mut plan = plan();
    plan.config.update_epochs = 8;
    plan.config.learning_rate = 0.05;
    plan.config.target_kl = Some(1e-6);
    let plan = plan.config.validate().unwrap();
    let mut learner = Learner::new(plan, lstm(), &[3], 3, &Device::Cpu).unwrap();
    let mut rollout = Rollout::new::<f32>(T, N, &[3]);
    fill(&mut learner, &mut rollout, 0, false);
    let m = learner.update(&rollout).unwrap();
    assert!(m.epochs < 8 && m.approx_kl > 1e-6, "{m:?}");
}
