//! The actor-critic network: encoder → optional recurrent core → policy and value heads.

use brims::{build_core, Core, CoreConfig, CoreState, LstmWeightInit, StepTrace};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{PpoError, Result};
use crate::init::{orthogonal, SeededInit};

mod flops;
pub use flops::ForwardFlops;

/// Hidden-layer nonlinearity of the MLP encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `tanh` (CleanRL's classic-control choice).
    Tanh,
    /// `max(0, x)`.
    Relu,
}

/// The observation encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderConfig {
    /// Fully connected layers for vector observations `[D]`.
    Mlp {
        /// Widths of the hidden layers (the last is the feature width); at least one.
        hidden: Vec<usize>,
        /// Nonlinearity after every layer.
        activation: Activation,
    },
    /// The Nature DQN CNN for `[k, 84, 84]` frames: 32@8×8/4, 64@4×4/2, 64@3×3/1, then a
    /// linear layer of `hidden` (512) units; ReLU everywhere.
    NatureCnn {
        /// Width of the final linear layer.
        hidden: usize,
    },
}

/// The whole network: encoder, optional core (`None` = feed-forward), heads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Observation encoder.
    pub encoder: EncoderConfig,
    /// Recurrent core; `None` for the feed-forward variant.
    pub core: Option<CoreConfig>,
}

impl NetworkConfig {
    /// CleanRL's Atari network: Nature CNN (512) → `core` → heads.
    pub fn atari(core: Option<CoreConfig>) -> Self {
        NetworkConfig {
            encoder: EncoderConfig::NatureCnn { hidden: 512 },
            core,
        }
    }
}

/// The encoder's conv layer type: the one place that picks the conv implementation
/// (fastconv's im2col + gemm; `candle_nn::Conv2d` is the drop-in fallback).
type Conv = fastconv::Conv2d;

fn conv(in_c: usize, out_c: usize, kernel: usize, stride: usize, vb: VarBuilder) -> Result<Conv> {
    Ok(fastconv::Conv2d::load(in_c, out_c, kernel, stride, vb)?.with_relu())
}

/// u8 observations scaled to [0, 1]; f32 as they are; other dtypes converted.
fn as_f32(obs: &Tensor) -> candle_core::Result<Tensor> {
    match obs.dtype() {
        DType::U8 => obs.to_dtype(DType::F32)? / 255.0,
        DType::F32 => Ok(obs.clone()),
        other => obs
            .to_dtype(DType::F32)
            .map_err(|e| e.context(format!("observations of dtype {other:?}"))),
    }
}

enum Encoder {
    Mlp {
        layers: Vec<Linear>,
        activation: Activation,
    },
    NatureCnn {
        /// ReLU fused into each conv; `convs[0]` reads f32 input as it is.
        convs: [Conv; 3],
        /// `convs[0]`'s weights reading u8 frames directly, scaled by 1/255 inside the conv
        /// (no f32 copy of the frames, no separate scaling pass).
        frames_conv: Conv,
        fc: Linear,
    },
}

impl Encoder {
    /// Observations `[B, …]` (u8 are scaled to [0, 1]; f32 are taken as they are) → `[B, E]`.
    fn forward(&self, obs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Encoder::Mlp { layers, activation } => {
                let mut h = as_f32(obs)?;
                for layer in layers {
                    h = layer.forward(&h)?;
                    h = match activation {
                        Activation::Tanh => h.tanh()?,
                        Activation::Relu => h.relu()?,
                    };
                }
                Ok(h)
            }
            Encoder::NatureCnn {
                convs,
                frames_conv,
                fc,
            } => {
                let mut h = match obs.dtype() {
                    DType::U8 => frames_conv.forward(obs)?,
                    _ => convs[0].forward(&as_f32(obs)?)?,
                };
                for c in &convs[1..] {
                    h = c.forward(&h)?;
                }
                fc.forward(&h.flatten_from(1)?)?.relu()
            }
        }
    }
}

/// What one acting step of the network gives ([`ActorCritic::act`]), all detached.
#[derive(Clone, Debug)]
pub struct ActOutput {
    /// `[B, A]` policy logits.
    pub logits: Tensor,
    /// `[B]` value estimates.
    pub values: Tensor,
    /// The core state after the step (parts `[B, width]`; no parts without a core).
    pub next_state: CoreState,
    /// The core's per-layer module activity, when asked for and the core has any (BRIMs).
    pub trace: Option<StepTrace>,
}

