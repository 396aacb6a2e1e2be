//! The Slurm executor of `brims sweep`: one `sbatch --array` job, one task per unfinished run,
//! each task `brims sweep run-one DIR ID` (a new run, or its continuation from the last
//! checkpoint). Tasks catch Slurm's SIGTERM (time limit, preemption, `scancel`), write a
//! checkpoint and exit, so `--requeue` or the next `brims sweep` continues them.
//!
//! State comes from the run directories and `squeue` (accounting is often disabled, so
//! `sacct` is not used). The sweep directory and the `brims` binary must be on a filesystem
//! every node sees.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::sweep::{Manifest, ResolvedSpec, RunState, SweepRunArgs};

/// Seconds before a time limit at which Slurm sends SIGTERM to the task (`--signal`): time
/// to finish an update and write a checkpoint.
const TERM_BEFORE_LIMIT_S: u32 = 180;

/// One submitted array job: its id and the run of each task index.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Submitted {
    job_id: String,
    runs: Vec<String>,
}

fn jobs_file(dir: &Path) -> PathBuf {
    dir.join("slurm").join("jobs.json")
}

/// Fails with what to install when Slurm's client commands are missing.
pub(crate) fn check_clients() -> anyhow::Result<()> {
    for tool in ["sbatch", "squeue"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!(
                "--executor slurm: `{tool}` not found; install Slurm's client commands (Debian: \
                 apt-get install slurm-client) and point SLURM_CONF at the cluster's slurm.conf, \
                 or run here with --executor local"
            );
        }
    }
    Ok(())
}

/// The runs of `dir`'s submitted jobs that Slurm still holds (queued or running), by run id,
/// with their task (`JOBID_INDEX`). Empty when nothing was submitted.
pub(crate) fn queued_tasks(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let path = jobs_file(dir);
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let jobs: Vec<Submitted> = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is corrupt", path.display()))?;
    if jobs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    // `-r`: one line per array task, pending ones too (not `123_[0-3]`).
    let out = Command::new("squeue")
        .args(["-h", "-r", "-o", "%i %T", "-j", &ids.join(",")])
        .output()
        .context("cannot run squeue")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut held = BTreeMap::new();
    for line in text.lines() {
        let Some(task) = line.split_whitespace().next() else {
            continue;
        };
        let Some((job, index)) = task.split_once('_') else {
            continue;
        };
        let Some(job) = jobs.iter().find(|j| j.job_id == job) else {
            continue;
        };
        if let Some(run) = index.parse::<usize>().ok().and_then(|i| job.runs.get(i)) {
            held.insert(run.clone(), task.to_string());
        }
    }
    Ok(held)
}

/// Submits one array job for every run that is neither finished, failed for good, nor still
/// held by Slurm; with `--wait`, waits until the job has left the queue.
pub(crate) fn submit(
    spec: &ResolvedSpec,
    dir: &Path,
    manifest: &mut Manifest,
    args: &SweepRunArgs,
) -> anyhow::Result<String> {
    let dir = std::fs::canonicalize(dir)?;
    let held = queued_tasks(&dir)?;
    for record in &mut manifest.runs {
        if record.state == RunState::Failed && record.attempts < spec.max_attempts {
            record.state = RunState::Pending;
        }
        if record.state == RunState::Pending && held.contains_key(&record.id) {
            record.state = RunState::Running;
        }
    }
    let todo: Vec<usize> = (0..manifest.runs.len())
        .filter(|&i| manifest.runs[i].state == RunState::Pending)
        .collect();
    let mut message = String::new();
    if !held.is_empty() {
        writeln!(
            message,
            "{} run(s) still queued or running in Slurm",
            held.len()
        )?;
    }
    if !todo.is_empty() {
        let ids: Vec<String> = todo.iter().map(|&i| manifest.runs[i].id.clone()).collect();
        let job_id = sbatch(spec, &dir, &ids, args)?;
        for (index, &i) in todo.iter().enumerate() {
            let record = &mut manifest.runs[i];
            record.state = RunState::Running;
            record.attempts += 1;
            record.slurm_task = Some(format!("{job_id}_{index}"));
        }
        let path = jobs_file(&dir);
        let mut jobs: Vec<Submitted> = if path.exists() {
            serde_json::from_str(&std::fs::read_to_string(&path)?).unwrap_or_default()
        } else {
            Vec::new()
        };
        jobs.push(Submitted {
            job_id: job_id.clone(),
            runs: ids.clone(),
        });
        crate::run_dir::write_atomic(&path, serde_json::to_string_pretty(&jobs)?.as_bytes())?;
        crate::sweep::save_manifest(&dir, manifest)?;
        writeln!(
            message,
            "submitted array job {job_id}: {} task(s) ({})",
            ids.len(),
            ids.join(", ")
        )?;
    } else if held.is_empty() {
        writeln!(
            message,
            "nothing to submit: every run is finished or failed for good"
        )?;
    }
    if args.wait {
        while !queued_tasks(&dir)?.is_empty() {
            std::thread::sleep(Duration::from_secs(2));
        }
        let refreshed = crate::sweep::refresh_after_slurm(&dir, spec, manifest)?;
        write!(message, "{refreshed}")?;
    } else {
        write!(
            message,
            "`brims sweep status {}` shows progress; rerun this command to submit what is left",
            dir.display()
        )?;
    }
    Ok(message)
}

