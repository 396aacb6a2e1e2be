//! Does a checkpoint's network fit the env it is to act in (observation shape, action count)?

use crate::run::dir as run_dir;
use anyhow::bail;
use ppo::Learner;
use std::path::Path;

/// Refuses a checkpoint whose network was built for other observations or another action count
/// than the run's env has (a checkpoint of another game).
pub(crate) fn check_spaces(
    learner: &Learner,
    checkpoint: &Path,
    env: &crate::config::run::EnvConfig,
    obs_shape: &[usize],
    n_actions: usize,
) -> anyhow::Result<()> {
    let net = learner.net();
    let what = match env {
        crate::config::run::EnvConfig::Atari { game, .. } => game.clone(),
        other => format!("{other:?}").to_lowercase(),
    };
    if net.n_actions() != n_actions {
        bail!(
            "{}: the checkpoint's policy has {} actions but {what} has {n_actions}; \
             it was trained on another game (check the run's {})",
            checkpoint.display(),
            net.n_actions(),
            run_dir::CONFIG_FILE
        );
    }
    if net.obs_shape() != obs_shape {
        bail!(
            "{}: the checkpoint's policy reads observations of shape {:?} but {what} gives {:?} \
             (check the run's {})",
            checkpoint.display(),
            net.obs_shape(),
            obs_shape,
            run_dir::CONFIG_FILE
        );
    }
    Ok(())
}
