//! Recurrent policy cores: an LSTM baseline and BRIMs (RIMs = BRIMs with one layer).
#![deny(missing_docs)]

mod brims;
mod config;
mod core;
mod error;
mod fixture;
mod lstm;
mod topk;

pub use crate::brims::Brims;
pub use crate::config::{
    build_core, BrimsConfig, BrimsLayerConfig, CommAttentionConfig, CoreConfig,
    InputAttentionConfig, LstmConfig, TieBreak, TopDown,
};
pub use crate::core::{Core, CoreState, LayerTrace, StepTrace};
pub use crate::error::BrimsError;
pub use crate::fixture::{check_fixture, CaseReport, FixtureReport};
pub use crate::lstm::Lstm;
