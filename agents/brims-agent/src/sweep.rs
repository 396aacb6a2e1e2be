//! `brims sweep`: a resumable grid of games × configs × seeds, run here (`--jobs J` at once) or
//! on a Slurm cluster (one `sbatch --array` task per unfinished run), reported per game and
//! across games.
//!
//! A sweep is a directory:
//! - `sweep.json`: the spec as resolved (every run's effective config). Running the command
//!   again with a spec that adds games, configs or seeds adds their runs; one that changes or
//!   drops a run the directory has is refused, naming what differs.
//! - `manifest.json`: each run's state, attempts and last error (a record; the run
//!   directories are the truth about progress, so a lost manifest is rebuilt from them).
//! - `configs/<run>.toml`: the config each run trains; `runs/<run>/`: its run directory;
//!   `logs/<run>.log`: what it printed; `slurm/`: batch scripts and Slurm's output.
//! - `report.md` and PNGs, rewritten as runs finish.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::compare::finished_summary;
use crate::run_config::{EnvConfig, RunConfig};
use crate::run_dir::{self, CONFIG_FILE};
use crate::train::{self, TrainArgs};

/// Arguments of `brims sweep`.
#[derive(Args, Debug, Clone)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
    brims sweep configs/sweeps/cartpole.toml --out runs/sweep-cartpole --jobs 2\n  \
    brims sweep status runs/sweep-cartpole\n  \
    brims sweep report runs/sweep-cartpole\n  \
    brims sweep configs/sweeps/atari.toml --out /shared/sweep-atari --executor slurm \
    --partition gpu --time 12:00:00 --cpus-per-task 4 --mem 16G"
)]
pub(crate) struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    #[command(flatten)]
    pub run: SweepRunArgs,
}

/// `brims sweep status|report DIR`.
#[derive(Subcommand, Debug, Clone)]
pub(crate) enum SweepCommand {
    /// The grid with each run's state and progress (frames done / budget).
    #[command(after_help = "Example:\n  brims sweep status runs/sweep-cartpole")]
    Status {
        /// The sweep directory.
        dir: PathBuf,
    },
    /// Redraw report.md and the plots from the finished runs.
    #[command(after_help = "Examples:\n  \
        brims sweep report runs/sweep-cartpole\n  \
        brims sweep report --from-csv docs/results/atari-v1")]
    Report {
        /// The sweep directory.
        dir: PathBuf,
        /// DIR is a published results directory instead (runs/runs.json and one
        /// runs/<id>.csv of `frames,episodic_return` per run, as docs/results/atari-v1 holds):
        /// the same report is drawn from those files into DIR/report.
        #[arg(long)]
        from_csv: bool,
    },
    /// One run of a sweep: a new run, or its continuation (what each Slurm task executes).
    #[command(
        hide = true,
        after_help = "Example:\n  brims sweep run-one runs/sweep-cartpole cartpole_lstm-s1"
    )]
    RunOne {
        /// The sweep directory.
        dir: PathBuf,
        /// The run's id (as in manifest.json).
        id: String,
    },
}

/// Where the runs execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub(crate) enum Executor {
    /// Child processes on this machine.
    Local,
    /// One Slurm array job.
    Slurm,
}

/// `brims sweep SPEC.toml …`.
#[derive(Args, Debug, Clone)]
pub(crate) struct SweepRunArgs {
    /// The sweep spec (TOML: name, games, configs, seeds, total_frames, overrides).
    pub spec: Option<PathBuf>,
    /// The sweep directory (default: runs/sweep-<name>); rerunning on it continues the sweep.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the runs execute.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,
    /// Local: runs at once; each gets cores / jobs threads.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Slurm: partition (`--partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm: time limit per task (`--time`, e.g. 12:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Slurm: CPUs per task (`--cpus-per-task`); also the run's thread count.
    #[arg(long)]
    pub cpus_per_task: Option<usize>,
    /// Slurm: memory per task (`--mem`, e.g. 16G).
    #[arg(long)]
    pub mem: Option<String>,
    /// Slurm: a file of extra `#SBATCH` or set-up lines for this site, copied into the script.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Slurm: wait until the array job has left the queue, then report.
    #[arg(long)]
    pub wait: bool,
    /// No progress bar: a plain line when a run changes state.
    #[arg(long)]
    pub quiet: bool,
}

