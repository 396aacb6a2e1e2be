//! The BRIMs core (work in progress).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::config::BrimsConfig;
use crate::core::{Core, CoreState};
use crate::error::BrimsError;

/// BRIMs (not yet implemented in this commit).
#[derive(Clone, Debug)]
pub struct Brims {
    input_size: usize,
    output_size: usize,
}

impl Brims {
    /// Builds BRIMs from `vb`.
    pub fn new(cfg: &BrimsConfig, input_size: usize, _vb: VarBuilder) -> Result<Self, BrimsError> {
        cfg.validate(input_size)?;
        Err(BrimsError::FixtureMismatch(
            "BRIMs is not implemented yet".into(),
        ))
    }
}

impl Core for Brims {
    fn input_size(&self) -> usize {
        self.input_size
    }
    fn output_size(&self) -> usize {
        self.output_size
    }
    fn zero_state(&self, _batch: usize) -> candle_core::Result<CoreState> {
        candle_core::bail!("BRIMs is not implemented yet")
    }
    fn step(
        &self,
        _input: &Tensor,
        _state: &CoreState,
    ) -> candle_core::Result<(Tensor, CoreState)> {
        candle_core::bail!("BRIMs is not implemented yet")
    }
}
