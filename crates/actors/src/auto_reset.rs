//! Per-env auto-reset with the same-step convention.
//!
//! When a step ends an episode (`terminated || truncated`), the env is reset at once and the
//! step returns the first observation of the next episode; the ended episode's last observation
//! is kept in `final_obs` (for bootstrapping a truncation). Episode statistics come from the
//! env's `info.episode` on the ending step.
// TODO(envs-api): switch to `envs_api::AutoReset` when it lands on main (same convention).

use envs_api::{Env, EnvError, EpisodeStats};

/// One auto-reset step.
pub(crate) struct AutoStep<T> {
    /// Observation to act on next (the next episode's first one after an end).
    pub obs: Vec<T>,
    pub reward: f32,
    pub terminated: bool,
    pub truncated: bool,
    /// The ended episode's last observation, when this step ended one.
    pub final_obs: Option<Vec<T>>,
    /// The ended (real) episode's statistics, when the env reported them.
    pub episode: Option<EpisodeStats>,
}

/// Wraps an env so that `step` never needs a separate `reset`.
pub(crate) struct AutoReset<E: Env> {
    env: E,
}

impl<E: Env> AutoReset<E> {
    pub fn new(env: E) -> Self {
        Self { env }
    }

    pub fn inner(&self) -> &E {
        &self.env
    }

    pub fn reset(&mut self, seed: Option<u64>) -> Result<Vec<E::Elem>, EnvError> {
        self.env.reset(seed).map(|(obs, _info)| obs)
    }

    pub fn step(&mut self, action: usize) -> Result<AutoStep<E::Elem>, EnvError> {
        let step = self.env.step(action)?;
        let ended = step.terminated || step.truncated;
        let (obs, final_obs) = if ended {
            let (first, _info) = self.env.reset(None)?;
            (first, Some(step.obs))
        } else {
            (step.obs, None)
        };
        Ok(AutoStep {
            obs,
            reward: step.reward,
            terminated: step.terminated,
            truncated: step.truncated,
            final_obs,
            episode: step.info.episode,
        })
    }
}
