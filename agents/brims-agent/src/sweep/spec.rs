//! A sweep spec (games × configs × seeds × budget) resolved into its planned runs, and what
//! differs between two resolutions.

use crate::config::run::{EnvConfig, RunConfig};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Seeds as a count (`seeds = 3` → 1, 2, 3) or a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Seeds {
    Count(u64),
    List(Vec<u64>),
}

/// The spec file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpecFile {
    /// Sweep name (the default directory's name).
    name: String,
    /// Atari games, each run once per config and seed; empty: each config's own env.
    #[serde(default)]
    games: Vec<String>,
    /// Run configs (one per core), relative to the spec file or the working directory.
    configs: Vec<PathBuf>,
    seeds: Seeds,
    /// Frame budget of every run (default: each config's own).
    total_frames: Option<u64>,
    /// `key=value` overrides applied to every run (as `brims train --set`).
    #[serde(default)]
    overrides: Vec<String>,
    /// Attempts per run before it is marked failed.
    #[serde(default = "default_attempts")]
    max_attempts: u32,
}

pub(crate) fn default_attempts() -> u32 {
    3
}

/// A config's name without its own Atari game's prefix (`breakout_lstm` → `lstm`,
/// `space_invaders_brims` → `brims`); other names as they are.
pub(crate) fn config_label(cfg: &RunConfig) -> String {
    let EnvConfig::Atari { game, .. } = &cfg.env else {
        return cfg.name.clone();
    };
    let key = envs_atari::game_key(game);
    cfg.name
        .match_indices('_')
        .find(|&(at, _)| envs_atari::game_key(&cfg.name[..at]) == key)
        .map(|(at, _)| &cfg.name[at + 1..])
        .filter(|rest| !rest.is_empty())
        .map_or_else(|| cfg.name.clone(), str::to_string)
}

/// One run of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PlannedRun {
    /// `<game>-<config name>-s<seed>` (no game part without games).
    pub id: String,
    /// The game, when the spec names games.
    pub game: Option<String>,
    /// The config's name (its `name` before the run renames it).
    pub config: String,
    pub seed: u64,
    /// Frame budget.
    pub total_frames: u64,
    /// The effective config, as `configs/<id>.toml` holds it.
    pub config_toml: String,
}

/// The spec as resolved: what `sweep.json` holds and a rerun must match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResolvedSpec {
    pub name: String,
    pub games: Vec<String>,
    pub configs: Vec<String>,
    pub seeds: Vec<u64>,
    pub total_frames: Option<u64>,
    pub overrides: Vec<String>,
    pub max_attempts: u32,
    pub runs: Vec<PlannedRun>,
}

/// Reads and resolves a spec: every config loaded with its overrides, every game checked,
/// the grid listed. Nothing is written.
pub(crate) fn resolve(path: &Path) -> anyhow::Result<ResolvedSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read sweep spec {}", path.display()))?;
    let spec: SpecFile = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            path.display(),
            crate::config::one_line(&e.to_string())
        )
    })?;
    if spec.name.is_empty() || spec.name.contains(['/', '\\']) {
        bail!(
            "{}: name {:?} must be non-empty without path separators",
            path.display(),
            spec.name
        );
    }
    let seeds: Vec<u64> = match &spec.seeds {
        Seeds::Count(n) => (1..=*n).collect(),
        Seeds::List(list) => list.clone(),
    };
    if seeds.is_empty() {
        bail!(
            "{}: seeds is empty; give a count (seeds = 3) or a list",
            path.display()
        );
    }
    if spec.configs.is_empty() {
        bail!("{}: configs is empty", path.display());
    }
    if spec.max_attempts == 0 {
        bail!("{}: max_attempts must be >= 1", path.display());
    }
    duplicates("seeds", seeds.iter().map(|s| s.to_string()))?;
    duplicates("games", spec.games.iter().cloned())?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut configs = Vec::new();
    for config in &spec.configs {
        let found = [base.join(config), config.clone()]
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "{}: config {} not found (relative to the spec or here)",
                    path.display(),
                    config.display()
                )
            })?;
        let mut cfg = RunConfig::load(&found, &spec.overrides)?;
        if !spec.games.is_empty() {
            // The spec names the games, so a config's own game is no part of what it is:
            // breakout_lstm.toml run on Pong is "lstm", and its runs are Pong-lstm-s1, ….
            cfg.name = config_label(&cfg);
        }
        configs.push((found, cfg));
    }
    duplicates("config names", configs.iter().map(|(_, c)| c.name.clone()))?;
    let games: Vec<Option<String>> = if spec.games.is_empty() {
        vec![None]
    } else {
        spec.games.iter().cloned().map(Some).collect()
    };
    let mut runs = Vec::new();
    for game in &games {
        for (file, cfg) in &configs {
            if let Some(game) = game {
                crate::envs::check_game(&cfg.env, game)
                    .with_context(|| format!("{}: game {game:?}", path.display()))?;
            }
            for &seed in &seeds {
                let id = match game {
                    Some(g) => format!("{g}-{}-s{seed}", cfg.name),
                    None => format!("{}-s{seed}", cfg.name),
                };
                let mut overrides = spec.overrides.clone();
                overrides.push(format!("seed={seed}"));
                overrides.push(format!("name=\"{id}\""));
                if let Some(frames) = spec.total_frames {
                    overrides.push(format!("total_frames={frames}"));
                }
                if let Some(g) = game {
                    overrides.push(format!("env.game=\"{g}\""));
                }
                let run_cfg = RunConfig::load(file, &overrides)?;
                runs.push(PlannedRun {
                    id,
                    game: game.clone(),
                    config: cfg.name.clone(),
                    seed,
                    total_frames: run_cfg.total_frames,
                    config_toml: run_cfg.to_toml()?,
                });
            }
        }
    }
    Ok(ResolvedSpec {
        name: spec.name,
        games: spec.games,
        configs: configs.iter().map(|(_, c)| c.name.clone()).collect(),
        seeds,
        total_frames: spec.total_frames,
        overrides: spec.overrides,
        max_attempts: spec.max_attempts,
        runs,
    })
}

