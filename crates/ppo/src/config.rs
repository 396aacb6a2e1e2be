//! PPO hyperparameters (CleanRL's `ppo_atari_lstm.py` defaults) and the sizes derived from them.

use serde::{Deserialize, Serialize};

use crate::error::{PpoError, Result};

/// PPO hyperparameters, named as in the PPO paper / CleanRL. Defaults are CleanRL's Atari LSTM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Seed of the learner (network init, minibatch shuffling, action sampling in tests).
    pub seed: u64,
    /// Total environment steps of the run (sets the number of updates for LR annealing).
    pub total_timesteps: u64,
    /// Adam learning rate (at the start, when annealed).
    pub learning_rate: f64,
    /// Anneal the learning rate linearly to 0 over the run.
    pub anneal_lr: bool,
    /// Number of parallel environments `N`.
    pub num_envs: usize,
    /// Steps per environment per rollout `T`.
    pub num_steps: usize,
    /// Discount factor γ.
    pub gamma: f64,
    /// GAE λ.
    pub gae_lambda: f64,
    /// Minibatches per epoch; must divide `num_envs` (minibatches are whole env sequences).
    pub num_minibatches: usize,
    /// Epochs `K` over each rollout.
    pub update_epochs: usize,
    /// Normalise advantages per minibatch.
    pub norm_adv: bool,
    /// Surrogate clipping coefficient ε.
    pub clip_coef: f64,
    /// Clip the value loss around the old values (with ε), as in the PPO paper's code.
    pub clip_vloss: bool,
    /// Entropy bonus coefficient c₂.
    pub ent_coef: f64,
    /// Value loss coefficient c₁.
    pub vf_coef: f64,
    /// Global gradient-norm clipping threshold.
    pub max_grad_norm: f64,
    /// Stop the epochs of an update early when the approximate KL exceeds this.
    pub target_kl: Option<f64>,
    /// Adam ε.
    pub adam_eps: f64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            seed: 1,
            total_timesteps: 10_000_000,
            learning_rate: 2.5e-4,
            anneal_lr: true,
            num_envs: 8,
            num_steps: 128,
            gamma: 0.99,
            gae_lambda: 0.95,
            num_minibatches: 4,
            update_epochs: 4,
            norm_adv: true,
            clip_coef: 0.1,
            clip_vloss: true,
            ent_coef: 0.01,
            vf_coef: 0.5,
            max_grad_norm: 0.5,
            target_kl: None,
            adam_eps: 1e-5,
        }
    }
}

/// A validated [`PpoConfig`] with the sizes derived from it (computed once).
#[derive(Clone, Debug, PartialEq)]
pub struct PpoPlan {
    /// The hyperparameters.
    pub config: PpoConfig,
    /// `num_envs * num_steps`.
    pub batch_size: usize,
    /// `batch_size / num_minibatches`.
    pub minibatch_size: usize,
    /// `num_envs / num_minibatches`: whole env sequences per minibatch.
    pub envs_per_minibatch: usize,
    /// [`num_iterations`]`(total_timesteps, batch_size)`: the updates of the run, and the
    /// annealing horizon.
    pub num_iterations: u64,
}

/// The updates a budget of `total_timesteps` agent steps buys at `batch_size` steps an update:
/// CleanRL's `num_iterations = total_timesteps // batch_size`, rounded down, so the schedule and
/// the training loop agree and the last update never runs at a learning rate of 0. The one rule
/// every user of a run's budget goes through.
pub fn num_iterations(total_timesteps: u64, batch_size: usize) -> u64 {
    total_timesteps / (batch_size.max(1) as u64)
}

fn bad(field: &'static str, value: impl std::fmt::Display, why: &str) -> PpoError {
    PpoError::Config {
        field,
        value: value.to_string(),
        why: why.to_string(),
    }
}

impl PpoConfig {
    /// Checks every value and derives the sizes. Errors name the offending field.
    pub fn validate(&self) -> Result<PpoPlan> {
        let c = self;
        if c.num_envs == 0 {
            return Err(bad("num_envs", c.num_envs, "must be ≥ 1"));
        }
        if c.num_steps == 0 {
            return Err(bad("num_steps", c.num_steps, "must be ≥ 1"));
        }
        if c.num_minibatches == 0 || !c.num_envs.is_multiple_of(c.num_minibatches) {
            return Err(bad(
                "num_minibatches",
                c.num_minibatches,
                &format!(
                    "must be ≥ 1 and divide num_envs = {} (minibatches are whole env sequences)",
                    c.num_envs
                ),
            ));
        }
        if c.update_epochs == 0 {
            return Err(bad("update_epochs", c.update_epochs, "must be ≥ 1"));
        }
        let positive = [
            ("learning_rate", c.learning_rate),
            ("clip_coef", c.clip_coef),
            ("max_grad_norm", c.max_grad_norm),
            ("adam_eps", c.adam_eps),
        ];
        for (field, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(field, v, "must be a finite number > 0"));
            }
        }
        for (field, v) in [("gamma", c.gamma), ("gae_lambda", c.gae_lambda)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(field, v, "must be in [0, 1]"));
            }
        }
        for (field, v) in [("ent_coef", c.ent_coef), ("vf_coef", c.vf_coef)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(field, v, "must be a finite number ≥ 0"));
            }
        }
        if let Some(kl) = c.target_kl {
            if !(kl.is_finite() && kl > 0.0) {
                return Err(bad(
                    "target_kl",
                    kl,
                    "must be a finite number > 0 (or absent)",
                ));
            }
        }
        let batch_size = c.num_envs * c.num_steps;
        let iterations = num_iterations(c.total_timesteps, batch_size);
        if iterations == 0 {
            return Err(bad(
                "total_timesteps",
                c.total_timesteps,
                &format!("must be at least one update: num_envs × num_steps = {batch_size}"),
            ));
        }
        Ok(PpoPlan {
            config: c.clone(),
            batch_size,
            minibatch_size: batch_size / c.num_minibatches,
            envs_per_minibatch: c.num_envs / c.num_minibatches,
            num_iterations: iterations,
        })
    }
}