/// Encoder, optional recurrent core, policy head (logits) and value head.
///
/// Acting ([`ActorCritic::act`]) and learning ([`ActorCritic::evaluate_sequence`]) share the
/// encoder and head code; the core runs [`Core::act`] when acting and [`Core::seq`] (the same
/// steps with the same resets) when replaying, so on unchanged weights they agree (ratio 1).
pub struct ActorCritic {
    encoder: Encoder,
    core: Option<Box<dyn Core>>,
    policy: Linear,
    value: Linear,
    obs_shape: Vec<usize>,
    n_actions: usize,
    device: Device,
}

/// One layer's parameters to initialise: the weight's and the bias's variable names, the
/// weight's shape, the orthogonal gain.
struct InitSpec {
    weight: String,
    bias: String,
    shape: Vec<usize>,
    gain: f64,
}

impl InitSpec {
    /// A candle-nn layer's `<prefix>.weight` and `<prefix>.bias`.
    fn layer(prefix: &str, shape: Vec<usize>, gain: f64) -> Self {
        InitSpec {
            weight: format!("{prefix}.weight"),
            bias: format!("{prefix}.bias"),
            shape,
            gain,
        }
    }
}

/// Gain of CleanRL's orthogonal init for the encoder's hidden layers.
const HIDDEN_GAIN: f64 = std::f64::consts::SQRT_2;

/// A policy needs at least one action.
fn check_action_count(n_actions: usize) -> Result<()> {
    if n_actions == 0 {
        return Err(PpoError::Shape {
            op: "ActorCritic::new",
            why: "the action space has 0 actions".into(),
        });
    }
    Ok(())
}

/// Dropout would draw other masks when the learner replays a rollout than when the policy
/// acted, so PPO's ratio would not start at 1: refuse it rather than ignore it.
fn refuse_dropout(cfg: &NetworkConfig) -> Result<()> {
    if let Some(CoreConfig::Brims(b)) = &cfg.core {
        for (field, p) in [
            ("network.core.read_dropout", b.read_dropout),
            ("network.core.comm_dropout", b.comm_dropout),
        ] {
            if p != 0.0 {
                return Err(PpoError::Config {
                    field,
                    value: p.to_string(),
                    why: "must be 0 for PPO: the learner replays the rollout and dropout \
                          would make its log-probabilities differ from the ones the policy \
                          acted with (the reference's 0.1 is for supervised training)"
                        .into(),
                });
            }
        }
    }
    Ok(())
}

/// The MLP encoder over 1-D observations, its output width, and its layers' init specs.
fn mlp_encoder(
    hidden: &[usize],
    activation: Activation,
    obs_shape: &[usize],
    vb: &VarBuilder,
    specs: &mut Vec<InitSpec>,
) -> Result<(Encoder, usize)> {
    let &[input] = obs_shape else {
        return Err(PpoError::Shape {
            op: "ActorCritic::new",
            why: format!("the MLP encoder needs 1-D observations, got shape {obs_shape:?}"),
        });
    };
    if hidden.is_empty() || hidden.contains(&0) {
        return Err(PpoError::Config {
            field: "encoder.hidden",
            value: format!("{hidden:?}"),
            why: "needs at least one layer, every width ≥ 1".into(),
        });
    }
    let mut layers = Vec::new();
    let mut width = input;
    for (i, &h) in hidden.iter().enumerate() {
        let prefix = format!("encoder.fc{i}");
        layers.push(candle_nn::linear(width, h, vb.pp(&prefix))?);
        specs.push(InitSpec::layer(&prefix, vec![h, width], HIDDEN_GAIN));
        width = h;
    }
    Ok((Encoder::Mlp { layers, activation }, width))
}

/// Spatial size of a `[H, W]` frame side after the Nature CNN's three valid convs
/// (`(x - k) / s + 1` each); None when the frame is too small.
fn nature_cnn_side(x: usize) -> Option<usize> {
    let a = x.checked_sub(8)? / 4 + 1;
    let b = a.checked_sub(4)? / 2 + 1;
    Some(b.checked_sub(3)? + 1)
}

