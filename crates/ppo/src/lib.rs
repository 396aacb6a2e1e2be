//! The PPO learner: actor-critic network, rollout storage, GAE, recurrent minibatches, loss,
//! checkpoints. CleanRL's `ppo_atari_lstm.py` is the reference; names follow it.
//!
//! A driver builds a [`Learner`] from a validated [`PpoConfig`] and a [`NetworkConfig`], acts with
//! [`ActorCritic::act`] + [`sample_actions`] on `learner.net()`, fills a [`Rollout`], and calls
//! [`Learner::update`]; [`Learner::save_checkpoint`] / [`Learner::resume`] persist the run.
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

pub use brims::{CoreConfig, CoreState};
pub use checkpoint::{
    latest_checkpoint, list_checkpoints, read_header, CheckpointHeader, RunClock, FORMAT_VERSION,
};
pub use config::{PpoConfig, PpoPlan};
pub use error::{PpoError, Result};
pub use init::orthogonal;
pub use learner::{Learner, UpdateMetrics};
pub use loss::{explained_variance, normalize_advantages, ppo_loss, LossInputs, LossParts};
pub use network::{
    log_prob_entropy, sample_actions, Activation, ActorCritic, EncoderConfig, NetworkConfig,
};
pub use rollout::{gae, GaeInputs, ObsElement, Observations, PolicyStep, Rollout};
