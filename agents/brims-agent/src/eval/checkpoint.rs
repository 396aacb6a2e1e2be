//! Finds and loads a checkpoint (a file, a checkpoints/ folder or a run directory) with its
//! config, checked against the run's config and env; shared by eval, analyze, lesion, probe and
//! train's resume.

use crate::config::run::{EnvConfig, RunConfig};
use crate::envs::EnvFactory;
use crate::run::dir as run_dir;
use anyhow::{bail, Context};
use candle_core::Device;
use ppo::Learner;
use std::path::{Path, PathBuf};

/// A trained policy with the run config it was trained with.
pub(crate) struct TrainedPolicy {
    pub cfg: RunConfig,
    pub learner: Learner,
    pub checkpoint: PathBuf,
}

/// Which checkpoint a path names.
pub(crate) enum CheckpointChoice {
    /// This header (a header or tensors file was given): no other is tried.
    File(PathBuf),
    /// The newest of this checkpoint directory that loads.
    NewestIn(PathBuf),
}

/// Finds the checkpoint a path names (header, tensors file, or run directory).
pub(crate) fn choose_checkpoint(path: &Path) -> anyhow::Result<CheckpointChoice> {
    if path.is_dir() {
        let dir = if path.join(run_dir::CHECKPOINT_DIR).is_dir() {
            path.join(run_dir::CHECKPOINT_DIR)
        } else {
            path.to_path_buf()
        };
        return Ok(CheckpointChoice::NewestIn(dir));
    }
    if !path.exists() {
        bail!("checkpoint {} does not exist", path.display());
    }
    let header = if path.extension().is_some_and(|e| e == "safetensors") {
        path.with_extension("json")
    } else {
        path.to_path_buf()
    };
    if !header.exists() {
        bail!(
            "checkpoint {} has no header {} beside it (a checkpoint is both files, \
             ckpt-N.json and ckpt-N.safetensors: copy them together)",
            path.display(),
            header.display()
        );
    }
    Ok(CheckpointChoice::File(header))
}

