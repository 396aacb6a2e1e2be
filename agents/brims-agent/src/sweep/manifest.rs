//! A sweep directory's store: the resolved spec, the manifest of run states, the lock, the
//! paths of each run's config, run directory and log, and progress read back from them.

use crate::compare::finished_summary;
use crate::config::run::RunConfig;
use crate::run::dir::{self as run_dir, CONFIG_FILE};
use crate::sweep::spec::{spec_differences, PlannedRun, ResolvedSpec};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A run's state in the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunState {
    Pending,
    Running,
    Done,
    Failed,
}

/// One manifest entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub id: String,
    pub state: RunState,
    pub attempts: u32,
    pub error: Option<String>,
    pub frames_done: u64,
    /// The frames the run trains: its budget in whole updates (at most its `total_frames`).
    pub total_frames: u64,
    /// The Slurm task (`JOBID_TASK`) that last ran it.
    #[serde(default)]
    pub slurm_task: Option<String>,
}

/// `manifest.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub runs: Vec<RunRecord>,
}

impl Manifest {
    /// How many runs are in `state`.
    pub(crate) fn count(&self, state: RunState) -> usize {
        self.runs.iter().filter(|r| r.state == state).count()
    }
}

pub(crate) const SPEC_FILE: &str = "sweep.json";

pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// Opens (or creates) the sweep directory for `spec`, adding the runs of any games, configs or
/// seeds the spec gained; refuses a directory of another spec.
pub(crate) fn open_sweep(spec: &ResolvedSpec, dir: &Path) -> anyhow::Result<Manifest> {
    let spec_path = dir.join(SPEC_FILE);
    let new_runs: Vec<&PlannedRun> = if spec_path.exists() {
        let old: ResolvedSpec = read_json(&spec_path)?;
        let diff = spec_differences(&old, spec);
        if !diff.is_empty() {
            bail!(
                "{} was made from another spec ({}); use another --out, or the spec it was made with",
                dir.display(),
                diff.join("; ")
            );
        }
        let old_ids: BTreeSet<&str> = old.runs.iter().map(|r| r.id.as_str()).collect();
        let added: Vec<&PlannedRun> = spec
            .runs
            .iter()
            .filter(|r| !old_ids.contains(r.id.as_str()))
            .collect();
        if !added.is_empty() {
            let ids: Vec<&str> = added.iter().map(|r| r.id.as_str()).collect();
            eprintln!(
                "the spec grew: adding {} run(s) to {}: {}",
                added.len(),
                dir.display(),
                ids.join(", ")
            );
        }
        added
    } else {
        refuse_foreign_dir(dir)?;
        for sub in ["configs", "runs", "logs"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        spec.runs.iter().collect()
    };
    if !new_runs.is_empty() {
        // Configs first, then the spec that lists them: a crash between the two leaves the old
        // spec, and the rerun writes the same configs again.
        for run in &new_runs {
            run_dir::write_atomic(&config_path(dir, &run.id), run.config_toml.as_bytes())?;
        }
        run_dir::write_atomic(&spec_path, serde_json::to_string_pretty(spec)?.as_bytes())?;
    }
    let manifest = load_manifest(dir, spec)?;
    save_manifest(dir, &manifest)?;
    Ok(manifest)
}

/// The advisory lock of a sweep directory: `brims sweep SPEC` holds an exclusive `flock` on
/// it (and writes its pid) while it runs or submits the grid; `status` and `report` only read.
pub(crate) const LOCK_FILE: &str = "sweep.lock";

/// Refuses a directory that exists, holds something, and is not a sweep directory (no
/// sweep.json; a lock file a refused start left is not "something").
pub(crate) fn refuse_foreign_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.join(SPEC_FILE).exists() {
        let mut entries = std::fs::read_dir(dir)?;
        if entries.any(|e| e.map_or(true, |e| e.file_name() != LOCK_FILE)) {
            bail!(
                "{} exists and is not a sweep directory (no {SPEC_FILE})",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Creates the sweep directory if needed and locks it, or fails with one line naming the
/// process that holds it: two sweeps on one directory would start the same runs, and each
/// would fail on the other's run locks until it had spent every attempt.
pub(crate) fn lock_sweep(dir: &Path) -> anyhow::Result<run_dir::RunLock> {
    refuse_foreign_dir(dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    run_dir::RunLock::acquire_file(&dir.join(LOCK_FILE), |holder, path| {
        format!(
            "sweep directory {} is in use: {holder} is running it (it holds {}); wait for it \
             to finish or stop it first (`brims sweep status {}` reads it meanwhile)",
            dir.display(),
            path.display(),
            dir.display()
        )
    })
}

pub(crate) fn config_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("configs").join(format!("{id}.toml"))
}

pub(crate) fn run_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("runs").join(id)
}

pub(crate) fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("logs").join(format!("{id}.log"))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is corrupt ({e}); it is a record the sweep can rebuild: move it away and rerun",
            path.display()
        )
    })
}