/// Seeds as a count (`seeds = 3` → 1, 2, 3) or a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Seeds {
    Count(u64),
    List(Vec<u64>),
}

/// The spec file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
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

fn default_attempts() -> u32 {
    3
}

/// A config's name without its own Atari game's prefix (`breakout_lstm` → `lstm`,
/// `space_invaders_brims` → `brims`); other names as they are.
fn config_label(cfg: &RunConfig) -> String {
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

const SPEC_FILE: &str = "sweep.json";
const MANIFEST_FILE: &str = "manifest.json";

/// `brims sweep …`.
pub(crate) fn run(args: &SweepArgs) -> anyhow::Result<serde_json::Value> {
    match &args.command {
        Some(SweepCommand::Status { dir }) => status(dir),
        Some(SweepCommand::Report { dir, from_csv }) => {
            let report = if *from_csv {
                crate::sweep_report::write_published(dir)?
            } else {
                write_report(dir)?
            };
            println!("report: {}", report.display());
            Ok(serde_json::json!({"sweep_dir": dir, "report": report}))
        }
        Some(SweepCommand::RunOne { dir, id }) => run_one(dir, id),
        None => {
            let Some(spec) = &args.run.spec else {
                bail!("give a sweep spec (brims sweep SPEC.toml), or `status DIR` / `report DIR`");
            };
            start(spec, &args.run)
        }
    }
}

/// Reads and resolves a spec: every config loaded with its overrides, every game checked,
/// the grid listed. Nothing is written.
fn resolve(path: &Path) -> anyhow::Result<ResolvedSpec> {
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

fn duplicates(what: &str, items: impl Iterator<Item = String>) -> anyhow::Result<()> {
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
fn spec_differences(old: &ResolvedSpec, new: &ResolvedSpec) -> Vec<String> {
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

/// Opens (or creates) the sweep directory for `spec`, adding the runs of any games, configs or
/// seeds the spec gained; refuses a directory of another spec.
fn open_sweep(spec: &ResolvedSpec, dir: &Path) -> anyhow::Result<Manifest> {
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
const LOCK_FILE: &str = "sweep.lock";

/// Refuses a directory that exists, holds something, and is not a sweep directory (no
/// sweep.json; a lock file a refused start left is not "something").
fn refuse_foreign_dir(dir: &Path) -> anyhow::Result<()> {
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
fn lock_sweep(dir: &Path) -> anyhow::Result<run_dir::RunLock> {
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

fn config_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("configs").join(format!("{id}.toml"))
}

fn run_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("runs").join(id)
}

fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("logs").join(format!("{id}.log"))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
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
fn load_manifest(dir: &Path, spec: &ResolvedSpec) -> anyhow::Result<Manifest> {
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
struct Progress {
    frames: u64,
    finished: bool,
}

fn run_progress(dir: &Path) -> anyhow::Result<Progress> {
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

/// `brims sweep SPEC.toml`: resolve, open the directory, run what is unfinished.
fn start(spec_path: &Path, args: &SweepRunArgs) -> anyhow::Result<serde_json::Value> {
    let spec = resolve(spec_path)?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("sweep-{}", spec.name)));
    if args.executor == Executor::Slurm {
        crate::sweep_slurm::check_clients()?;
    }
    // Held until the grid has run (local) or been submitted (Slurm, and waited for with
    // --wait); Slurm's tasks (`run-one`) lock only their own run directories.
    let _lock = lock_sweep(&dir)?;
    let mut manifest = open_sweep(&spec, &dir)?;
    let outcome = match args.executor {
        Executor::Local => run_local(&spec, &dir, &mut manifest, args)?,
        Executor::Slurm => crate::sweep_slurm::submit(&spec, &dir, &mut manifest, args)?,
    };
    let report = if manifest.runs.iter().any(|r| r.state == RunState::Done) {
        Some(write_report(&dir)?)
    } else {
        None
    };
    let done = manifest.count(RunState::Done);
    let failed: Vec<String> = manifest
        .runs
        .iter()
        .filter(|r| r.state == RunState::Failed)
        .map(|r| format!("{} ({})", r.id, r.error.as_deref().unwrap_or("?")))
        .collect();
    println!("{outcome}");
    if !failed.is_empty() {
        bail!(
            "{} run(s) failed after {} attempts: {}; logs in {}",
            failed.len(),
            spec.max_attempts,
            failed.join(", "),
            dir.join("logs").display()
        );
    }
    Ok(serde_json::json!({
        "sweep_dir": dir,
        "runs_done": done,
        "runs_total": manifest.runs.len(),
        "report": report,
    }))
}

/// Emulator frames per agent step over the whole grid (its frames over its agent steps), so
/// the progress line's SPS is agent steps per second, as a run's.
fn grid_frames_per_step(spec: &ResolvedSpec) -> anyhow::Result<u64> {
    let (mut frames, mut steps) = (0u64, 0u64);
    for run in &spec.runs {
        let cfg = RunConfig::from_table(toml::from_str(&run.config_toml)?)?;
        frames += run.total_frames;
        steps += run.total_frames / cfg.env.frames_per_step().max(1);
    }
    Ok((frames / steps.max(1)).max(1))
}

/// The local executor: `jobs` child `brims sweep run-one` processes at once, each with its share of
/// the cores; Ctrl-C or SIGTERM stops them all at their next update boundary (each writes a
/// checkpoint), and a rerun continues.
fn run_local(
    spec: &ResolvedSpec,
    dir: &Path,
    manifest: &mut Manifest,
    args: &SweepRunArgs,
) -> anyhow::Result<String> {
    if args.jobs == 0 {
        bail!("--jobs must be >= 1");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / args.jobs).max(1);
    let exe = std::env::current_exe().context("cannot find the brims executable")?;
    let stop = train::install_stop_signals();
    // Failed runs get another try on a rerun while attempts are left.
    for record in &mut manifest.runs {
        if record.state == RunState::Failed && record.attempts < spec.max_attempts {
            record.state = RunState::Pending;
        }
    }
    let total: u64 = manifest.runs.iter().map(|r| r.total_frames).sum();
    let frames_per_step = grid_frames_per_step(spec)?;
    let mut progress = telemetry::Progress::new(total, frames_per_step, args.quiet);
    let mut running: Vec<(usize, Child)> = Vec::new();
    let started = Instant::now();
    let start_frames: u64 = manifest.runs.iter().map(|r| r.frames_done).sum();
    let mut last_poll = Instant::now() - Duration::from_secs(10);
    let mut forwarded = false;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if !stopping {
            while running.len() < args.jobs {
                let Some(i) = manifest
                    .runs
                    .iter()
                    .position(|r| r.state == RunState::Pending)
                else {
                    break;
                };
                let id = manifest.runs[i].id.clone();
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log_path(dir, &id))
                    .with_context(|| format!("cannot write {}", log_path(dir, &id).display()))?;
                let mut command = Command::new(&exe);
                // Its own process group: a terminal's Ctrl-C reaches the sweep alone, which
                // forwards one SIGTERM (a second signal makes a run exit without a
                // checkpoint). If the sweep dies without forwarding (SIGKILL), the run sees
                // its stdin (a pipe only the sweep writes) reach end of file and stops as on
                // one SIGTERM. Not PR_SET_PDEATHSIG: it fires each time the thread that is
                // the run's parent exits, so a dying multi-threaded sweep could send it twice.
                command.process_group(0);
                let child = command
                    // The same entry point as a Slurm task: new run or continuation.
                    .args(["sweep", "run-one"])
                    .arg(dir)
                    .arg(&id)
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .env(train::ACTOR_THREADS_ENV, threads.to_string())
                    .env(PARENT_PIPE_ENV, "1")
                    // The write end stays in `Child` until the run is reaped.
                    .stdin(Stdio::piped())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("cannot start {}", exe.display()))?;
                manifest.runs[i].state = RunState::Running;
                manifest.runs[i].attempts += 1;
                progress.println(&format!(
                    "started {id} (attempt {})",
                    manifest.runs[i].attempts
                ));
                running.push((i, child));
                save_manifest(dir, manifest)?;
            }
        }
        if running.is_empty() {
            break;
        }
        // Reap finished children.
        let mut still = Vec::new();
        for (i, mut child) in running {
            match child.try_wait()? {
                None => still.push((i, child)),
                Some(status) => {
                    let id = manifest.runs[i].id.clone();
                    let p = run_progress(&run_path(dir, &id))?;
                    let record = &mut manifest.runs[i];
                    record.frames_done = p.frames;
                    if p.finished {
                        record.state = RunState::Done;
                        record.error = None;
                        progress.println(&format!("finished {id}"));
                    } else if status.success() {
                        // Stopped by a signal with a checkpoint: continue it on a rerun.
                        record.state = RunState::Pending;
                        record.attempts -= 1;
                    } else {
                        let why = last_line(&log_path(dir, &id));
                        record.error = Some(why.clone());
                        record.state = if record.attempts >= spec.max_attempts {
                            RunState::Failed
                        } else {
                            RunState::Pending
                        };
                        progress.println(&format!(
                            "{id} failed (attempt {} of {}): {why}",
                            record.attempts, spec.max_attempts
                        ));
                    }
                    save_manifest(dir, manifest)?;
                    if manifest.runs[i].state == RunState::Done {
                        write_report(dir)?;
                    }
                }
            }
        }
        running = still;
        if stopping && !forwarded {
            // Once: a run takes a second signal as "exit now, without a checkpoint".
            forwarded = true;
            for (_, child) in &running {
                // SAFETY: kill(2) on the pid of a child we own and have not reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        if last_poll.elapsed() >= Duration::from_secs(2) {
            last_poll = Instant::now();
            let mut frames = 0;
            for record in &mut manifest.runs {
                if record.state == RunState::Running {
                    record.frames_done = run_progress(&run_path(dir, &record.id))?.frames;
                }
                frames += record.frames_done;
            }
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let frames_per_sec = frames.saturating_sub(start_frames) as f64 / secs;
            progress.update(frames, frames_per_sec / frames_per_step as f64);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    progress.finish();
    save_manifest(dir, manifest)?;
    let done = manifest.count(RunState::Done);
    Ok(if stop.load(Ordering::SeqCst) {
        format!(
            "interrupted: {done} of {} runs done; every stopped run wrote a checkpoint. Rerun the same command to continue.",
            manifest.runs.len()
        )
    } else {
        format!(
            "{done} of {} runs done in {}",
            manifest.runs.len(),
            dir.display()
        )
    })
}

/// The last non-empty line of a log (the child's one-line error).
fn last_line(path: &Path) -> String {
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

/// Set by the local executor on its runs: stdin is a pipe from the sweep, whose end of file
/// means the sweep is gone.
const PARENT_PIPE_ENV: &str = "BRIMS_SWEEP_PARENT_PIPE";

/// Raises `stop` once when stdin reaches end of file (the sweep that started this run died
/// without stopping it): the run checkpoints as on one SIGTERM. A stop already under way is
/// left alone, so the run never takes the sweep's death for a second signal.
fn stop_when_the_sweep_dies(stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let stop = stop.clone();
    std::thread::spawn(move || {
        use std::io::Read;
        // The sweep never writes: read returns 0 (end of file) once its end is closed.
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        if !stop.swap(true, Ordering::SeqCst) {
            eprintln!(
                "the sweep that started this run is gone: stopping, then writing a checkpoint"
            );
        }
    });
}

/// `brims sweep run-one DIR ID`: trains run `ID` of the sweep in this process (new, or
/// continued from its checkpoint), as a Slurm task does.
fn run_one(dir: &Path, id: &str) -> anyhow::Result<serde_json::Value> {
    let spec: ResolvedSpec = read_json(&dir.join(SPEC_FILE))?;
    if !spec.runs.iter().any(|r| r.id == id) {
        bail!("{} has no run {id:?}", dir.display());
    }
    let run = run_path(dir, id);
    let targs = if run.exists() {
        TrainArgs {
            config: None,
            overrides: vec![],
            run_dir: Some(run),
            resume: true,
            quiet: true,
        }
    } else {
        TrainArgs {
            config: Some(config_path(dir, id)),
            overrides: vec![],
            run_dir: Some(run),
            resume: false,
            quiet: true,
        }
    };
    let stop = train::install_stop_signals();
    if std::env::var_os(PARENT_PIPE_ENV).is_some() {
        stop_when_the_sweep_dies(&stop);
    }
    train::run_with_stop(&targs, &stop)
}

/// `brims sweep status DIR`.
fn status(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let spec: ResolvedSpec = read_json(&dir.join(SPEC_FILE))
        .with_context(|| format!("{} is not a sweep directory", dir.display()))?;
    let mut manifest = load_manifest(dir, &spec)?;
    let queued = crate::sweep_slurm::queued_tasks(dir).unwrap_or_default();
    for record in &mut manifest.runs {
        if record.state == RunState::Pending && queued.contains_key(&record.id) {
            record.state = RunState::Running;
        }
    }
    println!(
        "{:<40} {:>8} {:>9} {:>24}  note",
        "run", "state", "attempts", "frames"
    );
    for r in &manifest.runs {
        let pct = 100.0 * r.frames_done as f64 / r.total_frames.max(1) as f64;
        let note = match (&r.error, queued.get(&r.id)) {
            (_, Some(task)) => format!("slurm {task}"),
            (Some(e), None) => e.clone(),
            (None, None) => String::new(),
        };
        println!(
            "{:<40} {:>8} {:>9} {:>12}/{:<11} {:>5.1}%  {note}",
            r.id,
            format!("{:?}", r.state).to_lowercase(),
            r.attempts,
            r.frames_done,
            r.total_frames,
            pct
        );
    }
    let done = manifest.count(RunState::Done);
    Ok(serde_json::json!({
        "sweep_dir": dir,
        "runs_done": done,
        "runs_total": manifest.runs.len(),
        "report": dir.join("report.md"),
    }))
}

/// Writes report.md and the plots from the finished runs; returns report.md's path.
pub(crate) fn write_report(dir: &Path) -> anyhow::Result<PathBuf> {
    let spec: ResolvedSpec = read_json(&dir.join(SPEC_FILE))
        .with_context(|| format!("{} is not a sweep directory", dir.display()))?;
    crate::sweep_report::write(dir, &spec)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn repo_configs() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
    }

    #[test]
    fn resolves_the_grid_and_refuses_bad_specs() {
        let tmp = tempfile::tempdir().unwrap();
        let c = repo_configs();
        let spec = write(
            tmp.path(),
            "s.toml",
            &format!(
                "name = \"t\"\nconfigs = [\"{0}/cartpole_lstm.toml\", \"{0}/cartpole_brims.toml\"]\nseeds = 2\ntotal_frames = 4096\n",
                c.display()
            ),
        );
        let r = resolve(&spec).unwrap();
        let ids: Vec<&str> = r.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "cartpole_lstm-s1",
                "cartpole_lstm-s2",
                "cartpole_brims-s1",
                "cartpole_brims-s2"
            ]
        );
        assert!(r.runs.iter().all(|r| r.total_frames == 4096));
        assert!(r.runs[1].config_toml.contains("seed = 2"));

        let bad = |body: &str| {
            let p = write(tmp.path(), "b.toml", body);
            resolve(&p).unwrap_err().to_string()
        };
        let cp = format!("{}/cartpole_lstm.toml", c.display());
        assert!(
            bad(&format!("name = \"t\"\nconfigs = [\"{cp}\"]\nseeds = 0\n"))
                .contains("seeds is empty")
        );
        assert!(bad(&format!(
            "name = \"t\"\nconfigs = [\"{cp}\", \"{cp}\"]\nseeds = 1\n"
        ))
        .contains("twice"));
        assert!(bad("name = \"t\"\nconfigs = [\"nope.toml\"]\nseeds = 1\n").contains("not found"));
        assert!(bad(&format!(
            "name = \"t\"\nconfigs = [\"{cp}\"]\nseeds = [1, 1]\n"
        ))
        .contains("twice"));
        let atari = format!("{}/breakout_lstm.toml", c.display());
        assert!(bad(&format!(
            "name = \"t\"\ngames = [\"NoSuchGame\"]\nconfigs = [\"{atari}\"]\nseeds = 1\n"
        ))
        .contains("NoSuchGame"));
        assert!(bad(&format!(
            "name = \"t\"\nconfigs = [\"{cp}\"]\nseeds = 1\nbogus = 1\n"
        ))
        .contains("bogus"));
    }

    /// The shipped Atari grid: games × cores × seeds, named by core (not by the game a config
    /// was written for), each run on its own game with the spec's budget.
    #[test]
    fn the_atari_grid_names_runs_by_game_and_core() {
        let spec = repo_configs().join("sweeps/atari-v1.toml");
        let r = resolve(&spec).unwrap();
        assert_eq!(r.configs, ["lstm", "rims", "brims"]);
        assert_eq!(r.runs.len(), 2 * 3 * 3);
        assert_eq!(r.runs[0].id, "Breakout-lstm-s1");
        let pong = r.runs.iter().find(|r| r.id == "Pong-brims-s3").unwrap();
        assert!(pong.config_toml.contains("game = \"Pong\""));
        assert!(pong.config_toml.contains("seed = 3"));
        assert!(r.runs.iter().all(|r| r.total_frames == 4_000_000));
        assert!(r
            .runs
            .iter()
            .all(|r| r.config_toml.contains("repeat_action_probability = 0.0")));
    }

    /// A config written for a game with a two-word name, or for a game given as `ALE/…-v5`,
    /// is labelled by its core too; a name that does not start with its game stays whole.
    #[test]
    fn configs_are_labelled_by_core_whatever_the_game_spelling() {
        let tmp = tempfile::tempdir().unwrap();
        let lstm = std::fs::read_to_string(repo_configs().join("breakout_lstm.toml")).unwrap();
        for (name, game, label) in [
            ("space_invaders_lstm", "SpaceInvaders", "lstm"),
            ("breakout_brims", "ALE/Breakout-v5", "brims"),
            ("my_lstm", "Breakout", "my_lstm"),
        ] {
            let config = lstm
                .replace("name = \"breakout_lstm\"", &format!("name = \"{name}\""))
                .replace("game = \"Breakout\"", &format!("game = \"{game}\""));
            write(tmp.path(), &format!("{name}.toml"), &config);
            let spec = write(
                tmp.path(),
                "s.toml",
                &format!(
                    "name = \"t\"\ngames = [\"Pong\"]\nconfigs = [\"{name}.toml\"]\nseeds = 1\n"
                ),
            );
            let r = resolve(&spec).unwrap();
            assert_eq!(r.configs, [label], "{name} on {game}");
            assert_eq!(r.runs[0].id, format!("Pong-{label}-s1"));
        }
    }

    #[test]
    fn a_directory_of_another_spec_or_a_corrupt_manifest_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let c = repo_configs();
        let body = |frames: u64| {
            format!(
                "name = \"t\"\nconfigs = [\"{}/cartpole_lstm.toml\"]\nseeds = 1\ntotal_frames = {frames}\n",
                c.display()
            )
        };
        let dir = tmp.path().join("sweep");
        let a = resolve(&write(tmp.path(), "a.toml", &body(4096))).unwrap();
        open_sweep(&a, &dir).unwrap();
        // The same spec again opens it.
        open_sweep(&a, &dir).unwrap();
        let b = resolve(&write(tmp.path(), "b.toml", &body(8192))).unwrap();
        let err = open_sweep(&b, &dir).unwrap_err().to_string();
        assert!(
            err.contains("another spec") && err.contains("total_frames"),
            "{err}"
        );
        std::fs::write(dir.join(MANIFEST_FILE), "{not json").unwrap();
        let err = open_sweep(&a, &dir).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        // A non-empty directory that is not a sweep is refused.
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("x"), "").unwrap();
        assert!(open_sweep(&a, &other)
            .unwrap_err()
            .to_string()
            .contains("not a sweep"));
    }

    /// More seeds (or games, or configs) for an existing sweep: their runs join the grid and the
    /// runs it had keep their state; dropping a seed or changing a run's config is refused.
    #[test]
    fn a_sweep_grows_but_does_not_shrink_or_change() {
        let tmp = tempfile::tempdir().unwrap();
        let lstm = std::fs::read_to_string(repo_configs().join("cartpole_lstm.toml")).unwrap();
        write(tmp.path(), "c.toml", &lstm);
        let spec = |seeds: &str| {
            let path = write(
                tmp.path(),
                "s.toml",
                &format!(
                    "name = \"t\"\nconfigs = [\"c.toml\"]\nseeds = {seeds}\ntotal_frames = 4096\n"
                ),
            );
            resolve(&path).unwrap()
        };
        let dir = tmp.path().join("sweep");
        let one = spec("1");
        let mut manifest = open_sweep(&one, &dir).unwrap();
        // The first run is recorded with an attempt, as a failed try would leave it.
        manifest.runs[0].attempts = 1;
        manifest.runs[0].error = Some("error: boom".into());
        save_manifest(&dir, &manifest).unwrap();

        let three = spec("[1, 2, 3]");
        let manifest = open_sweep(&three, &dir).unwrap();
        let ids: Vec<&str> = manifest.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            ["cartpole_lstm-s1", "cartpole_lstm-s2", "cartpole_lstm-s3"]
        );
        assert_eq!(manifest.runs[0].attempts, 1, "the old run keeps its record");
        assert_eq!(manifest.runs[2].state, RunState::Pending);
        let stored: ResolvedSpec = read_json(&dir.join(SPEC_FILE)).unwrap();
        assert_eq!(stored, three);
        let config3 = std::fs::read_to_string(config_path(&dir, "cartpole_lstm-s3")).unwrap();
        assert_eq!(config3, three.runs[2].config_toml);
        // The grown spec opens it again, unchanged.
        assert_eq!(open_sweep(&three, &dir).unwrap().runs.len(), 3);

        let err = open_sweep(&spec("2"), &dir).unwrap_err().to_string();
        assert!(err.contains("seeds 3 dropped"), "{err}");
        // The same spec file, but the config it names was edited: refused, naming the runs.
        write(
            tmp.path(),
            "c.toml",
            &lstm.replace("learning_rate = 1e-3", "learning_rate = 2e-3"),
        );
        let err = open_sweep(&spec("[1, 2, 3]"), &dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the config of run cartpole_lstm-s1 changed"),
            "{err}"
        );
    }
}