pub(crate) fn duplicates(what: &str, items: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    for item in items {
        if !seen.insert(item.clone()) {
            bail!("the sweep lists {what} {item:?} twice (duplicate runs)");
        }
    }
    Ok(())
}

/// Why the spec given now cannot open a directory made with `old`; empty when it can.
///
/// A sweep may grow: the new spec may add games, configs or seeds, and their runs join the
/// grid. Everything else must match, and every run the directory already has must still be in
/// the spec with the same effective config, so no finished or checkpointed run is orphaned or
/// silently reinterpreted.
pub(crate) fn spec_differences(old: &ResolvedSpec, new: &ResolvedSpec) -> Vec<String> {
    let mut out = Vec::new();
    let show = |x: &dyn std::fmt::Debug| format!("{x:?}");
    let fields = [
        ("name", show(&old.name), show(&new.name)),
        (
            "total_frames",
            show(&old.total_frames),
            show(&new.total_frames),
        ),
        ("overrides", show(&old.overrides), show(&new.overrides)),
        (
            "max_attempts",
            show(&old.max_attempts),
            show(&new.max_attempts),
        ),
    ];
    for (name, a, b) in fields {
        if a != b {
            out.push(format!("{name}: {a} → {b}"));
        }
    }
    let dropped = |what: &str, old: Vec<String>, new: Vec<String>| {
        let gone: Vec<String> = old.into_iter().filter(|x| !new.contains(x)).collect();
        (!gone.is_empty()).then(|| {
            format!(
                "{what} {} dropped (a sweep can grow, not shrink)",
                gone.join(", ")
            )
        })
    };
    let seeds = |s: &[u64]| s.iter().map(u64::to_string).collect::<Vec<_>>();
    out.extend(dropped("games", old.games.clone(), new.games.clone()));
    out.extend(dropped("configs", old.configs.clone(), new.configs.clone()));
    out.extend(dropped("seeds", seeds(&old.seeds), seeds(&new.seeds)));
    if out.is_empty() {
        let new_runs: BTreeMap<&str, &PlannedRun> =
            new.runs.iter().map(|r| (r.id.as_str(), r)).collect();
        for run in &old.runs {
            match new_runs.get(run.id.as_str()) {
                None => out.push(format!("run {} is no longer in the spec", run.id)),
                Some(now) if now.config_toml != run.config_toml => {
                    out.push(format!("the config of run {} changed", run.id))
                }
                Some(_) => {}
            }
        }
    }
    out
}

/// Emulator frames per agent step over the whole grid (its frames over its agent steps), so
/// the progress line's SPS is agent steps per second, as a run's.
pub(crate) fn grid_frames_per_step(spec: &ResolvedSpec) -> anyhow::Result<u64> {
    let (mut frames, mut steps) = (0u64, 0u64);
    for run in &spec.runs {
        let cfg = RunConfig::from_table(toml::from_str(&run.config_toml)?)?;
        frames += run.total_frames;
        steps += run.total_frames / cfg.env.frames_per_step().max(1);
    }
    Ok((frames / steps.max(1)).max(1))
}
