//! Recurrent policy cores: an LSTM baseline and BRIMs (RIMs = BRIMs with one layer).
//!
//! Both implement [`Core`] (`[B, E]` in, `[B, H]` out, a flat [`CoreState`], resets by
//! masking, a fused `seq` over `[T, B, E]`, a forward-only `act` for acting) and
//! `candle_nn::rnn::RNN`. Build either from a [`CoreConfig`] (TOML: `kind = "lstm" | "brims"`):
//!
//! ```
//! use brims::{build_core, AttentionInit, BrimsConfig, Core, CoreConfig};
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//!
//! let cfg = CoreConfig::Brims(BrimsConfig::atari());
//! let vm = VarMap::new();
//! let core = build_core(&cfg, 64, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
//! let state = core.zero_state(2)?;
//! let x = Tensor::zeros((2, 64), DType::F32, &Device::Cpu)?;
//! let reset = Tensor::new(&[0f32, 1.0], &Device::Cpu)?; // env 1 starts a new episode
//! let (y, next) = core.step_with_reset(&x, &state, &reset)?;
//! assert_eq!(y.dims(), &[2, 384]); // both layers' h: 256 + 128
//! let (_, _, trace) = core.act(&x, &next, &reset, true)?; // which modules were active, per layer
//! assert_eq!(trace.map(|t| t.layers.len()), Some(2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! On the CPU, BRIMs runs as plain loops over all layers and steps (`brims_seq`: one autograd
//! node per sequence, envs split over threads); the candle composition in `brims` is the
//! readable reference, used for `step` and wherever the loops do not apply (GPU, dropout).
//! `check_fixture` (behind the `fixture` feature, which the tests and the `fixture_check`
//! example enable) compares both with the reference code's recorded tensors.
#![deny(missing_docs)]

use candle_nn::VarBuilder;

mod brims;
mod brims_seq;
mod config;
mod core;
mod error;
#[cfg(feature = "fixture")]
mod fixture;
mod kernels;
mod lesion;
mod lstm;
mod lstm_seq;
mod norm;
mod shape;
mod sizes;
mod topk;

pub use crate::brims::Brims;
pub use crate::config::{
    AttentionInit, BrimsConfig, BrimsLayerConfig, CommAttentionConfig, CoreConfig, CoreOutput,
    InputAttentionConfig, LstmConfig, LstmInit, LstmWeightInit, TieBreak, TopDown,
};
pub use crate::core::{Core, CoreState, LayerTrace, StepTrace};
pub use crate::error::BrimsError;
#[cfg(feature = "fixture")]
pub use crate::fixture::{check_fixture, CaseReport, FixtureReport};
pub use crate::lesion::{LayerLesion, Lesion};
pub use crate::lstm::Lstm;

/// Builds the configured core with input width `input_size`, taking (or creating) its
/// parameters from `vb`.
pub fn build_core(
    cfg: &CoreConfig,
    input_size: usize,
    vb: VarBuilder,
) -> Result<Box<dyn Core>, BrimsError> {
    Ok(match cfg {
        CoreConfig::Lstm(c) => Box::new(Lstm::new(c, input_size, vb)?),
        CoreConfig::Brims(c) => Box::new(Brims::new(c, input_size, vb)?),
    })
}
