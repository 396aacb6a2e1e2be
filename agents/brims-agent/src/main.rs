//! The `brims` command: train, evaluate and compare LSTM and BRIMs agents on Atari.
//!
//! Thin: the commands, their arguments and the one-line errors live in the library
//! ([`brims_agent::cli`]).

fn main() {
    brims_agent::cli::main();
}