/// The manifest, with every run's progress and done/pending state refreshed from its run
/// directory (attempts, errors and failed states are kept).
pub(crate) fn load_manifest(dir: &Path, spec: &ResolvedSpec) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let old: Manifest = if path.exists() {
        read_json(&path)?
    } else {
        Manifest::default()
    };
    let by_id: BTreeMap<&str, &RunRecord> = old.runs.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut runs = Vec::new();
    for planned in &spec.runs {
        // What the run trains: its budget in whole updates, which status shows frames against.
        let budget_frames = RunConfig::from_table(toml::from_str(&planned.config_toml)?)?
            .budget()
            .frames;
        let mut record = by_id
            .get(planned.id.as_str())
            .map(|r| (*r).clone())
            .unwrap_or(RunRecord {
                id: planned.id.clone(),
                state: RunState::Pending,
                attempts: 0,
                error: None,
                frames_done: 0,
                total_frames: budget_frames,
                slurm_task: None,
            });
        let progress = run_progress(&run_path(dir, &planned.id))?;
        record.frames_done = progress.frames;
        record.total_frames = budget_frames;
        if progress.finished {
            record.state = RunState::Done;
            record.error = None;
        } else if record.state == RunState::Done || record.state == RunState::Running {
            // A run recorded done or running that is not finished on disk: continue it.
            record.state = RunState::Pending;
        }
        runs.push(record);
    }
    Ok(Manifest { runs })
}

pub(crate) fn save_manifest(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    run_dir::write_atomic(
        &dir.join(MANIFEST_FILE),
        serde_json::to_string_pretty(manifest)?.as_bytes(),
    )
}

/// After Slurm has run a sweep's tasks: each run done (finished on disk), failed (its log
/// ends in an error and no attempts are left), or pending; returns a summary line.
pub(crate) fn refresh_after_slurm(
    dir: &Path,
    spec: &ResolvedSpec,
    manifest: &mut Manifest,
) -> anyhow::Result<String> {
    for record in &mut manifest.runs {
        let p = run_progress(&run_path(dir, &record.id))?;
        record.frames_done = p.frames;
        if p.finished {
            record.state = RunState::Done;
            record.error = None;
        } else if record.state == RunState::Running {
            let last = last_line(&log_path(dir, &record.id));
            if last.starts_with("error:") {
                record.error = Some(last);
                record.state = if record.attempts >= spec.max_attempts {
                    RunState::Failed
                } else {
                    RunState::Pending
                };
            } else {
                record.state = RunState::Pending;
            }
        }
    }
    save_manifest(dir, manifest)?;
    let done = manifest.count(RunState::Done);
    Ok(format!("{done} of {} runs done", manifest.runs.len()))
}

/// How far a run directory got.
pub(crate) struct Progress {
    pub frames: u64,
    pub finished: bool,
}

pub(crate) fn run_progress(dir: &Path) -> anyhow::Result<Progress> {
    if !dir.join(CONFIG_FILE).is_file() {
        return Ok(Progress {
            frames: 0,
            finished: false,
        });
    }
    let cfg = RunConfig::load(&dir.join(CONFIG_FILE), &[])?;
    if let Ok(Ok(summary)) = finished_summary(dir, &cfg) {
        return Ok(Progress {
            frames: summary.frames,
            finished: true,
        });
    }
    let frames = match ppo::latest_checkpoint(&dir.join(run_dir::CHECKPOINT_DIR)) {
        Ok(Some(header)) => ppo::read_header(&header)
            .map(|h| h.global_step * cfg.env.frames_per_step())
            .unwrap_or(0),
        _ => 0,
    };
    Ok(Progress {
        frames,
        finished: false,
    })
}

/// The last non-empty line of a log (the child's one-line error).
pub(crate) fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "exited with an error and no output".into())
}

/// The run directories of `spec`'s runs, by game (None without games) then config.
pub(crate) fn runs_by_game(
    dir: &Path,
    spec: &ResolvedSpec,
) -> BTreeMap<Option<String>, BTreeMap<String, Vec<PathBuf>>> {
    let mut out: BTreeMap<Option<String>, BTreeMap<String, Vec<PathBuf>>> = BTreeMap::new();
    for run in &spec.runs {
        out.entry(run.game.clone())
            .or_default()
            .entry(run.config.clone())
            .or_default()
            .push(run_path(dir, &run.id));
    }
    out
}
