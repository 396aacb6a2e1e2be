//! Serde configs for both cores: plain data with its own validation (a leaf: it imports no
//! core; [`crate::build_core`] beside the cores turns a config into one).

use serde::{Deserialize, Serialize};

use crate::error::BrimsError;

/// Which core to build, from TOML: `kind = "lstm"` or `kind = "brims"` plus that core's fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CoreConfig {
    /// The LSTM baseline.
    Lstm(LstmConfig),
    /// BRIMs (one layer = RIMs).
    Brims(BrimsConfig),
}

impl CoreConfig {
    /// Checks the config against the encoder's output width `input_size`.
    pub fn validate(&self, input_size: usize) -> Result<(), BrimsError> {
        match self {
            CoreConfig::Lstm(cfg) => cfg.validate(input_size),
            CoreConfig::Brims(cfg) => cfg.validate(input_size),
        }
    }

    /// The core's output width `H` (the top layer's hidden size for BRIMs).
    pub fn output_size(&self) -> usize {
        match self {
            CoreConfig::Lstm(cfg) => cfg.hidden_size,
            CoreConfig::Brims(cfg) => cfg.output_size(),
        }
    }
}

/// LSTM baseline config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LstmConfig {
    /// Hidden (and output) size `H`.
    pub hidden_size: usize,
    /// How the weights start (default: CleanRL's orthogonal).
    #[serde(default)]
    pub weight_init: LstmWeightInit,
    /// Normalise each input row to zero mean and unit variance (no learned scale) before the
    /// input projection, as BRIMs' `slot_norm` does to the encoder features it reads. Off by
    /// default (CleanRL's LSTM); on in the ablation's size-matched LSTM, so "BRIMs only wins by
    /// its normalisation" can be tested.
    #[serde(default)]
    pub input_norm: bool,
}

/// The LSTM's initial weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LstmWeightInit {
    /// CleanRL's `ppo_atari_lstm.py`: `weight_ih` and `weight_hh` orthogonal with gain 1, every
    /// bias 0. Drawn by `ppo::ActorCritic::new`, which owns the seeded RNG and the orthogonal
    /// draw; [`crate::Lstm::new`] on its own draws PyTorch's uniform values.
    #[default]
    Orthogonal,
    /// PyTorch's `nn.LSTM` default: every parameter `U(±1/√H)`.
    Pytorch,
}

impl LstmConfig {
    /// The Atari preset, the core of configs/breakout_lstm.toml: one LSTM of 128 (CleanRL's
    /// `ppo_atari_lstm.py`).
    pub fn atari() -> Self {
        LstmConfig::new(128)
    }

    /// An LSTM of `hidden_size` with the default (orthogonal) weights.
    pub fn new(hidden_size: usize) -> Self {
        LstmConfig {
            hidden_size,
            weight_init: LstmWeightInit::default(),
            input_norm: false,
        }
    }

    /// Checks the sizes.
    pub fn validate(&self, input_size: usize) -> Result<(), BrimsError> {
        positive("input size", input_size)?;
        positive("LSTM hidden_size", self.hidden_size)
    }
}

/// Where a layer's top-down input comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopDown {
    /// The reference code: the top layer at `t−1` feeds layer 0 only (with one layer, layer 0
    /// reads its own past state).
    #[default]
    Reference,
    /// The paper: every layer below the top reads the layer above at `t−1`; the top layer has
    /// no top-down slot. Identical to `Reference` for two layers.
    Paper,
    /// No top-down slot in any layer: each layer sees only the layer below (and its own
    /// modules through communication). Stacked RIMs, the ablation of BRIMs' "B".
    None,
}

/// How equal null-attention scores are ordered when choosing the active modules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieBreak {
    /// The lower module index wins activation (modules `0..k` at a zero state).
    #[default]
    LowestIndex,
    /// Emulates torch 2.15's CPU `topk` (libstdc++ introselect, spec §8), as the reference.
    TorchCpu,
}