/// Writes the batch script for `ids` and submits it; returns the job id.
fn sbatch(
    spec: &ResolvedSpec,
    dir: &Path,
    ids: &[String],
    args: &SweepRunArgs,
) -> anyhow::Result<String> {
    let slurm_dir = dir.join("slurm");
    std::fs::create_dir_all(&slurm_dir)?;
    let stamp = crate::run_dir::utc_stamp(std::time::SystemTime::now());
    let runs_file = slurm_dir.join(format!("array-{stamp}.runs"));
    crate::run_dir::write_atomic(&runs_file, (ids.join("\n") + "\n").as_bytes())?;
    let exe = std::env::current_exe().context("cannot find the brims executable")?;
    let mut s = String::from("#!/bin/bash\n");
    writeln!(s, "#SBATCH --job-name=brims-{}", spec.name)?;
    writeln!(s, "#SBATCH --array=0-{}", ids.len() - 1)?;
    writeln!(s, "#SBATCH --output={}/%A_%a.out", slurm_dir.display())?;
    writeln!(s, "#SBATCH --requeue")?;
    // B: the signal goes to the batch step, which `exec` makes the brims process itself.
    writeln!(s, "#SBATCH --signal=B:TERM@{TERM_BEFORE_LIMIT_S}")?;
    if let Some(p) = &args.partition {
        writeln!(s, "#SBATCH --partition={p}")?;
    }
    if let Some(t) = &args.time {
        writeln!(s, "#SBATCH --time={t}")?;
    }
    if let Some(c) = args.cpus_per_task {
        writeln!(s, "#SBATCH --cpus-per-task={c}")?;
    }
    if let Some(m) = &args.mem {
        writeln!(s, "#SBATCH --mem={m}")?;
    }
    if let Some(template) = &args.template {
        let text = std::fs::read_to_string(template)
            .with_context(|| format!("cannot read --template {}", template.display()))?;
        s.push_str(&text);
        if !text.ends_with('\n') {
            s.push('\n');
        }
    }
    writeln!(s, "set -eu")?;
    writeln!(
        s,
        "id=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" '{}')",
        runs_file.display()
    )?;
    writeln!(s, "export RAYON_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}}")?;
    writeln!(
        s,
        "export {}=${{SLURM_CPUS_PER_TASK:-1}}",
        crate::train::ACTOR_THREADS_ENV
    )?;
    writeln!(
        s,
        "exec '{}' sweep run-one '{}' \"$id\" >> '{}/logs/'\"$id\".log 2>&1",
        exe.display(),
        dir.display(),
        dir.display()
    )?;
    let script = slurm_dir.join(format!("array-{stamp}.sbatch"));
    crate::run_dir::write_atomic(&script, s.as_bytes())?;
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&script)
        .current_dir(dir)
        .output()
        .context("cannot run sbatch")?;
    if !out.status.success() {
        bail!(
            "sbatch refused the job: {}",
            crate::config::one_line(String::from_utf8_lossy(&out.stderr).trim())
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let job_id = text
        .trim()
        .split(';')
        .next()
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("sbatch printed no job id: {text:?}"))?;
    Ok(job_id.to_string())
}
