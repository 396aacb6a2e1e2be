//! The PPO learner: actor-critic network, rollout storage, GAE, recurrent minibatches, loss,
//! checkpoints. CleanRL's `ppo_atari_lstm.py` is the reference; names follow it.
//!
//! A driver builds a [`Learner`] from a validated [`PpoConfig`] and a [`NetworkConfig`], fills a
//! [`Rollout`] with a [`Sampler`] over its envs (anything that implements [`EnvGroups`]), and
//! calls [`Learner::update`]; [`Learner::save_checkpoint`] / [`Learner::resume`] persist the run.
//!
//! ```ignore
//! let mut sampler = Sampler::new(envs);
//! let mut rollout = Rollout::new::<u8>(num_steps, num_envs, &obs_shape);
//! loop {
//!     let (net, rng) = learner.acting();
//!     let Some(collected) = sampler.collect(net, rng, &mut rollout, &stop, &mut ())? else {
//!         break; // stopped
//!     };
//!     let metrics = learner.update(&rollout)?;
//! }
//! ```
#![deny(missing_docs)]

mod adam;
mod checkpoint;
mod config;
mod error;
mod init;
mod learner;
mod loss;
mod network;
mod rollout;
mod sampler;

pub use brims::{CoreConfig, CoreState};
pub use checkpoint::{
    latest_checkpoint, list_checkpoints, read_header, remove_temp_files, CheckpointHeader,
    RunClock, FORMAT_VERSION,
};
pub use config::{num_iterations, PpoConfig, PpoPlan};
pub use error::{PpoError, Result};
pub use init::orthogonal;
pub use learner::{Learner, UpdateMetrics};
pub use loss::{explained_variance, normalize_advantages, ppo_loss, LossInputs, LossParts};
pub use network::{
    log_prob_entropy, sample_actions, ActOutput, Activation, ActorCritic, EncoderConfig,
    ForwardFlops, NetworkConfig,
};
pub use rollout::{gae, GaeInputs, ObsElement, Observations, PolicyStep, Rollout};
pub use sampler::{
    act_and_sample, ActEvent, Acted, Collected, EnvGroups, EpisodeEnd, GroupOutcome, Sampler,
    SamplerEvents,
};
