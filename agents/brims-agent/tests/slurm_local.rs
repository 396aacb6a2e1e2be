//! The local Slurm cluster that the `brims sweep --executor slurm` tests run against
//! (scripts/slurm-local.sh): it starts, runs an array job's tasks side by side, and stops.
//! Skipped, with the reason printed, where Slurm cannot be provided (see tests/common/slurm.rs;
//! `BRIMS_REQUIRE_SLURM=1` turns the skip into a failure).

mod common;

use common::slurm::LocalSlurm;

#[test]
fn local_slurm_runs_an_array_job() {
    let Some(slurm) = LocalSlurm::start_or_skip("local_slurm_runs_an_array_job") else {
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    // Each task records when it ran; `--time` bounds the test if the job never ends.
    let out = slurm
        .command("sbatch")
        .current_dir(out_dir.path())
        .args([
            "--wait",
            "--parsable",
            "--array=0-1",
            "--time=2",
            "--cpus-per-task=1",
            "--output=task_%a.out",
            "--wrap",
            "echo task=$SLURM_ARRAY_TASK_ID; date +%s.%N; sleep 2; date +%s.%N",
        ])
        .output()
        .expect("sbatch runs");
    assert!(
        out.status.success(),
        "sbatch --wait failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        slurm.logs()
    );
    let job: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .expect("sbatch --parsable prints the job id");

    let mut spans = Vec::new();
    for task in 0..2 {
        let path = out_dir.path().join(format!("task_{task}.out"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), slurm.logs()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "task {task} output: {text:?}");
        assert_eq!(lines[0], format!("task={task}"));
        let start: f64 = lines[1].parse().unwrap();
        let end: f64 = lines[2].parse().unwrap();
        assert!(end - start >= 2.0, "task {task} ran {:.1}s", end - start);
        spans.push((start, end));
    }
    // One CPU per task: on a machine with two or more, both tasks ran at the same time.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus >= 2 {
        let overlap = spans[0].1.min(spans[1].1) - spans[0].0.max(spans[1].0);
        assert!(overlap > 0.0, "tasks did not overlap: {spans:?}");
    }

    // Nothing of the job is pending or running any more.
    let q = slurm
        .command("squeue")
        .args(["-h", "-j", &job.to_string(), "-t", "PD,R", "-o", "%i %T"])
        .output()
        .expect("squeue runs");
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert_eq!(
        String::from_utf8_lossy(&q.stdout).trim(),
        "",
        "job {job} still queued"
    );
    println!(
        "local slurm: job {job} ran 2 tasks, overlapping {:.1}s",
        spans[0].1.min(spans[1].1) - spans[0].0.max(spans[1].0)
    );
}

/// `brims sweep --executor slurm` against the real daemons: a CartPole/memory sweep (2 configs
/// × 2 seeds) as one array job; one task is cancelled with `scancel` mid-run (the run writes a
/// checkpoint on Slurm's SIGTERM); rerunning `brims sweep` submits just what is unfinished and
/// every run ends with its full frame count.
#[test]
fn a_slurm_sweep_survives_scancel_and_a_rerun_finishes_it() {
    use std::path::Path;
    use std::process::Stdio;
    let Some(slurm) =
        LocalSlurm::start_or_skip("a_slurm_sweep_survives_scancel_and_a_rerun_finishes_it")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let frames = 40_960;
    let spec = tmp.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"slurmtest\"\nconfigs = [\"{0}/cartpole_lstm.toml\", \"{0}/memory_lstm.toml\"]\n\
             seeds = 2\ntotal_frames = {frames}\noverrides = [\"run.checkpoint_every=1\"]\n",
            configs.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("sweep");
    let sweep = |wait: bool| {
        let mut cmd = slurm.command(env!("CARGO_BIN_EXE_brims"));
        cmd.args([
            "sweep",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--executor",
            "slurm",
            "--cpus-per-task",
            "1",
            "--time",
            "10",
            "--quiet",
        ]);
        if wait {
            cmd.arg("--wait");
        }
        cmd
    };
    let manifest = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
    };
    // A job Slurm refuses (no such partition): Slurm's message, one line, nothing submitted.
    let refused = slurm
        .command(env!("CARGO_BIN_EXE_brims"))
        .args([
            "sweep",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--executor",
            "slurm",
            "--partition",
            "nosuchpartition",
            "--quiet",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a bad partition was accepted");
    assert!(
        err.contains("sbatch refused the job") && err.contains("artition"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Submit without waiting, then cancel a task whose run has a checkpoint.
    let submitted = sweep(false).stderr(Stdio::piped()).output().unwrap();
    assert!(
        submitted.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&submitted.stderr),
        slurm.logs()
    );
    let mut cancelled = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while cancelled.is_none() && std::time::Instant::now() < deadline {
        for r in manifest()["runs"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap();
            let ckpts = out.join("runs").join(id).join("checkpoints");
            let has = std::fs::read_dir(&ckpts).is_ok_and(|mut d| d.any(|e| e.is_ok()));
            let summary = out.join("runs").join(id).join("summary.json").exists();
            if has && !summary {
                let task = r["slurm_task"].as_str().unwrap().to_string();
                let status = slurm.command("scancel").arg(&task).status().unwrap();
                assert!(status.success());
                cancelled = Some((id.to_string(), task));
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (id, task) = cancelled.expect("no task got to a checkpoint in time");
    // Let the first submission drain (the other tasks finish) without submitting anything: the
    // cancelled run must be short of its budget, with a checkpoint.
    let drained = (0..1200).any(|_| {
        let out = slurm
            .command("squeue")
            .args(["-h", "-n", "brims-slurmtest"])
            .output()
            .unwrap();
        let empty = out.status.success() && String::from_utf8_lossy(&out.stdout).trim().is_empty();
        if !empty {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        empty
    });
    assert!(
        drained,
        "the array job did not leave the queue in 120 s\n{}",
        slurm.logs()
    );
    let log =
        std::fs::read_to_string(out.join("logs").join(format!("{id}.log"))).unwrap_or_default();
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("runs").join(&id).join("summary.json"))
            .unwrap_or_else(|_| "{}".into()),
    )
    .unwrap();
    assert!(
        summary["interrupted"] == true || summary["frames"].as_u64().unwrap_or(0) < frames,
        "scancel of {task} came too late: {summary}\n{log}"
    );
    // The rerun submits what is left and waits: everything ends with its full budget.
    let rerun = sweep(true).output().unwrap();
    assert!(
        rerun.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&rerun.stderr),
        slurm.logs()
    );
    for r in manifest()["runs"].as_array().unwrap() {
        assert_eq!(r["state"], "done", "{r}");
        assert!(r["frames_done"].as_u64().unwrap() >= frames, "{r}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("cartpole_lstm") && report.contains("memory_lstm"));
}
