//! How many actor threads a run uses: the config's count, capped by an environment variable
//! (sweeps running several runs at once share the cores).

/// The environment variable that caps a run's actor threads without changing its config (a
/// sweep gives each of its parallel runs a share of the cores this way).
pub(crate) const ACTOR_THREADS_ENV: &str = "BRIMS_ACTOR_THREADS";

/// `threads`, capped by [`ACTOR_THREADS_ENV`] when it is set to a positive number.
pub(crate) fn actor_threads(threads: usize) -> usize {
    std::env::var(ACTOR_THREADS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&cap| cap > 0)
        .map_or(threads, |cap| threads.min(cap))
}
