//! Checks on loading a checkpoint: non-finite weights are refused with a typed error, and the
//! driver's clock travels with the checkpoint.

use std::path::Path;

use brims::LstmConfig;
use candle_core::{Device, Tensor};
use ppo::{
    Activation, CoreConfig, EncoderConfig, Learner, NetworkConfig, PpoConfig, PpoError, RunClock,
};

fn learner() -> Learner {
    let plan = PpoConfig {
        num_envs: 2,
        num_steps: 4,
        num_minibatches: 1,
        total_timesteps: 64,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let network = NetworkConfig {
        encoder: EncoderConfig::Mlp {
            hidden: vec![8],
            activation: Activation::Tanh,
        },
        core: Some(CoreConfig::Lstm(LstmConfig::new(4))),
    };
    Learner::new(plan, network, &[3], 2, &Device::Cpu).unwrap()
}

/// Overwrites value 0 of tensor `name` in the checkpoint `header` with `value` (and fixes the
/// header's byte count, so only the value is wrong).
fn poison(header: &Path, name: &str, value: f32) {
    let h = ppo::read_header(header).unwrap();
    let file = header.parent().unwrap().join(&h.tensors_file);
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let t = &tensors[name];
    let mut values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values[0] = value;
    let poisoned = Tensor::from_vec(values, t.dims(), &Device::Cpu).unwrap();
    tensors.insert(name.to_string(), poisoned);
    candle_core::safetensors::save(&tensors, &file).unwrap();
    // Edit the text (the RNG state's 128-bit numbers do not survive a serde_json::Value).
    let text = std::fs::read_to_string(header).unwrap();
    let old = format!("\"tensors_bytes\": {}", h.tensors_bytes);
    assert!(text.contains(&old), "{text}");
    let new = format!(
        "\"tensors_bytes\": {}",
        std::fs::metadata(&file).unwrap().len()
    );
    std::fs::write(header, text.replace(&old, &new)).unwrap();
}

#[test]
fn non_finite_weights_are_refused_on_load() {
    for (i, value) in [f32::NAN, f32::INFINITY].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let saved = learner();
        let header = saved.save_checkpoint(dir.path(), 2).unwrap();
        // Loadable before.
        Learner::resume(&header, &Device::Cpu).unwrap();
        let name = format!("model.{}", saved.parameters()[i].0);
        poison(&header, &name, value);
        let err = match Learner::resume(&header, &Device::Cpu) {
            Ok(_) => panic!("a checkpoint with {value} in {name} was loaded"),
            Err(e) => e,
        };
        assert!(
            matches!(&err, PpoError::NonFiniteCheckpoint { tensor, count: 1, .. } if *tensor == name),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&name) && msg.contains("non-finite"), "{msg}");
        // restore into an existing learner leaves it unchanged.
        let mut other = learner();
        let before = other.parameters();
        assert!(other.restore(&header).is_err());
        for ((_, a), (_, b)) in before.iter().zip(other.parameters()) {
            let d = (a - &b).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        }
    }
}

#[test]
fn the_clock_travels_with_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let saved = learner();
    let header = saved.save_checkpoint(dir.path(), 2).unwrap();
    assert_eq!(ppo::read_header(&header).unwrap().clock, None);
    let clock = RunClock {
        steps: 64,
        wall_secs: 2.5,
        rollout_secs: 1.0,
        update_secs: 1.25,
    };
    let header = saved
        .save_checkpoint_with_clock(dir.path(), 2, Some(clock))
        .unwrap();
    assert_eq!(ppo::read_header(&header).unwrap().clock, Some(clock));
}
