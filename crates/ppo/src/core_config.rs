//! TEMPORARY stand-in for `brims::CoreConfig` / `brims::build_core` until the brims crate lands
//! them: an LSTM core on candle-nn's LSTM cell. Replaced by a re-export of brims' versions.

use brims::{Core, CoreState};
use candle_core::{Result, Tensor};
use candle_nn::rnn::{LSTMState, RNN};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// Which recurrent core, and its sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CoreConfig {
    /// A single-layer LSTM.
    Lstm {
        /// Hidden (and output) width.
        hidden_size: usize,
    },
}

struct CandleLstm {
    cell: candle_nn::LSTM,
    input: usize,
    hidden: usize,
}

impl Core for CandleLstm {
    fn input_size(&self) -> usize {
        self.input
    }
    fn output_size(&self) -> usize {
        self.hidden
    }
    fn zero_state(&self, batch: usize) -> Result<CoreState> {
        let s = self.cell.zero_state(batch)?;
        Ok(CoreState {
            parts: vec![s.h, s.c],
        })
    }
    fn step(&self, input: &Tensor, state: &CoreState) -> Result<(Tensor, CoreState)> {
        let s = LSTMState::new(state.parts[0].clone(), state.parts[1].clone());
        let next = self.cell.step(input, &s)?;
        Ok((
            next.h.clone(),
            CoreState {
                parts: vec![next.h, next.c],
            },
        ))
    }
}

/// Builds the configured core reading `input_size` features, its weights under `vb`.
pub fn build_core(cfg: &CoreConfig, input_size: usize, vb: VarBuilder) -> Result<Box<dyn Core>> {
    match cfg {
        CoreConfig::Lstm { hidden_size } => {
            let cell = candle_nn::lstm(input_size, *hidden_size, Default::default(), vb)?;
            Ok(Box::new(CandleLstm {
                cell,
                input: input_size,
                hidden: *hidden_size,
            }))
        }
    }
}