/// How the attention projections (input-attention queries, keys and values; communication
/// queries, keys and values) are initialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionInit {
    /// The reference code: every projection `N(0, attention_init_std²)` (0.01), whatever its
    /// fan-in. On wide inputs (CNN features) this shrinks the reads and the keys so much that
    /// the core's output barely depends on its input (see `examples/core_response.rs` in ppo).
    #[default]
    Reference,
    /// `N(0, 1/fan_in)` (LeCun normal): keys and values keep their input's scale, queries their
    /// module state's; `attention_init_std` is not used.
    FanIn,
}

/// How the per-module LSTM weights and biases are initialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LstmInit {
    /// The reference code: `U(±1/√N_l)` from the layer's dense `LSTMCell` of width `N_l`,
    /// although each module only sees its own block (fan-in `d_l`).
    #[default]
    Reference,
    /// `U(±1/√d_l)`: what an `LSTMCell` of the module's own size draws.
    Module,
}

/// What the core outputs to the policy and value heads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreOutput {
    /// The reference: the top layer's `h`, `[B, N_{L-1}]`.
    #[default]
    Top,
    /// Every layer's `h`, bottom first, concatenated: `[B, Σ N_l]` (a skip connection from
    /// each layer to the heads).
    AllLayers,
}

/// One BRIMs layer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrimsLayerConfig {
    /// Total hidden size `N_l` (h and c are each this wide).
    pub hidden_size: usize,
    /// Module count `M_l`; must divide `hidden_size`.
    pub modules: usize,
    /// Active modules per step `k_l`, `1 ≤ k_l ≤ M_l`.
    pub active: usize,
}

/// Input attention (modules query `[null, bottom-up, top-down]`). Defaults: the spec's MNIST
/// variant (4 heads, keys of 64, values of the module size).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputAttentionConfig {
    /// Heads.
    pub heads: usize,
    /// Key size per head.
    pub key_size: usize,
    /// Value size per head; `None` = the module size `d_l`. A module reads `heads · value_size`.
    pub value_size: Option<usize>,
}

impl Default for InputAttentionConfig {
    fn default() -> Self {
        InputAttentionConfig {
            heads: 4,
            key_size: 64,
            value_size: None,
        }
    }
}

/// Communication attention between the modules of a layer (spec §4.5: 4 heads of 32).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommAttentionConfig {
    /// Heads.
    pub heads: usize,
    /// Key size per head.
    pub key_size: usize,
    /// Value size per head.
    pub value_size: usize,
}

impl Default for CommAttentionConfig {
    fn default() -> Self {
        CommAttentionConfig {
            heads: 4,
            key_size: 32,
            value_size: 32,
        }
    }
}

/// BRIMs config (spec §§4.1–4.7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrimsConfig {
    /// Layers, bottom (0) to top; the output is the top layer's `h`.
    pub layers: Vec<BrimsLayerConfig>,
    /// Top-down wiring.
    #[serde(default)]
    pub top_down: TopDown,
    /// Tie-break rule of the module selection.
    #[serde(default)]
    pub tie_break: TieBreak,
    /// Input attention sizes.
    #[serde(default)]
    pub input_attention: InputAttentionConfig,
    /// Communication attention sizes.
    #[serde(default)]
    pub comm_attention: CommAttentionConfig,
    /// Dropout on the input-attention read (reference: 0.1; default 0 for RL). Training only;
    /// PPO's actor-critic refuses non-zero values (replay would not reproduce acting).
    #[serde(default)]
    pub read_dropout: f32,
    /// Dropout on the communication `fc` output before `tanh` (reference: 0.1). Training only;
    /// refused by PPO's actor-critic, as `read_dropout`.
    #[serde(default)]
    pub comm_dropout: f32,
    /// Std of the normal init of the attention projections (reference: 0.01); used by
    /// `attention_init = "reference"`.
    #[serde(default = "default_attention_init_std")]
    pub attention_init_std: f64,
    /// Init rule of the attention projections (default: the reference's).
    #[serde(default)]
    pub attention_init: AttentionInit,
    /// Gain of `attention_init = "fan_in"`: the projections draw `N(0, gain²/fan_in)`.
    #[serde(default = "one")]
    pub attention_init_gain: f64,
    /// Init rule of the module LSTMs (default: the reference's).
    #[serde(default)]
    pub lstm_init: LstmInit,
    /// What the heads read (default: the top layer, as the reference).
    #[serde(default)]
    pub output: CoreOutput,
    /// Normalise every input slot (the encoder features, the layer below, the top-down state)
    /// to zero mean and unit variance over its width before its keys and values are projected
    /// (a layer norm without gain or bias). Off in the reference.
    #[serde(default)]
    pub slot_norm: bool,
}