/// The Nature CNN over `[k, H, W]` frames (three convs, then a `hidden`-wide linear layer), its
/// output width, and its layers' init specs.
fn nature_cnn_encoder(
    hidden: usize,
    obs_shape: &[usize],
    vb: &VarBuilder,
    specs: &mut Vec<InitSpec>,
) -> Result<(Encoder, usize)> {
    let &[frames, height, width] = obs_shape else {
        return Err(PpoError::Shape {
            op: "ActorCritic::new",
            why: format!("the Nature CNN needs [k, H, W] frames, got shape {obs_shape:?}"),
        });
    };
    let (Some(oh), Some(ow)) = (nature_cnn_side(height), nature_cnn_side(width)) else {
        return Err(PpoError::Shape {
            op: "ActorCritic::new",
            why: format!("frames {height}×{width} are too small for the Nature CNN (≥ 36×36)"),
        });
    };
    let layers = [(frames, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)];
    let mut convs = Vec::new();
    for (i, (ic, oc, k, s)) in layers.into_iter().enumerate() {
        let prefix = format!("encoder.conv{i}");
        convs.push(conv(ic, oc, k, s, vb.pp(&prefix))?);
        specs.push(InitSpec::layer(&prefix, vec![oc, ic, k, k], HIDDEN_GAIN));
    }
    let flat = 64 * oh * ow;
    let fc = candle_nn::linear(flat, hidden, vb.pp("encoder.fc"))?;
    specs.push(InitSpec::layer(
        "encoder.fc",
        vec![hidden, flat],
        HIDDEN_GAIN,
    ));
    let convs: [Conv; 3] = convs.try_into().map_err(|_| PpoError::Shape {
        op: "ActorCritic::new",
        why: "Nature CNN has three convs".into(),
    })?;
    let frames_conv =
        fastconv::Conv2d::new(convs[0].weight().clone(), convs[0].bias().cloned(), 4)?
            .with_relu()
            .with_input_scale(1.0 / 255.0);
    Ok((
        Encoder::NatureCnn {
            convs,
            frames_conv,
            fc,
        },
        hidden,
    ))
}

/// CleanRL's ppo_atari_lstm.py for an LSTM core with `weight_init = "orthogonal"`: both weights
/// orthogonal (gain 1), biases 0. The LSTM's init option is declared in brims and applied here,
/// where the seeded RNG and the orthogonal draw live.
fn lstm_orthogonal_specs(cfg: &NetworkConfig, features: usize) -> Vec<InitSpec> {
    let Some(CoreConfig::Lstm(lstm)) = &cfg.core else {
        return Vec::new();
    };
    if lstm.weight_init != LstmWeightInit::Orthogonal {
        return Vec::new();
    }
    let h = lstm.hidden_size;
    [("ih", features), ("hh", h)]
        .into_iter()
        .map(|(part, input)| InitSpec {
            weight: format!("core.weight_{part}"),
            bias: format!("core.bias_{part}"),
            shape: vec![4 * h, input],
            gain: 1.0,
        })
        .collect()
}

/// Draws each spec's orthogonal weight from `rng`, in order, and zeroes its bias.
fn draw_orthogonal(
    varmap: &mut VarMap,
    specs: Vec<InitSpec>,
    rng: &mut impl Rng,
    device: &Device,
) -> Result<()> {
    for spec in specs {
        let w = orthogonal(&spec.shape, spec.gain, rng, device)?;
        varmap.set_one(spec.weight, w)?;
        let b = Tensor::zeros(spec.shape[0], DType::F32, device)?;
        varmap.set_one(spec.bias, b)?;
    }
    Ok(())
}

