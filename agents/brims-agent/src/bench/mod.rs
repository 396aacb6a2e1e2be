//! `brims bench …`: each prints human-readable lines, then one JSON object as its last line.

pub(crate) mod cnn;
pub(crate) mod core;
pub(crate) mod env;
pub(crate) mod train;
