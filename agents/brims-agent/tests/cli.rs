//! End-to-end tests of the `brims` binary: what a user runs, on small budgets.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn brims() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brims"));
    cmd.current_dir(workspace());
    cmd
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `brims train --config CONFIG --quiet --run-dir RUN --set S…`.
fn train(config: &str, run: &Path, sets: &[&str]) -> Command {
    let mut cmd = brims();
    cmd.args(["train", "--config", config, "--quiet", "--run-dir"])
        .arg(run);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd
}

fn run_ok(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(&out)
}

fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?} is not JSON: {e}"))
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "expected failure, got success");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one-line error expected: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn dir_snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn cartpole_training_writes_a_complete_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let json = run_ok(&mut train(
        "configs/cartpole_brims.toml",
        &run,
        &["total_frames=2048"],
    ));
    assert_eq!(json["frames"], 2048);
    assert_eq!(json["run_dir"], run.to_str().unwrap());
    assert!(json["mean_return_last_20"].as_f64().unwrap() > 5.0);
    for file in ["config.toml", "run.json", "returns.csv", "summary.json"] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(meta["seed"], 1);
    assert!(meta["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d.as_str().unwrap().starts_with("candle-core=")));
    let checkpoints: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .collect();
    assert!(!checkpoints.is_empty());
    assert!(std::fs::read_dir(&run).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("events.out.tfevents")));

    // The same directory again is refused, and nothing in it changes.
    let before = dir_snapshot(&run);
    let err = run_err(&mut train("configs/cartpole_brims.toml", &run, &[]));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(before, dir_snapshot(&run));

    // Evaluating the checkpoint works on the run directory.
    let json = run_ok(
        brims()
            .args(["eval", "--episodes", "2", "--checkpoint"])
            .arg(&run),
    );
    assert_eq!(json["episodes"], 2);
    assert!(json["mean_score"].as_f64().unwrap() >= 8.0);
    assert!(json["human_normalized"].is_null());
}