impl PpoPlan {
    /// The learning rate of update `update` (1-based), CleanRL's linear annealing:
    /// `lr · (1 − (update − 1) / num_iterations)`, never below 0.
    pub fn learning_rate_at(&self, update: u64) -> f64 {
        let c = &self.config;
        if !c.anneal_lr {
            return c.learning_rate;
        }
        let frac = 1.0 - (update.saturating_sub(1)) as f64 / self.num_iterations as f64;
        c.learning_rate * frac.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: PpoError) -> &'static str {
        match e {
            PpoError::Config { field, .. } => field,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn defaults_derive_cleanrl_sizes() {
        let plan = PpoConfig::default().validate().unwrap();
        assert_eq!(plan.batch_size, 1024);
        assert_eq!(plan.minibatch_size, 256);
        assert_eq!(plan.envs_per_minibatch, 2);
        assert_eq!(plan.num_iterations, 10_000_000 / 1024);
    }

    #[test]
    fn bad_values_name_their_field() {
        let base = PpoConfig::default();
        let cases: Vec<(PpoConfig, &str)> = vec![
            (
                PpoConfig {
                    clip_coef: 0.0,
                    ..base.clone()
                },
                "clip_coef",
            ),
            (
                PpoConfig {
                    clip_coef: -0.2,
                    ..base.clone()
                },
                "clip_coef",
            ),
            (
                PpoConfig {
                    num_minibatches: 3,
                    ..base.clone()
                },
                "num_minibatches",
            ),
            (
                PpoConfig {
                    num_minibatches: 0,
                    ..base.clone()
                },
                "num_minibatches",
            ),
            (
                PpoConfig {
                    num_steps: 0,
                    ..base.clone()
                },
                "num_steps",
            ),
            (
                PpoConfig {
                    gamma: 1.5,
                    ..base.clone()
                },
                "gamma",
            ),
            (
                PpoConfig {
                    learning_rate: f64::NAN,
                    ..base.clone()
                },
                "learning_rate",
            ),
            (
                PpoConfig {
                    target_kl: Some(0.0),
                    ..base.clone()
                },
                "target_kl",
            ),
        ];
        for (cfg, field) in cases {
            assert_eq!(field_of(cfg.validate().unwrap_err()), field);
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<PpoConfig>(r#"{"clip": 0.2}"#).unwrap_err();
        assert!(err.to_string().contains("clip"), "{err}");
        let cfg: PpoConfig = serde_json::from_str(r#"{"clip_coef": 0.2}"#).unwrap();
        assert_eq!(cfg.clip_coef, 0.2);
        assert_eq!(cfg.num_envs, 8);
    }

    /// A budget that is not a whole number of updates is rounded down (CleanRL's rule), so
    /// the last update's learning rate is not 0; a budget under one update is refused.
    #[test]
    fn budgets_round_down_to_whole_updates() {
        let plan = PpoConfig {
            total_timesteps: 4 * 1024 + 1000,
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(plan.num_iterations, 4);
        assert!(plan.learning_rate_at(plan.num_iterations) > 0.0);
        let short = PpoConfig {
            total_timesteps: 1023,
            ..Default::default()
        };
        assert_eq!(field_of(short.validate().unwrap_err()), "total_timesteps");
    }

    #[test]
    fn learning_rate_anneals_linearly_to_zero() {
        let plan = PpoConfig {
            total_timesteps: 4 * 1024,
            ..Default::default()
        }
        .validate()
        .unwrap();
        let lrs: Vec<f64> = (1..=5).map(|u| plan.learning_rate_at(u)).collect();
        let expect = [2.5e-4, 1.875e-4, 1.25e-4, 0.625e-4, 0.0];
        for (a, b) in lrs.iter().zip(expect) {
            assert!((a - b).abs() < 1e-12, "{lrs:?}");
        }
    }
}