/// The newest checkpoint in `dir` that loads, as its header's path and the learner. A newer
/// one that does not load (truncated, unreadable, non-finite weights) is passed over with
/// one line on stderr naming it and why; when none loads, the newest one's error.
pub(crate) fn load_newest(
    dir: &Path,
    device: &Device,
) -> anyhow::Result<Option<(PathBuf, Learner)>> {
    let mut skipped: Vec<(PathBuf, anyhow::Error)> = Vec::new();
    for (_, header) in ppo::list_checkpoints(dir)?.into_iter().rev() {
        match Learner::resume(&header, device) {
            Ok(learner) => {
                if !skipped.is_empty() {
                    let why: Vec<String> = skipped
                        .iter()
                        .map(|(p, e)| format!("{} ({e})", file_name(p)))
                        .collect();
                    eprintln!(
                        "using {}, the newest checkpoint that loads: {} cannot be loaded",
                        header.display(),
                        why.join("; ")
                    );
                }
                return Ok(Some((header, learner)));
            }
            Err(e) => skipped.push((header, e.into())),
        }
    }
    match skipped.into_iter().next() {
        Some((header, e)) => Err(e.context(format!("cannot load checkpoint {}", header.display()))),
        None => Ok(None),
    }
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The run directory a checkpoint header sits in (`<run dir>/checkpoints/ckpt-N.json`), if it
/// is in one: a checkpoint copied elsewhere has none.
pub(crate) fn run_dir_of(header: &Path) -> Option<&Path> {
    let dir = header.parent()?;
    let run = dir.parent()?;
    (dir.ends_with(run_dir::CHECKPOINT_DIR) && run.join(run_dir::CONFIG_FILE).is_file())
        .then_some(run)
}

/// The same environment: the game (whatever its spelling) for Atari, the task otherwise.
pub(crate) fn same_env(a: &EnvConfig, b: &EnvConfig) -> bool {
    match (a, b) {
        (EnvConfig::Atari { game: x, .. }, EnvConfig::Atari { game: y, .. }) => {
            envs_atari::game_key(x) == envs_atari::game_key(y)
        }
        (EnvConfig::Cartpole, EnvConfig::Cartpole) => true,
        (EnvConfig::Memory { delay: x }, EnvConfig::Memory { delay: y }) => x == y,
        _ => false,
    }
}

/// The environment in words, for messages.
pub(crate) fn env_name(env: &EnvConfig) -> String {
    match env {
        EnvConfig::Atari { game, .. } => game.clone(),
        EnvConfig::Cartpole => "cartpole".into(),
        EnvConfig::Memory { delay } => format!("the memory task (delay {delay})"),
    }
}

/// The config a checkpoint's header records (None in checkpoints written without one).
pub(crate) fn embedded_config(header: &Path) -> anyhow::Result<Option<RunConfig>> {
    let Some(text) = ppo::read_header(header)?.run_config else {
        return Ok(None);
    };
    let doc: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{}: the embedded run config", header.display()))?;
    RunConfig::from_table(doc)
        .map(Some)
        .with_context(|| format!("{}: the embedded run config", header.display()))
}

/// Refuses a checkpoint trained on another environment than `env` (of `what`, e.g. a run's
/// config.toml), when its header says what it was trained on; the action count and the
/// observation shape alone do not tell Breakout from Atlantis.
pub(crate) fn check_same_env(
    header: &Path,
    embedded: Option<&RunConfig>,
    env: &EnvConfig,
    what: &Path,
) -> anyhow::Result<()> {
    if let Some(trained) = embedded {
        if !same_env(&trained.env, env) {
            bail!(
                "{}: the checkpoint was trained on {} but {} says {}; it belongs to another run",
                header.display(),
                env_name(&trained.env),
                what.display(),
                env_name(env)
            );
        }
    }
    Ok(())
}

/// Loads a checkpoint and the config it was trained with: the one its header records, or
/// (checkpoints written without one) its run's `config.toml`. A checkpoint inside a run
/// directory must match that run's environment; a run directory gives its newest checkpoint
/// that loads.
pub(crate) fn load_policy(path: &Path) -> anyhow::Result<TrainedPolicy> {
    let (header, learner) = match choose_checkpoint(path)? {
        CheckpointChoice::File(header) => {
            let learner = Learner::resume(&header, &Device::Cpu)
                .with_context(|| format!("cannot load checkpoint {}", header.display()))?;
            (header, learner)
        }
        CheckpointChoice::NewestIn(dir) => load_newest(&dir, &Device::Cpu)?
            .with_context(|| format!("no checkpoint in {}", dir.display()))?,
    };
    let embedded = embedded_config(&header)?;
    let run_cfg = match run_dir_of(&header) {
        Some(run) => {
            let path = run.join(run_dir::CONFIG_FILE);
            let cfg = RunConfig::load(&path, &[])
                .with_context(|| format!("the run config of checkpoint {}", header.display()))?;
            // Without an embedded config the checks below read this one; with one, the run's
            // config must agree with the checkpoint too.
            if embedded.is_some() {
                let (obs_shape, n_actions) = EnvFactory::spaces(&cfg.env)?;
                crate::eval::spaces::check_spaces(
                    &learner, &header, &cfg.env, &obs_shape, n_actions,
                )?;
                check_same_env(&header, embedded.as_ref(), &cfg.env, &path)?;
                if learner.network_config() != &cfg.network {
                    bail!(
                        "{}: the checkpoint's network differs from {}",
                        header.display(),
                        path.display()
                    );
                }
            }
            Some((cfg, path))
        }
        None => None,
    };
    let (cfg, source) = match (embedded, run_cfg) {
        (Some(cfg), _) => (cfg, header.clone()),
        (None, Some((cfg, path))) => (cfg, path),
        (None, None) => bail!(
            "checkpoint {} records no run config (written by an older brims) and is not in a \
             run directory (<run dir>/checkpoints/, beside <run dir>/{}); evaluate it there",
            header.display(),
            run_dir::CONFIG_FILE
        ),
    };
    if learner.network_config() != &cfg.network {
        bail!(
            "{}: the checkpoint's network differs from {}",
            header.display(),
            source.display()
        );
    }
    let (obs_shape, n_actions) = EnvFactory::spaces(&cfg.env)?;
    crate::eval::spaces::check_spaces(&learner, &header, &cfg.env, &obs_shape, n_actions)?;
    Ok(TrainedPolicy {
        cfg,
        learner,
        checkpoint: header,
    })
}