impl ActorCritic {
    /// Builds the network for observations of `obs_shape` (one env, e.g. `[4]` or `[4, 84, 84]`)
    /// and `n_actions` discrete actions. Its parameters are created in `varmap` on `device`;
    /// encoder and heads get CleanRL's orthogonal init (gain √2 hidden, 0.01 policy, 1 value,
    /// zero biases) drawn from `rng`, and so does an LSTM core with
    /// `weight_init = "orthogonal"` (gain 1); BRIMs keeps its own init.
    pub fn new(
        cfg: &NetworkConfig,
        obs_shape: &[usize],
        n_actions: usize,
        varmap: &mut VarMap,
        device: &Device,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        check_action_count(n_actions)?;
        refuse_dropout(cfg)?;
        // Every variable (the core's too) is drawn from `rng`, so a seed fixes the whole network.
        // The draw order is part of the seed's meaning: the init seed first, then the variables
        // in creation order (encoder, core, policy, value), then the orthogonal draws in `specs`'
        // order.
        let init_seed: u64 = rng.gen();
        let backend = SeededInit {
            varmap,
            rng: std::sync::Mutex::new(rand_pcg::Pcg64::seed_from_u64(init_seed)),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
        let mut specs = Vec::new();
        let (encoder, features) = match &cfg.encoder {
            EncoderConfig::Mlp { hidden, activation } => {
                mlp_encoder(hidden, *activation, obs_shape, &vb, &mut specs)?
            }
            EncoderConfig::NatureCnn { hidden } => {
                nature_cnn_encoder(*hidden, obs_shape, &vb, &mut specs)?
            }
        };
        let core = match &cfg.core {
            Some(c) => Some(build_core(c, features, vb.pp("core"))?),
            None => None,
        };
        let head_in = core.as_ref().map_or(features, |c| c.output_size());
        let policy = candle_nn::linear(head_in, n_actions, vb.pp("policy"))?;
        specs.push(InitSpec::layer("policy", vec![n_actions, head_in], 0.01));
        let value = candle_nn::linear(head_in, 1, vb.pp("value"))?;
        specs.push(InitSpec::layer("value", vec![1, head_in], 1.0));
        // After the heads, so that a seed draws the same weights as before this option existed.
        specs.extend(lstm_orthogonal_specs(cfg, features));
        drop(vb); // releases the borrow of `varmap`
        draw_orthogonal(varmap, specs, rng, device)?;
        Ok(ActorCritic {
            encoder,
            core,
            policy,
            value,
            obs_shape: obs_shape.to_vec(),
            n_actions,
            device: device.clone(),
        })
    }

    /// Number of discrete actions `A`.
    pub fn n_actions(&self) -> usize {
        self.n_actions
    }

    /// The shape of one observation.
    pub fn obs_shape(&self) -> &[usize] {
        &self.obs_shape
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the network has a recurrent core.
    pub fn is_recurrent(&self) -> bool {
        self.core.is_some()
    }

    /// The initial (all-zero) core state for `batch` envs (no parts for the feed-forward net).
    pub fn zero_state(&self, batch: usize) -> Result<CoreState> {
        match &self.core {
            Some(core) => Ok(core.zero_state(batch)?),
            None => Ok(CoreState { parts: vec![] }),
        }
    }

    /// Observations `[B, …]` (u8 are scaled to [0, 1]; f32 are taken as they are) → features `[B, E]`.
    fn encode(&self, obs: &Tensor) -> candle_core::Result<Tensor> {
        self.encoder.forward(obs)
    }

    /// The encoder's features `[B, E]` for observations `[B, …]`, differentiable (diagnostics:
    /// what the core receives).
    pub fn features(&self, obs: &Tensor) -> Result<Tensor> {
        self.check_obs(obs, 1, "ActorCritic::features")?;
        Ok(self.encode(obs)?)
    }

    /// The recurrent core, if any (diagnostics: drive it on the encoder's features).
    pub fn core(&self) -> Option<&dyn Core> {
        self.core.as_deref()
    }

    /// Core outputs `[B, H]` → `(logits [B, A], values [B])`. The one head path for acting and learning.
    fn heads(&self, hidden: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let logits = self.policy.forward(hidden)?;
        let values = self.value.forward(hidden)?.squeeze(D::Minus1)?;
        Ok((logits, values))
    }

    fn check_obs(&self, obs: &Tensor, lead: usize, op: &'static str) -> Result<()> {
        let dims = obs.dims();
        if dims.len() != lead + self.obs_shape.len() || dims[lead..] != self.obs_shape[..] {
            return Err(PpoError::Shape {
                op,
                why: format!(
                    "observations have shape {dims:?}, expected {lead} leading dims then {:?}",
                    self.obs_shape
                ),
            });
        }
        Ok(())
    }

    /// One acting step for `B` envs: `obs` is `[B, …]` (u8 or f32), `state` the core state
    /// (parts `[B, width]`), `resets` `[B]` f32 (1.0 = this step starts an episode, so the state is
    /// zeroed first). With `traced`, a core that has module activity (BRIMs) reports it too (for
    /// telemetry); the other outputs do not depend on `traced`. Everything returned is detached.
    pub fn act(
        &self,
        obs: &Tensor,
        state: &CoreState,
        resets: &Tensor,
        traced: bool,
    ) -> Result<ActOutput> {
        self.check_obs(obs, 1, "ActorCritic::act")?;
        let features = self.encode(obs)?;
        let (hidden, next_state, trace) = match &self.core {
            Some(core) => core.act(&features, state, resets, traced)?,
            None => (features, state.clone(), None),
        };
        self.acted(&hidden, &next_state, trace)
    }

    /// The heads on the core's output, everything detached: acting never backpropagates, and
    /// detaching stops the state from dragging the graph of every past step along (unbounded
    /// memory, and a recursive drop that overflows the stack).
    fn acted(
        &self,
        hidden: &Tensor,
        next_state: &CoreState,
        trace: Option<StepTrace>,
    ) -> Result<ActOutput> {
        let (logits, values) = self.heads(hidden)?;
        Ok(ActOutput {
            logits: logits.detach(),
            values: values.detach(),
            next_state: next_state.detach(),
            trace,
        })
    }

    /// [`act`](Self::act) with the core stepped under a test-time `lesion` (`brims lesion`):
    /// the state is masked by `resets`, then [`Core::step_lesioned`] runs (the reference step,
    /// traced). The empty lesion gives `act`'s values up to the fused path's rounding, so a
    /// lesion study compares against this with the empty lesion. A feed-forward policy takes
    /// only the empty lesion.
    pub fn act_lesioned(
        &self,
        obs: &Tensor,
        state: &CoreState,
        resets: &Tensor,
        lesion: &brims::Lesion,
    ) -> Result<ActOutput> {
        self.check_obs(obs, 1, "ActorCritic::act_lesioned")?;
        let features = self.encode(obs)?;
        let (hidden, next_state, trace) = match &self.core {
            Some(core) => {
                let keep = resets.affine(-1.0, 1.0)?;
                core.step_lesioned(&features, &state.masked(&keep)?, lesion)?
            }
            None if lesion.is_empty() => (features, state.clone(), None),
            None => {
                return Err(PpoError::Shape {
                    op: "ActorCritic::act_lesioned",
                    why: "a feed-forward policy has no core to lesion".into(),
                })
            }
        };
        self.acted(&hidden, &next_state, trace)
    }

    /// The learner's replay of whole sequences: `obs` `[T, B, …]`, `resets` `[T, B]` f32 (exactly
    /// as acting saw them), `start` the core state before step 0 (parts `[B, width]`), `actions`
    /// `[T, B]` u32. Returns `(log_probs [T, B], entropy [T, B], values [T, B])`, differentiable.
    pub fn evaluate_sequence(
        &self,
        obs: &Tensor,
        resets: &Tensor,
        start: &CoreState,
        actions: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        self.check_obs(obs, 2, "ActorCritic::evaluate_sequence")?;
        let (t, b) = (obs.dim(0)?, obs.dim(1)?);
        let features = self.encode(&obs.flatten_to(1)?)?; // [T·B, E]
        let hidden = match &self.core {
            Some(core) => {
                let seq = features.reshape((t, b, features.dim(1)?))?;
                let (out, _) = core.seq(&seq, resets, start)?;
                out.flatten_to(1)?
            }
            None => features,
        };
        let (logits, values) = self.heads(&hidden)?;
        let (log_probs, entropy) = log_prob_entropy(&logits, &actions.flatten_all()?)?;
        Ok((
            log_probs.reshape((t, b))?,
            entropy.reshape((t, b))?,
            values.reshape((t, b))?,
        ))
    }
}

/// `logits` `[B, A]`, `actions` `[B]` u32 → `(log π(a) [B], entropy [B])`.
pub fn log_prob_entropy(
    logits: &Tensor,
    actions: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let taken = log_p.gather(&actions.unsqueeze(1)?, 1)?.squeeze(1)?;
    let entropy = (log_p.exp()? * &log_p)?.sum(D::Minus1)?.neg()?;
    Ok((taken, entropy))
}

/// Samples one action per row of `logits` `[B, A]` from the categorical distribution with
/// `rng`; returns the actions and their log-probabilities (`B` each), computed by
/// [`log_prob_entropy`]'s log-softmax so they match what the learner replays.
pub fn sample_actions(logits: &Tensor, rng: &mut impl Rng) -> Result<(Vec<u32>, Vec<f32>)> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?.to_vec2::<f32>()?;
    let mut actions = Vec::with_capacity(log_p.len());
    let mut log_probs = Vec::with_capacity(log_p.len());
    for row in log_p {
        let u: f32 = rng.gen();
        let mut acc = 0.0f32;
        // The last action absorbs rounding (the probabilities may sum to 1 − ε).
        let mut chosen = row.len() - 1;
        for (a, lp) in row.iter().enumerate() {
            acc += lp.exp();
            if u < acc {
                chosen = a;
                break;
            }
        }
        actions.push(chosen as u32);
        log_probs.push(row[chosen]);
    }
    Ok((actions, log_probs))
}

#[cfg(test)]
mod act_tests {
    use super::*;
    use brims::{BrimsConfig, BrimsLayerConfig};

