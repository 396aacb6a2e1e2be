//! `brims sweep` end to end on CartPole: a local sweep interrupted twice and rerun finishes
//! every run with its full budget; bad specs and directories are refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{signal, wait_exit, wait_until, Reaped};

fn brims() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brims"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// `brims sweep SPEC --out OUT …extra`, run to the end.
fn sweep(spec: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    brims()
        .args([
            "sweep",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A spec of `configs` × 2 seeds, `frames` per run, checkpoints every update.
fn spec(dir: &Path, frames: u64) -> PathBuf {
    let c = repo().join("configs");
    let path = dir.join("spec.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"t\"\nconfigs = [\"{0}/cartpole_lstm.toml\", \"{0}/memory_lstm.toml\"]\n\
             seeds = 2\ntotal_frames = {frames}\noverrides = [\"run.checkpoint_every=1\"]\n",
            c.display()
        ),
    )
    .unwrap();
    path
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Any run directory of the sweep holds a checkpoint.
fn some_checkpoint(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("runs"))
        .map(|runs| {
            runs.flatten().any(|r| {
                std::fs::read_dir(r.path().join("checkpoints")).is_ok_and(|mut c| {
                    c.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
                })
            })
        })
        .unwrap_or(false)
}

#[test]
fn an_interrupted_local_sweep_continues_to_the_full_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = 20_480;
    let spec = spec(tmp.path(), frames);
    let out = tmp.path().join("sweep");
    // Interrupt twice: each time once some run has written a checkpoint (and so is mid-run).
    for round in 0..2 {
        let child = brims()
            .args([
                "sweep",
                spec.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--jobs",
                "2",
                "--quiet",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = Reaped(child);
        let checkpointed = wait_until(120, || {
            some_checkpoint(&out) && {
                // A new checkpoint since the last round: at least one run is further along.
                let m = manifest(&out);
                m["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["state"] == "running")
            }
        });
        assert!(checkpointed, "round {round}: no run got going");
        signal(child.0.id(), "-INT");
        let status = wait_exit(&mut child.0, 60);
        let read = |pipe: Option<&mut dyn std::io::Read>| {
            let mut text = String::new();
            if let Some(p) = pipe {
                p.read_to_string(&mut text).unwrap();
            }
            text
        };
        let stdout = read(child.0.stdout.as_mut().map(|p| p as &mut dyn std::io::Read));
        let stderr = read(child.0.stderr.as_mut().map(|p| p as &mut dyn std::io::Read));
        assert!(status.success(), "round {round}: {status:?} {stderr}");
        assert!(
            stdout.contains("interrupted") || stdout.contains("runs done"),
            "{stdout}"
        );
        let m = manifest(&out);
        assert!(m["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] != "running"));
        // Each stopped run took one signal and wrote its checkpoint: none exited on a second
        // signal, and none was charged an attempt for being stopped.
        for r in m["runs"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap();
            let log = std::fs::read_to_string(out.join("logs").join(format!("{id}.log")))
                .unwrap_or_default();
            assert!(
                !log.contains("second interrupt"),
                "round {round}: {id}: {log}"
            );
            if r["state"] == "pending" {
                assert_eq!(r["attempts"], 0, "round {round}: {r}");
            }
        }
    }
    let unfinished_before = manifest(&out)["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] != "done")
        .count();
    assert!(
        unfinished_before > 0,
        "the interrupts came too late to test anything"
    );
    // The rerun finishes everything; a second rerun has nothing to do.
    let done = sweep(&spec, &out, &["--jobs", "2", "--quiet"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let m = manifest(&out);
    for r in m["runs"].as_array().unwrap() {
        assert_eq!(r["state"], "done", "{r}");
        assert!(r["frames_done"].as_u64().unwrap() >= frames, "{r}");
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                out.join("runs")
                    .join(r["id"].as_str().unwrap())
                    .join("summary.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(summary["interrupted"], false);
        assert!(summary["frames"].as_u64().unwrap() >= frames);
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("cartpole_lstm") && report.contains("memory_lstm"),
        "{report}"
    );
    assert!(!report.contains("runs finished; the rest"), "{report}");
    let again = sweep(&spec, &out, &["--quiet"]);
    assert!(again.status.success());
    let status = brims()
        .args(["sweep", "status", out.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(text.matches(" done ").count(), 4, "{text}");
}

/// A run whose update takes far longer than the sweep's 200 ms poll: stopping the sweep must
/// signal it once, so that it finishes its update, checkpoints and exits 0 (a second signal
/// would make it exit at once without a checkpoint, and cost it an attempt).
#[test]
fn a_stopped_sweep_signals_each_run_once() {
    let tmp = tempfile::tempdir().unwrap();
    let c = repo().join("configs");
    let spec = tmp.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"t\"\nconfigs = [\"{}/cartpole_lstm.toml\"]\nseeds = 1\n\
             total_frames = 10_000_000\noverrides = [\"run.checkpoint_every=1\", \
             \"ppo.update_epochs=200\"]\n",
            c.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("sweep");
    let child = brims()
        .args(["sweep", spec.to_str().unwrap(), "--out"])
        .arg(&out)
        .args(["--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    assert!(
        wait_until(120, || some_checkpoint(&out)),
        "the run never checkpointed"
    );
    signal(child.0.id(), "-TERM");
    assert!(wait_exit(&mut child.0, 120).success());
    let log = std::fs::read_to_string(out.join("logs/cartpole_lstm-s1.log")).unwrap();
    assert!(log.contains("then writing a checkpoint"), "{log}");
    assert!(!log.contains("second interrupt"), "{log}");
    let m = manifest(&out);
    assert_eq!(m["runs"][0]["state"], "pending", "{m}");
    assert_eq!(m["runs"][0]["attempts"], 0, "{m}");
}

#[test]
fn bad_sweeps_are_one_line_errors_and_touch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec_a = spec(tmp.path(), 1024);
    let out = tmp.path().join("sweep");
    let ok = sweep(&spec_a, &out, &["--quiet"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let summary = out.join("runs/cartpole_lstm-s1/summary.json");
    let before = std::fs::read(&summary).unwrap();
    let fails = |args: &[&str], want: &str| {
        let o = brims().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    };
    // Another spec on the same directory.
    let other = tmp.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&spec_a)
            .unwrap()
            .replace("1024", "2048"),
    )
    .unwrap();
    fails(
        &[
            "sweep",
            other.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "another spec",
    );
    // A corrupt manifest.
    let manifest = out.join("manifest.json");
    let good = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, "{").unwrap();
    fails(
        &[
            "sweep",
            spec_a.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "corrupt",
    );
    fails(&["sweep", "status", out.to_str().unwrap()], "corrupt");
    std::fs::write(&manifest, good).unwrap();
    // Bad specs.
    let bad = tmp.path().join("bad.toml");
    for (body, want) in [
        (
            "name = \"t\"\nconfigs = [\"missing.toml\"]\nseeds = 1\n",
            "not found",
        ),
        (
            "name = \"t\"\nconfigs = []\nseeds = 1\n",
            "configs is empty",
        ),
    ] {
        std::fs::write(&bad, body).unwrap();
        fails(
            &[
                "sweep",
                bad.to_str().unwrap(),
                "--out",
                tmp.path().join("x").to_str().unwrap(),
            ],
            want,
        );
    }
    // Slurm without Slurm: no sbatch on the PATH.
    let o = brims()
        .args([
            "sweep",
            spec_a.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--executor", "slurm"])
        .env("PATH", tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("sbatch") && err.contains("apt-get install"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A run directory damaged by hand: its config is gone. The sweep reports it failed and
    // leaves the finished runs alone.
    let damaged = out.join("runs/memory_lstm-s2");
    std::fs::remove_file(damaged.join("summary.json")).unwrap();
    std::fs::remove_file(damaged.join("config.toml")).unwrap();
    let o = sweep(&spec_a, &out, &["--quiet"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("memory_lstm-s2") && err.contains("failed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&summary).unwrap(),
        before,
        "a finished run was touched"
    );
}

/// A spec of cartpole_lstm × `seeds` seeds that runs far longer than any test waits, with a
/// checkpoint after every update.
fn long_spec(dir: &Path, seeds: u64) -> PathBuf {
    let path = dir.join("long.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"t\"\nconfigs = [\"{}/cartpole_lstm.toml\"]\nseeds = {seeds}\n\
             total_frames = 10_000_000\noverrides = [\"run.checkpoint_every=1\"]\n",
            repo().join("configs").display()
        ),
    )
    .unwrap();
    path
}

/// Issue 24 item 2: a sweep killed with SIGKILL stops each of its runs exactly once: each
/// writes an interrupted summary.json (and its checkpoint, if it made an update) and exits,
/// and none takes the sweep's death for a second signal (which would exit 130 without a
/// checkpoint) or dies of a signal before it can catch one.
#[test]
fn a_killed_sweep_stops_each_run_once_with_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = 4;
    let spec = long_spec(tmp.path(), runs);
    let out = tmp.path().join("sweep");
    let child = brims()
        .args(["sweep", spec.to_str().unwrap(), "--out"])
        .arg(&out)
        .args(["--jobs", &runs.to_string(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    // Killed as soon as every run has started: a run may be anywhere in its start-up.
    let running = || {
        out.join("manifest.json").exists()
            && manifest(&out)["runs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["state"] == "running")
                .count()
                == runs as usize
    };
    assert!(wait_until(120, running), "the runs never started");
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    for seed in 1..=runs {
        let id = format!("cartpole_lstm-s{seed}");
        let summary = out.join("runs").join(&id).join("summary.json");
        let log = || {
            std::fs::read_to_string(out.join("logs").join(format!("{id}.log"))).unwrap_or_default()
        };
        // The run's last words: "interrupted at … frames" or "interrupted before the first
        // update", printed once its summary is written.
        assert!(
            wait_until(120, || log().contains("interrupted ")
                || log().contains("second interrupt")),
            "{id} never stopped (or died without a word): {}",
            log()
        );
        assert!(summary.exists(), "{id} wrote no summary: {}", log());
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert_eq!(summary["interrupted"], true, "{id}: {summary}");
        let log = log();
        assert!(!log.contains("second interrupt"), "{id}: {log}");
        assert_eq!(log.matches("stopping").count(), 1, "{id}: {log}");
    }
}

/// Issue 24 item 3: while a sweep runs, a second `brims sweep` on its directory is refused
/// with one line naming the first one's pid, and touches nothing; `sweep status` still reads.
#[test]
fn a_second_sweep_on_a_running_sweeps_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = long_spec(tmp.path(), 1);
    let out = tmp.path().join("sweep");
    let first = brims()
        .args(["sweep", spec.to_str().unwrap(), "--out"])
        .arg(&out)
        .args(["--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = Reaped(first);
    assert!(
        wait_until(120, || some_checkpoint(&out)),
        "the run never checkpointed"
    );
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let second = sweep(&spec, &out, &["--quiet"]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("in use") && err.contains(&format!("process {}", first.0.id())),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    let status = brims()
        .args(["sweep", "status", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("cartpole_lstm-s1"));
    signal(first.0.id(), "-TERM");
    assert!(wait_exit(&mut first.0, 120).success());
    let m = manifest(&out);
    assert_eq!(m["runs"][0]["attempts"], 0, "{m}");
    assert!(m["runs"][0]["error"].is_null(), "{m}");
}
