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
