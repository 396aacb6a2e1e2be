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

use crate::sweep::args::SweepRunArgs;
use crate::sweep::manifest::{refresh_after_slurm, save_manifest, Manifest, RunState};
use crate::sweep::spec::ResolvedSpec;

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
        crate::run::dir::write_atomic(&path, serde_json::to_string_pretty(&jobs)?.as_bytes())?;
        save_manifest(&dir, manifest)?;
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
        let refreshed = refresh_after_slurm(&dir, spec, manifest)?;
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

/// `s` as one word of a POSIX shell: in single quotes, each `'` written as `'\''`. Nothing
/// inside single quotes is special (`$`, `\`, spaces, backquotes), so every path survives.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A path as a shell word; fails on a path that is not UTF-8 (the script is text).
fn shell_path(path: &Path) -> anyhow::Result<String> {
    let text = path.to_str().with_context(|| {
        format!(
            "{} is not UTF-8; Slurm's batch script cannot name it",
            path.display()
        )
    })?;
    Ok(shell_quote(text))
}

/// One `#SBATCH --name=value` line; a value with a space or a quote would be split or kept
/// with its quotes by sbatch's own parser, so it is refused (paths go on sbatch's command line).
fn directive(s: &mut String, name: &str, value: &str) -> anyhow::Result<()> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || "'\"\\".contains(c))
    {
        bail!("--{name} {value:?}: Slurm values cannot be empty or hold spaces, quotes or backslashes");
    }
    writeln!(s, "#SBATCH --{name}={value}")?;
    Ok(())
}

/// The batch script of an array job whose task `i` runs line `i + 1` of `runs_file` with
/// `exe`; every path in it is one quoted shell word.
fn batch_script(
    exe: &Path,
    dir: &Path,
    runs_file: &Path,
    count: usize,
    args: &SweepRunArgs,
) -> anyhow::Result<String> {
    let mut s = String::from("#!/bin/bash\n");
    writeln!(s, "#SBATCH --array=0-{}", count - 1)?;
    writeln!(s, "#SBATCH --requeue")?;
    // B: the signal goes to the batch step, which `exec` makes the brims process itself.
    writeln!(s, "#SBATCH --signal=B:TERM@{TERM_BEFORE_LIMIT_S}")?;
    if let Some(p) = &args.partition {
        directive(&mut s, "partition", p)?;
    }
    if let Some(t) = &args.time {
        directive(&mut s, "time", t)?;
    }
    if let Some(c) = args.cpus_per_task {
        writeln!(s, "#SBATCH --cpus-per-task={c}")?;
    }
    if let Some(m) = &args.mem {
        directive(&mut s, "mem", m)?;
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
        "id=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {})",
        shell_path(runs_file)?
    )?;
    writeln!(s, "export RAYON_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}}")?;
    writeln!(
        s,
        "export {}=${{SLURM_CPUS_PER_TASK:-1}}",
        crate::train::threads::ACTOR_THREADS_ENV
    )?;
    writeln!(
        s,
        "exec {} sweep run-one {} \"$id\" >> {}/\"$id\".log 2>&1",
        shell_path(exe)?,
        shell_path(dir)?,
        shell_path(&dir.join("logs"))?
    )?;
    Ok(s)
}

