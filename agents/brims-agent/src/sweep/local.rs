//! The local executor: a pool of `J` child processes, one per run, with stop signals
//! forwarded and each child stopping when the sweep dies.

use crate::sweep::args::SweepRunArgs;
use crate::sweep::manifest::{
    last_line, log_path, run_path, run_progress, save_manifest, Manifest, RunState,
};
use crate::sweep::report::write_report;
use crate::sweep::spec::{grid_frames_per_step, ResolvedSpec};
use anyhow::{bail, Context};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The local executor: `jobs` child `brims sweep run-one` processes at once, each with its share of
/// the cores; Ctrl-C or SIGTERM stops them all at their next update boundary (each writes a
/// checkpoint), and a rerun continues.
pub(crate) fn run_local(
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
    let stop = crate::run::stop::install_stop_signals();
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
                let child = spawn_run(&exe, dir, &id, threads)?;
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
                Some(status) => record_exit(spec, dir, manifest, i, status, &mut progress)?,
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

/// Starts `brims sweep run-one DIR ID` with `threads` threads, its output appended to the run's
/// log, in its own process group, its stdin a pipe from this sweep.
fn spawn_run(exe: &Path, dir: &Path, id: &str, threads: usize) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir, id))
        .with_context(|| format!("cannot write {}", log_path(dir, id).display()))?;
    let mut command = Command::new(exe);
    // Its own process group: a terminal's Ctrl-C reaches the sweep alone, which
    // forwards one SIGTERM (a second signal makes a run exit without a
    // checkpoint). If the sweep dies without forwarding (SIGKILL), the run sees
    // its stdin (a pipe only the sweep writes) reach end of file and stops as on
    // one SIGTERM. Not PR_SET_PDEATHSIG: it fires each time the thread that is
    // the run's parent exits, so a dying multi-threaded sweep could send it twice.
    command.process_group(0);
    command
        // The same entry point as a Slurm task: new run or continuation.
        .args(["sweep", "run-one"])
        .arg(dir)
        .arg(id)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env(
            crate::train::threads::ACTOR_THREADS_ENV,
            threads.to_string(),
        )
        .env(PARENT_PIPE_ENV, "1")
        // The write end stays in `Child` until the run is reaped.
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

/// Records how run `i` ended (finished, stopped with a checkpoint, or failed with its log's
/// last line), saves the manifest and, when it finished, rewrites the report.
fn record_exit(
    spec: &ResolvedSpec,
    dir: &Path,
    manifest: &mut Manifest,
    i: usize,
    status: std::process::ExitStatus,
    progress: &mut telemetry::Progress,
) -> anyhow::Result<()> {
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
    Ok(())
}

/// Set by the local executor on its runs: stdin is a pipe from the sweep, whose end of file
/// means the sweep is gone.
pub(crate) const PARENT_PIPE_ENV: &str = "BRIMS_SWEEP_PARENT_PIPE";

/// Raises `stop` once when stdin reaches end of file (the sweep that started this run died
/// without stopping it): the run checkpoints as on one SIGTERM. A stop already under way is
/// left alone, so the run never takes the sweep's death for a second signal.
pub(crate) fn stop_when_the_sweep_dies(stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
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
