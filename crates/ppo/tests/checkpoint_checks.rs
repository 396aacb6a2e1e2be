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

/// Names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Issue 24 item 4: a checkpoint write that fails removes its temp file, and the temp files a
/// kill left behind are removed by `remove_temp_files` (and nothing else is).
#[test]
fn failed_and_interrupted_writes_leave_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let saved = learner();
    // The tensors' final name is taken by a directory: the rename fails after the temp file
    // was written.
    std::fs::create_dir(dir.path().join("ckpt-00000000.safetensors")).unwrap();
    assert!(saved.save_checkpoint(dir.path(), 2).is_err());
    assert_eq!(names(dir.path()), vec!["ckpt-00000000.safetensors"]);
    std::fs::remove_dir(dir.path().join("ckpt-00000000.safetensors")).unwrap();

    let header = saved.save_checkpoint(dir.path(), 2).unwrap();
    let before = names(dir.path());
    // What a kill -9 during a write leaves.
    for stale in ["ckpt-00000001.safetensors.tmp", "ckpt-00000001.json.tmp"] {
        std::fs::write(dir.path().join(stale), b"partial").unwrap();
    }
    std::fs::write(dir.path().join("notes.tmp"), b"not ours").unwrap();
    let removed = ppo::remove_temp_files(dir.path()).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    let mut expected = before.clone();
    expected.push("notes.tmp".into());
    expected.sort();
    assert_eq!(names(dir.path()), expected);
    ppo::read_header(&header).unwrap();
}

/// Issue 24 item 11: the run's config travels in the header; headers without it still load.
#[test]
fn the_run_config_travels_with_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let saved = learner();
    let header = saved
        .save_checkpoint_described(dir.path(), 2, None, Some("name = \"x\"\n"))
        .unwrap();
    assert_eq!(
        ppo::read_header(&header).unwrap().run_config.as_deref(),
        Some("name = \"x\"\n")
    );
    let old = saved.save_checkpoint(dir.path(), 2).unwrap();
    let text = std::fs::read_to_string(&old).unwrap();
    assert!(!text.contains("run_config"), "{text}");
    assert_eq!(ppo::read_header(&old).unwrap().run_config, None);
}
