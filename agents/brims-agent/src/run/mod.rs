//! A run's directory and what keeps it whole: naming, the lock, returns.csv truncation on
//! resume, atomic writes, the metadata file.

pub(crate) mod dir;
pub(crate) mod stop;
pub(crate) mod summary;
