//! The Pong ablation's configs (docs/results/ablation-pong-v1) change only what their row
//! ablates, and the size-matched LSTM's core is within 10% of BRIMs' core in parameters.

use std::path::PathBuf;

use brims::{CoreConfig, TopDown};
use candle_core::Device;
use candle_nn::VarMap;
use ppo::{ActorCritic, NetworkConfig};
use rand::SeedableRng;

fn config(name: &str) -> toml::Table {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    toml::from_str(&text).unwrap()
}

fn network(doc: &toml::Table) -> NetworkConfig {
    doc["network"].clone().try_into().unwrap()
}

/// `doc` without its name and without the `[network.core]` keys `core_keys`.
fn without(doc: &toml::Table, core_keys: &[&str]) -> toml::Table {
    let mut doc = doc.clone();
    doc.remove("name");
    let core = doc["network"]["core"].clone();
    let mut core = core.as_table().unwrap().clone();
    for key in core_keys {
        core.remove(*key);
    }
    doc["network"]
        .as_table_mut()
        .unwrap()
        .insert("core".into(), core.into());
    doc
}

/// Parameters of the recurrent core alone (`core.*`) of the Pong network (1 frame of 84×84,
/// 6 actions).
fn core_params(cfg: &NetworkConfig) -> usize {
    let mut varmap = VarMap::new();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
    ActorCritic::new(cfg, &[1, 84, 84], 6, &mut varmap, &Device::Cpu, &mut rng).unwrap();
    let data = varmap.data().lock().unwrap();
    data.iter()
        .filter(|(name, _)| name.starts_with("core."))
        .map(|(_, var)| var.as_tensor().elem_count())
        .sum()
}

#[test]
fn each_brims_ablation_changes_only_its_own_option() {
    let brims = config("pong_brims.toml");
    // Everything but the core's layers and top-down wiring is the same as pong_brims.
    for name in [
        "pong_brims_no_top_down.toml",
        "pong_brims_dense.toml",
        "pong_brims_one_module.toml",
    ] {
        let ablation = config(name);
        assert_eq!(
            without(&ablation, &["layers", "top_down"]),
            without(&brims, &["layers", "top_down"]),
            "{name} differs from pong_brims.toml outside the ablated options"
        );
    }
    let base = match network(&brims).core {
        Some(CoreConfig::Brims(c)) => c,
        other => panic!("pong_brims has a BRIMs core, not {other:?}"),
    };
    let brims_core = |name: &str| match network(&config(name)).core {
        Some(CoreConfig::Brims(c)) => c,
        other => panic!("{name} has a BRIMs core, not {other:?}"),
    };
    let no_top_down = brims_core("pong_brims_no_top_down.toml");
    assert_eq!(no_top_down.top_down, TopDown::None);
    assert_eq!(no_top_down.layers, base.layers);
    let dense = brims_core("pong_brims_dense.toml");
    assert_eq!(dense.top_down, base.top_down);
    for (layer, reference) in dense.layers.iter().zip(&base.layers) {
        assert_eq!(layer.hidden_size, reference.hidden_size);
        assert_eq!(layer.modules, reference.modules);
        assert_eq!(layer.active, layer.modules, "dense: every module active");
    }
    let one_module = brims_core("pong_brims_one_module.toml");
    assert_eq!(one_module.top_down, base.top_down);
    assert_eq!(one_module.layers.len(), base.layers.len());
    for (layer, reference) in one_module.layers.iter().zip(&base.layers) {
        assert_eq!(layer.hidden_size, reference.hidden_size);
        assert_eq!((layer.modules, layer.active), (1, 1));
    }
}

#[test]
fn matched_lstm_normalises_its_input_and_matches_brims_in_size() {
    let lstm = config("pong_lstm.toml");
    let matched = config("pong_lstm_matched.toml");
    assert_eq!(
        without(&matched, &["hidden_size", "input_norm"]),
        without(&lstm, &["hidden_size", "input_norm"]),
        "pong_lstm_matched.toml differs from pong_lstm.toml outside the core's size and norm"
    );
    let Some(CoreConfig::Lstm(core)) = network(&matched).core else {
        panic!("pong_lstm_matched has an LSTM core");
    };
    assert!(
        core.input_norm,
        "the matched LSTM normalises its input as BRIMs' slots"
    );
    let brims_params = core_params(&network(&config("pong_brims.toml")));
    let lstm_params = core_params(&network(&matched));
    let ratio = lstm_params as f64 / brims_params as f64;
    println!("core parameters: BRIMs {brims_params}, matched LSTM {lstm_params} ({ratio:.3}x)");
    assert!(
        (0.9..=1.1).contains(&ratio),
        "matched LSTM core {lstm_params} vs BRIMs core {brims_params}: {ratio:.3}x"
    );
}