#[test]
fn ctrl_c_checkpoints_and_exits_zero_then_resume_finishes_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let budget = 40 * 256;
    let mut child = train(
        "configs/cartpole_lstm.toml",
        &run,
        &[
            &format!("total_frames={budget}"),
            "run.checkpoint_every=1",
            "ppo.num_steps=32",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Wait (by reading, not sleeping) for the first checkpoint, then interrupt.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("checkpoint ") {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "interrupted run must exit 0: {rest:?}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    let frames_at_interrupt = summary["frames"].as_u64().unwrap();
    assert!(frames_at_interrupt > 0 && frames_at_interrupt < budget);

    let json = run_ok(
        brims()
            .args(["train", "--resume", "--quiet", "--run-dir"])
            .arg(&run),
    );
    assert_eq!(json["frames"], budget);
}

#[test]
fn bad_input_gives_one_line_errors() {
    // Unknown config key: named, with the accepted ones.
    let err = run_err(brims().args([
        "train",
        "--config",
        "configs/cartpole_lstm.toml",
        "--set",
        "ppo.lr=1e-4",
    ]));
    assert!(err.contains("lr") && err.contains("learning_rate"), "{err}");
    // A value out of range.
    let err = run_err(brims().args([
        "train",
        "--config",
        "configs/cartpole_lstm.toml",
        "--set",
        "ppo.clip_coef=0",
    ]));
    assert!(err.contains("clip_coef"), "{err}");
    // Missing config file.
    let err = run_err(brims().args(["train", "--config", "configs/nope.toml"]));
    assert!(err.contains("nope.toml"), "{err}");
    // Missing checkpoint.
    let err = run_err(brims().args(["eval", "--checkpoint", "runs/does-not-exist/ckpt.json"]));
    assert!(err.contains("does not exist"), "{err}");
    // Unknown game: close matches and how to list all.
    let err = run_err(brims().args(["play", "--game", "Breakot", "--episodes", "1"]));
    assert!(
        err.contains("Breakout") && err.contains("list-games"),
        "{err}"
    );
    // Resume without a run.
    let err = run_err(brims().args(["train", "--resume", "--run-dir", "runs/does-not-exist"]));
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn list_games_names_the_bundled_roms() {
    let out = brims().arg("list-games").output().unwrap();
    assert!(out.status.success());
    let games = String::from_utf8_lossy(&out.stdout);
    for game in ["Breakout", "Pong", "SpaceInvaders", "MontezumaRevenge"] {
        assert!(
            games.lines().any(|g| g == game),
            "{game} missing from:\n{games}"
        );
    }
}

#[test]
fn play_prints_scores_of_a_random_agent() {
    let json = run_ok(brims().args(["play", "--game", "Pong", "--episodes", "1"]));
    assert_eq!(json["episodes"], 1);
    // A random agent loses Pong 21 to a few.
    let score = json["mean_score"].as_f64().unwrap();
    assert!((-21.0..=-10.0).contains(&score), "{score}");
}

#[test]
fn compare_on_cartpole_writes_report_and_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    let json = run_ok(
        brims()
            .args([
                "compare",
                "configs/cartpole_lstm.toml",
                "configs/cartpole_brims.toml",
            ])
            .args(["--seeds", "2", "--frames", "2048", "--quiet", "--out"])
            .arg(&out),
    );
    let report = std::fs::read_to_string(json["report"].as_str().unwrap()).unwrap();
    assert!(
        report.contains("cartpole_lstm") && report.contains("cartpole_brims"),
        "{report}"
    );
    let plot = std::fs::read(json["plot"].as_str().unwrap()).unwrap();
    assert_eq!(&plot[1..4], b"PNG");
    // Reading the finished runs back gives the same report.
    let again = tmp.path().join("again");
    let runs: Vec<PathBuf> = [
        "cartpole_lstm-s1",
        "cartpole_lstm-s2",
        "cartpole_brims-s1",
        "cartpole_brims-s2",
    ]
    .iter()
    .map(|r| out.join(r))
    .collect();
    let json = run_ok(
        brims()
            .args(["compare", "--quiet", "--out"])
            .arg(&again)
            .arg("--runs")
            .args(&runs),
    );
    assert_eq!(
        std::fs::read_to_string(json["report"].as_str().unwrap()).unwrap(),
        report
    );
}

#[test]
fn smoke_training_on_breakout_then_eval_writes_a_gif() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("smoke");
    let json = run_ok(&mut train(
        "configs/smoke.toml",
        &run,
        &["total_frames=2048"],
    ));
    assert_eq!(json["frames"], 2048);
    let gif = tmp.path().join("episode.gif");
    let json = run_ok(
        brims()
            .args(["eval", "--episodes", "1", "--checkpoint"])
            .arg(&run)
            .arg("--gif")
            .arg(&gif),
    );
    assert_eq!(json["episodes"], 1);
    assert!(json["human_normalized"].is_number());
    let bytes = std::fs::read(&gif).unwrap();
    assert_eq!(&bytes[..6], b"GIF89a");
}

/// `bench env` and `bench core` end with the JSON the architecture names; the figures are
/// consistent with each other (not timed: only their relations are checked).
#[test]
fn bench_env_and_core_print_consistent_json() {
    let env = run_ok(brims().args([
        "bench",
        "env",
        "--game",
        "Breakout",
        "--envs",
        "4",
        "--threads",
        "2",
        "--seconds",
        "0.5",
    ]));
    let num = |v: &serde_json::Value, key: &str| {
        v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {v}"))
    };
    assert!(num(&env, "raw_frames_per_sec_1thread") > 0.0, "{env}");
    // Steps × 4 leaves out the frames resets emulate; ALE's counter does not.
    assert!(
        num(&env, "emulated_frames_per_sec") >= num(&env, "frames_per_sec"),
        "{env}"
    );
    let steps_x4 = num(&env, "steps_per_sec") * 4.0;
    assert!(
        (num(&env, "frames_per_sec") - steps_x4).abs() <= 1e-6 * steps_x4,
        "{env}"
    );
    let raw2 = 2.0 * num(&env, "raw_frames_per_sec_1thread");
    let ratio = num(&env, "ratio_emulated_to_threads_x_raw");
    assert!(
        (ratio - num(&env, "emulated_frames_per_sec") / raw2).abs() < 1e-9,
        "{env}"
    );

    for core in ["lstm", "brims"] {
        let out = run_ok(brims().args([
            "bench",
            "core",
            "--core",
            core,
            "--input-size",
            "64",
            "--steps",
            "3",
            "--seqs",
            "1",
        ]));
        assert_eq!(out["core"], core);
        assert!(num(&out, "step_fwd_ms") > 0.0 && num(&out, "seq_fwd_bwd_ms") > 0.0);
    }
}