    #[test]
    fn traced_acting_matches_acting_and_reports_every_layer() {
        let core = CoreConfig::Brims(BrimsConfig {
            layers: vec![
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
            ],
            ..serde_json::from_str(r#"{"layers": []}"#).unwrap()
        });
        let cfg = NetworkConfig {
            encoder: EncoderConfig::Mlp {
                hidden: vec![8],
                activation: Activation::Tanh,
            },
            core: Some(core),
        };
        let dev = Device::Cpu;
        let mut varmap = VarMap::new();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
        let net = ActorCritic::new(&cfg, &[3], 2, &mut varmap, &dev, &mut rng).unwrap();
        let obs = Tensor::new(&[[0.1f32, -0.4, 0.3], [0.9, 0.2, -0.5]], &dev).unwrap();
        let state = net.zero_state(2).unwrap();
        let resets = Tensor::new(&[1f32, 0.0], &dev).unwrap();
        let plain = net.act(&obs, &state, &resets, false).unwrap();
        assert!(plain.trace.is_none());
        let (logits, values, next) = (plain.logits, plain.values, plain.next_state);
        let traced = net.act(&obs, &state, &resets, true).unwrap();
        let (t_logits, t_values, t_next, trace) = (
            traced.logits,
            traced.values,
            traced.next_state,
            traced.trace,
        );
        let same = |a: &Tensor, b: &Tensor| {
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert!(same(&logits, &t_logits) && same(&values, &t_values));
        assert!(next
            .parts
            .iter()
            .zip(&t_next.parts)
            .all(|(a, b)| same(a, b)));
        let trace = trace.expect("BRIMs reports its module activity");
        assert_eq!(trace.layers.len(), 2);
        assert_eq!(trace.layers[0].active.iter().filter(|&&a| a).count(), 2 * 2);
        assert_eq!(trace.layers[1].active.iter().filter(|&&a| a).count(), 2);
    }
}

#[cfg(test)]
mod dropout_tests {
    use super::*;
    use brims::{BrimsConfig, BrimsLayerConfig};

    #[test]
    fn dropout_in_the_core_is_refused_by_name() {
        let mut core = BrimsConfig::with_layers(vec![BrimsLayerConfig {
            hidden_size: 8,
            modules: 2,
            active: 1,
        }]);
        for set in [
            |c: &mut BrimsConfig| c.read_dropout = 0.1,
            |c: &mut BrimsConfig| c.comm_dropout = 0.1,
        ] {
            let mut c = core.clone();
            set(&mut c);
            let cfg = NetworkConfig {
                encoder: EncoderConfig::Mlp {
                    hidden: vec![4],
                    activation: Activation::Tanh,
                },
                core: Some(CoreConfig::Brims(c)),
            };
            let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
            let err = ActorCritic::new(&cfg, &[3], 2, &mut VarMap::new(), &Device::Cpu, &mut rng)
                .err()
                .expect("dropout refused")
                .to_string();
            assert!(
                err.contains("dropout") && err.contains("must be 0"),
                "{err}"
            );
        }
        core.read_dropout = 0.0;
        let cfg = NetworkConfig {
            encoder: EncoderConfig::Mlp {
                hidden: vec![4],
                activation: Activation::Tanh,
            },
            core: Some(CoreConfig::Brims(core)),
        };
        let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
        assert!(
            ActorCritic::new(&cfg, &[3], 2, &mut VarMap::new(), &Device::Cpu, &mut rng).is_ok()
        );
    }
}

#[cfg(test)]
mod frame_input_tests {
    use super::*;

    #[test]
    fn u8_frames_and_their_f32_scaling_give_the_same_outputs() {
        let cfg = NetworkConfig::atari(None);
        let dev = Device::Cpu;
        let mut varmap = VarMap::new();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(3);
        let net = ActorCritic::new(&cfg, &[2, 84, 84], 4, &mut varmap, &dev, &mut rng).unwrap();
        let frames: Vec<u8> = (0..2 * 2 * 84 * 84).map(|_| rng.gen()).collect();
        let u8_obs = Tensor::from_vec(frames, (2, 2, 84, 84), &dev).unwrap();
        let f32_obs = (u8_obs.to_dtype(DType::F32).unwrap() / 255.0).unwrap();
        let state = net.zero_state(2).unwrap();
        let resets = Tensor::ones(2, DType::F32, &dev).unwrap();
        let u8_out = net.act(&u8_obs, &state, &resets, false).unwrap();
        let f32_out = net.act(&f32_obs, &state, &resets, false).unwrap();
        let (a, va) = (u8_out.logits, u8_out.values);
        let (b, vb) = (f32_out.logits, f32_out.values);
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let vdiff = (va - vb)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff < 1e-5 && vdiff < 1e-5,
            "logits differ by {diff}, values by {vdiff}"
        );
    }
}

#[cfg(test)]
mod lstm_init_tests {
    use super::*;
    use brims::LstmConfig;

