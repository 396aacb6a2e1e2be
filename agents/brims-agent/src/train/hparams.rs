//! The hyperparameters a run shows in TensorBoard's HParams tab.

use telemetry::HParamValue;

use crate::config::run::{EnvConfig, RunConfig};

/// Core kind and main settings of `cfg` (the metric column is `charts/episodic_return`).
pub(crate) fn of_config(cfg: &RunConfig) -> Vec<(String, HParamValue)> {
    let core = core_kind(&cfg.network);
    let env = match &cfg.env {
        EnvConfig::Atari { game, .. } => game.clone(),
        EnvConfig::Cartpole => "CartPole-v1".into(),
        EnvConfig::Memory { delay } => format!("MemoryCue-d{delay}"),
    };
    vec![
        ("core".into(), HParamValue::Str(core.into())),
        ("env".into(), HParamValue::Str(env)),
        ("seed".into(), HParamValue::F64(cfg.seed as f64)),
        (
            "learning_rate".into(),
            HParamValue::F64(cfg.ppo.learning_rate),
        ),
        ("num_envs".into(), HParamValue::F64(cfg.ppo.num_envs as f64)),
        (
            "num_steps".into(),
            HParamValue::F64(cfg.ppo.num_steps as f64),
        ),
        ("clip_coef".into(), HParamValue::F64(cfg.ppo.clip_coef)),
        ("ent_coef".into(), HParamValue::F64(cfg.ppo.ent_coef)),
    ]
}

/// `"lstm"`, `"brims"`, or `"none"` for a feed-forward network.
pub(crate) fn core_kind(network: &ppo::NetworkConfig) -> &'static str {
    match &network.core {
        None => "none",
        Some(brims::CoreConfig::Lstm(_)) => "lstm",
        Some(brims::CoreConfig::Brims(_)) => "brims",
    }
}
