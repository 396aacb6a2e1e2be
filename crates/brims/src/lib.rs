//! Recurrent policy cores: an LSTM baseline and BRIMs (RIMs = BRIMs with one layer).
#![deny(missing_docs)]

mod core;

pub use crate::core::{Core, CoreState};