    fn lstm_params(weight_init: LstmWeightInit) -> std::collections::HashMap<String, Tensor> {
        let cfg = NetworkConfig {
            encoder: EncoderConfig::Mlp {
                hidden: vec![24],
                activation: Activation::Tanh,
            },
            core: Some(CoreConfig::Lstm(LstmConfig {
                hidden_size: 5,
                weight_init,
                input_norm: false,
            })),
        };
        let mut varmap = VarMap::new();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
        ActorCritic::new(&cfg, &[3], 2, &mut varmap, &Device::Cpu, &mut rng).unwrap();
        let data = varmap.data().lock().unwrap();
        data.iter()
            .filter(|(name, _)| name.starts_with("core."))
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect()
    }

    /// `w wᵀ` (or `wᵀ w` when `w` is tall), as nested rows.
    fn gram(w: &Tensor) -> Vec<Vec<f32>> {
        let (rows, cols) = w.dims2().unwrap();
        let w = if rows > cols {
            w.t().unwrap()
        } else {
            w.clone()
        };
        w.matmul(&w.t().unwrap()).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn orthogonal_lstm_weights_and_zero_biases_as_cleanrl() {
        let params = lstm_params(LstmWeightInit::Orthogonal);
        // weight_ih [20, 24]: orthonormal rows; weight_hh [20, 5]: orthonormal columns.
        for name in ["core.weight_ih", "core.weight_hh"] {
            for (i, row) in gram(&params[name]).iter().enumerate() {
                for (j, x) in row.iter().enumerate() {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((x - want).abs() < 1e-5, "{name}: gram[{i}][{j}] = {x}");
                }
            }
        }
        for name in ["core.bias_ih", "core.bias_hh"] {
            let b: Vec<f32> = params[name].to_vec1().unwrap();
            assert!(b.iter().all(|&x| x == 0.0), "{name}: {b:?}");
        }
    }

    #[test]
    fn pytorch_lstm_init_stays_uniform_with_nonzero_biases() {
        let params = lstm_params(LstmWeightInit::Pytorch);
        let bound = 1.0 / 5f32.sqrt();
        let b: Vec<f32> = params["core.bias_ih"].to_vec1().unwrap();
        assert!(b.iter().all(|x| x.abs() <= bound) && b.iter().any(|&x| x != 0.0));
        let w: Vec<f32> = params["core.weight_hh"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(w.iter().all(|x| x.abs() <= bound));
    }
}