fn one() -> f64 {
    1.0
}

fn default_attention_init_std() -> f64 {
    0.01
}

impl BrimsConfig {
    /// The layer whose `h` before the step layer `l`'s top-down slot reads (`None`: the layer
    /// has no top-down slot), by the `top_down` wiring.
    pub fn top_down_source(&self, l: usize) -> Option<usize> {
        let n_layers = self.layers.len();
        match self.top_down {
            TopDown::Reference => (l == 0).then_some(n_layers - 1),
            TopDown::Paper => (l + 1 < n_layers).then_some(l + 1),
            TopDown::None => None,
        }
    }

    /// The Atari preset, the core of configs/breakout_brims.toml: a layer of 256 with 8 modules
    /// (4 active) under a layer of 128 with 4 modules (2 active), with what lets BRIMs learn
    /// from CNN features (see `AttentionInit::FanIn`, `LstmInit::Module`, `slot_norm`) and both
    /// layers' `h` (384) read by the heads.
    pub fn atari() -> Self {
        let mut cfg = Self::with_layers(vec![
            BrimsLayerConfig {
                hidden_size: 256,
                modules: 8,
                active: 4,
            },
            BrimsLayerConfig {
                hidden_size: 128,
                modules: 4,
                active: 2,
            },
        ]);
        cfg.attention_init = AttentionInit::FanIn;
        cfg.lstm_init = LstmInit::Module;
        cfg.slot_norm = true;
        cfg.output = CoreOutput::AllLayers;
        cfg
    }

    /// The output width: the top layer's `N_{L-1}`, or `Σ N_l` with `output = "all_layers"`.
    pub fn output_size(&self) -> usize {
        match self.output {
            CoreOutput::Top => self.layers.last().map_or(0, |l| l.hidden_size),
            CoreOutput::AllLayers => self.layers.iter().map(|l| l.hidden_size).sum(),
        }
    }

    /// A config with these layers and every other field at its default.
    pub fn with_layers(layers: Vec<BrimsLayerConfig>) -> Self {
        BrimsConfig {
            layers,
            top_down: TopDown::default(),
            tie_break: TieBreak::default(),
            input_attention: InputAttentionConfig::default(),
            comm_attention: CommAttentionConfig::default(),
            read_dropout: 0.0,
            comm_dropout: 0.0,
            attention_init_std: default_attention_init_std(),
            attention_init: AttentionInit::default(),
            attention_init_gain: 1.0,
            lstm_init: LstmInit::default(),
            output: CoreOutput::default(),
            slot_norm: false,
        }
    }

