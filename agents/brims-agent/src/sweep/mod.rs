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

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::train::{self, TrainArgs};

pub(crate) mod args;
mod local;
pub(crate) mod manifest;
pub(crate) mod report;
pub(crate) mod slurm;
pub(crate) mod spec;

use crate::sweep::args::{Executor, SweepArgs, SweepCommand, SweepRunArgs};
use crate::sweep::local::{run_local, stop_when_the_sweep_dies, PARENT_PIPE_ENV};
use crate::sweep::manifest::{
    config_path, load_manifest, lock_sweep, open_sweep, read_json, run_path, RunState, SPEC_FILE,
};
use crate::sweep::report::write_report;
use crate::sweep::spec::{resolve, ResolvedSpec};

/// `brims sweep …`.
pub(crate) fn run(args: &SweepArgs) -> anyhow::Result<serde_json::Value> {
    match &args.command {
        Some(SweepCommand::Status { dir }) => status(dir),
        Some(SweepCommand::Report { dir, from_csv }) => {
            let report = if *from_csv {
                crate::sweep::report::write_published(dir)?
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

/// `brims sweep SPEC.toml`: resolve, open the directory, run what is unfinished.
fn start(spec_path: &Path, args: &SweepRunArgs) -> anyhow::Result<serde_json::Value> {
    let spec = resolve(spec_path)?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("sweep-{}", spec.name)));
    if args.executor == Executor::Slurm {
        crate::sweep::slurm::check_clients()?;
    }
    // Held until the grid has run (local) or been submitted (Slurm, and waited for with
    // --wait); Slurm's tasks (`run-one`) lock only their own run directories.
    let _lock = lock_sweep(&dir)?;
    let mut manifest = open_sweep(&spec, &dir)?;
    let outcome = match args.executor {
        Executor::Local => run_local(&spec, &dir, &mut manifest, args)?,
        Executor::Slurm => crate::sweep::slurm::submit(&spec, &dir, &mut manifest, args)?,
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
    let stop = crate::run::stop::install_stop_signals();
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
    let queued = crate::sweep::slurm::queued_tasks(dir).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::manifest::{save_manifest, MANIFEST_FILE};

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