/// The job id sbatch --parsable printed (`123` or `123;cluster`); an error when sbatch failed
/// or printed none, so a rejected script is never reported as submitted.
fn job_id(out: &std::process::Output) -> anyhow::Result<String> {
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
        .with_context(|| format!("sbatch printed no job id: {:?}", text.trim()))?;
    Ok(job_id.to_string())
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
    let stamp = crate::run::dir::utc_stamp(std::time::SystemTime::now());
    let runs_file = slurm_dir.join(format!("array-{stamp}.runs"));
    crate::run::dir::write_atomic(&runs_file, (ids.join("\n") + "\n").as_bytes())?;
    let exe = std::env::current_exe().context("cannot find the brims executable")?;
    let script_text = batch_script(&exe, dir, &runs_file, ids.len(), args)?;
    let script = slurm_dir.join(format!("array-{stamp}.sbatch"));
    crate::run::dir::write_atomic(&script, script_text.as_bytes())?;
    // A script bash cannot parse would be accepted by sbatch and fail on the node.
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .context("cannot run bash -n on the batch script")?;
    if !checked.status.success() {
        bail!(
            "the batch script {} does not parse: {}",
            script.display(),
            crate::config::one_line(String::from_utf8_lossy(&checked.stderr).trim())
        );
    }
    // The job name and the output path go on the command line, not as #SBATCH lines: sbatch
    // takes them as they are there, whatever characters they hold.
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(format!("--job-name=brims-{}", spec.name))
        .arg(format!("--output={}/%A_%a.out", slurm_dir.display()))
        .arg(&script)
        .current_dir(dir)
        .output()
        .context("cannot run sbatch")?;
    job_id(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::args::Executor;
    use std::os::unix::process::ExitStatusExt;

    /// What `sh -c 'printf %s WORD'` prints for the shell word `word`.
    fn through_sh(word: &str) -> String {
        let _spawning = crate::run::dir::SPAWN_GUARD
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {word}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{word}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    const HOSTILE: [&str; 6] = [
        "/data/it's mine",
        "/a b/c  d",
        "/cost/$HOME/${x}/$(id)",
        "/back\\slash\\n/`uname`",
        "/quotes/\"q\"/''",
        "plain",
    ];

    #[test]
    fn shell_quote_round_trips_hostile_paths() {
        for path in HOSTILE {
            assert_eq!(through_sh(&shell_quote(path)), path, "{path}");
        }
    }

    fn args() -> SweepRunArgs {
        SweepRunArgs {
            spec: None,
            out: None,
            executor: Executor::Slurm,
            jobs: 1,
            partition: Some("debug".into()),
            time: Some("01:00:00".into()),
            cpus_per_task: Some(2),
            mem: None,
            template: None,
            wait: false,
            quiet: true,
        }
    }

    /// The script parses, and run with a stand-in for brims in a directory named with an
    /// apostrophe, a space, `$` and a backslash, the task gets its sweep directory and run id
    /// intact and writes its log there.
    #[test]
    fn the_batch_script_survives_hostile_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("it's a $weep\\dir");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let runs_file = dir.join("array.runs");
        std::fs::write(&runs_file, "run-a\nrun-b\n").unwrap();
        let exe = dir.join("fake brims's");
        std::fs::write(&exe, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let script = batch_script(&exe, &dir, &runs_file, 2, &args()).unwrap();
        let _spawning = crate::run::dir::SPAWN_GUARD
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let path = tmp.path().join("job.sbatch");
        std::fs::write(&path, &script).unwrap();
        let parsed = Command::new("bash").arg("-n").arg(&path).status().unwrap();
        assert!(parsed.success(), "{script}");
        let ran = Command::new("bash")
            .arg(&path)
            .env("SLURM_ARRAY_TASK_ID", "1")
            .status()
            .unwrap();
        assert!(ran.success(), "{script}");
        let log = std::fs::read_to_string(dir.join("logs").join("run-b.log")).unwrap();
        assert_eq!(
            log,
            format!("sweep\nrun-one\n{}\nrun-b\n", dir.display()),
            "{script}"
        );
    }

    #[test]
    fn values_sbatch_would_split_are_refused() {
        let mut bad = args();
        bad.partition = Some("gpu big".into());
        let err = batch_script(Path::new("/b"), Path::new("/d"), Path::new("/r"), 1, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--partition"), "{err}");
    }

    #[test]
    fn a_rejected_submission_is_an_error() {
        let output = |code: i32, stdout: &str, stderr: &str| std::process::Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        };
        assert_eq!(job_id(&output(0, "4242\n", "")).unwrap(), "4242");
        assert_eq!(job_id(&output(0, "4242;cluster\n", "")).unwrap(), "4242");
        let err = job_id(&output(
            1,
            "",
            "sbatch: error: Batch job submission failed\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("refused") && err.contains("submission failed"),
            "{err}"
        );
        let err = job_id(&output(0, "", "")).unwrap_err().to_string();
        assert!(err.contains("no job id"), "{err}");
    }
}