    /// Checks sizes, module counts, active counts and dropouts.
    pub fn validate(&self, input_size: usize) -> Result<(), BrimsError> {
        positive("input size", input_size)?;
        if self.layers.is_empty() {
            return Err(BrimsError::NoLayers);
        }
        for (layer, l) in self.layers.iter().enumerate() {
            positive(&format!("layer {layer} hidden_size"), l.hidden_size)?;
            positive(&format!("layer {layer} modules"), l.modules)?;
            if l.hidden_size % l.modules != 0 {
                return Err(BrimsError::ModulesNotDividing {
                    layer,
                    hidden: l.hidden_size,
                    modules: l.modules,
                });
            }
            if l.active == 0 || l.active > l.modules {
                return Err(BrimsError::ActiveOutOfRange {
                    layer,
                    active: l.active,
                    modules: l.modules,
                });
            }
        }
        let ia = &self.input_attention;
        positive("input_attention.heads", ia.heads)?;
        positive("input_attention.key_size", ia.key_size)?;
        if let Some(v) = ia.value_size {
            positive("input_attention.value_size", v)?;
        }
        let ca = &self.comm_attention;
        positive("comm_attention.heads", ca.heads)?;
        positive("comm_attention.key_size", ca.key_size)?;
        positive("comm_attention.value_size", ca.value_size)?;
        for (what, p) in [("read", self.read_dropout), ("comm", self.comm_dropout)] {
            if !(0.0..1.0).contains(&p) {
                return Err(BrimsError::Dropout {
                    what: what.into(),
                    value: p,
                });
            }
        }
        Ok(())
    }
}

fn positive(what: &str, v: usize) -> Result<(), BrimsError> {
    if v == 0 {
        Err(BrimsError::ZeroSize { what: what.into() })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_from_toml_and_rejects_unknown_fields() {
        let lstm: CoreConfig = toml_like("kind = \"lstm\"\nhidden_size = 64\n");
        assert_eq!(lstm, CoreConfig::Lstm(LstmConfig::new(64)));
        let brims: CoreConfig = toml_like(
            r#"kind = "brims"
top_down = "paper"
tie_break = "torch_cpu"
[[layers]]
hidden_size = 32
modules = 4
active = 2
"#,
        );
        let CoreConfig::Brims(b) = brims else {
            panic!("expected brims")
        };
        assert_eq!(b.top_down, TopDown::Paper);
        assert_eq!(b.tie_break, TieBreak::TorchCpu);
        assert_eq!(b.input_attention, InputAttentionConfig::default());
        assert!(toml::from_str::<CoreConfig>("kind = \"lstm\"\nhidden = 64\n").is_err());
        assert!(toml::from_str::<CoreConfig>("kind = \"gru\"\nhidden_size = 64\n").is_err());
    }

    /// The presets are the cores of the shipped Atari configs.
    #[test]
    fn atari_presets_are_the_cores_of_the_breakout_configs() {
        let core_of = |file: &str| -> CoreConfig {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../configs")
                .join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let value: toml::Value = toml::from_str(&text).unwrap();
            value["network"]["core"].clone().try_into().unwrap()
        };
        assert_eq!(
            core_of("breakout_lstm.toml"),
            CoreConfig::Lstm(LstmConfig::atari())
        );
        assert_eq!(
            core_of("breakout_brims.toml"),
            CoreConfig::Brims(BrimsConfig::atari())
        );
    }

    fn toml_like(s: &str) -> CoreConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn validate_gives_typed_errors() {
        let layer = |hidden_size, modules, active| BrimsLayerConfig {
            hidden_size,
            modules,
            active,
        };
        assert!(BrimsConfig::atari().validate(512).is_ok());
        assert!(matches!(
            BrimsConfig::with_layers(vec![]).validate(8),
            Err(BrimsError::NoLayers)
        ));
        assert!(matches!(
            BrimsConfig::with_layers(vec![layer(10, 4, 2)]).validate(8),
            Err(BrimsError::ModulesNotDividing {
                layer: 0,
                hidden: 10,
                modules: 4
            })
        ));
        assert!(matches!(
            BrimsConfig::with_layers(vec![layer(8, 4, 2), layer(8, 2, 3)]).validate(8),
            Err(BrimsError::ActiveOutOfRange {
                layer: 1,
                active: 3,
                modules: 2
            })
        ));
        assert!(matches!(
            BrimsConfig::with_layers(vec![layer(8, 4, 2)]).validate(0),
            Err(BrimsError::ZeroSize { .. })
        ));
        assert!(matches!(
            LstmConfig::new(0).validate(4),
            Err(BrimsError::ZeroSize { .. })
        ));
    }
}
