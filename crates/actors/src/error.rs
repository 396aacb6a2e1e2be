//! Errors of the actor pool.

use envs_api::EnvError;

/// Why an env failed inside a shard thread: an error it returned or a panic it raised.
#[derive(Debug, thiserror::Error)]
pub enum EnvFailure {
    /// The env (or its factory) returned an error.
    #[error(transparent)]
    Error(#[from] EnvError),
    /// The env (or its factory) panicked; the panic message.
    #[error("panicked: {0}")]
    Panic(String),
}

/// Everything the actor pool can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActorError {
    /// A bad `PoolConfig` value.
    #[error("invalid pool config {what}: {why}")]
    InvalidConfig {
        /// The field.
        what: &'static str,
        /// What was wrong and what is accepted.
        why: String,
    },
    /// Creating env `env` (in its shard thread) failed.
    #[error("creating env {env} failed: {cause}")]
    Create {
        /// Global env index.
        env: usize,
        /// The factory's error or panic.
        cause: EnvFailure,
    },
    /// Env `env` failed in `reset` or `step` (error or panic). The pool is unusable afterwards.
    #[error("env {env} failed: {cause}")]
    Env {
        /// Global env index.
        env: usize,
        /// The env's error or panic.
        cause: EnvFailure,
    },
    /// Envs disagree on their spaces, or a space is not usable (actions must be `Discrete`).
    #[error("env {env} has {what}, expected {expected}")]
    Space {
        /// Global env index.
        env: usize,
        /// What the env has.
        what: String,
        /// What was expected.
        expected: String,
    },
    /// An action outside `0..num_actions`.
    #[error("action {action} for env {env} is out of range: the action space is Discrete({n})")]
    InvalidAction {
        /// Global env index.
        env: usize,
        /// The action given.
        action: usize,
        /// Number of actions.
        n: usize,
    },
    /// A call out of order (e.g. `recv` on a group with no actions in flight).
    #[error("{0}")]
    Protocol(String),
    /// A shard thread ended without reporting an env failure (a bug in this crate).
    #[error("shard thread {thread} ended unexpectedly")]
    ThreadDied {
        /// Shard thread index.
        thread: usize,
    },
    /// The stop flag was set (Ctrl-C or `stop()`); the shards are shutting down.
    #[error("the actor pool was stopped")]
    Stopped,
    /// An earlier call failed; the pool cannot be used any more (drop it).
    #[error("the actor pool failed earlier: {0}")]
    Failed(String),
}
