//! End-to-end tests of the `brims` binary: what a user runs, on small budgets.

mod common;
use common::{signal, wait_exit, wait_until, Reaped};

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

/// Issue 24, 15: without a terminal (nohup, Slurm, `tee`) `brims train` printed nothing until
/// it ended. With stderr a pipe it prints plain progress lines; `BRIMS_PROGRESS_SECS=0` makes
/// one per update, so the test needs no waiting.
#[test]
fn training_without_a_terminal_prints_progress_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // 4 updates of 8 envs × 128 steps; no --quiet.
    let out = brims()
        .args([
            "train",
            "--config",
            "configs/cartpole_lstm.toml",
            "--run-dir",
        ])
        .arg(&run)
        .args(["--set", "total_frames=4096"])
        .env("BRIMS_PROGRESS_SECS", "0")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("frames "))
        .collect();
    // One per update and the final one.
    assert_eq!(lines.len(), 5, "{stderr}");
    assert!(
        lines[0].starts_with("frames 1024/4096 (25.0%)  SPS "),
        "{stderr}"
    );
    for field in ["SPS ", "return ", "elapsed ", "ETA "] {
        assert!(lines[3].contains(field), "{field} missing: {}", lines[3]);
    }
    assert!(
        lines[4].starts_with("frames 4096/4096 (100.0%)"),
        "{stderr}"
    );
}

/// Issue 24, 16: the activity picture was logged once, at the end, so an interrupted run had
/// none. It is logged at every checkpoint, and its active cells are the shared active colour.
#[test]
fn an_interrupted_brims_run_has_the_activity_picture() {
    use tfrecord::protobuf::event::What;
    use tfrecord::protobuf::summary::value::Value;
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut child = Reaped(
        train(
            "configs/cartpole_brims.toml",
            &run,
            &[
                "total_frames=1000000",
                "run.checkpoint_every=1",
                "ppo.num_steps=32",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("checkpoint ") {
            break;
        }
    }
    signal(child.0.id(), "-INT");
    for _ in lines.by_ref() {}
    assert!(wait_exit(&mut child.0, 60).success());
    let summary = json_file(&run.join("summary.json"));
    assert_eq!(summary["interrupted"], true);
    let mut images = Vec::new();
    for entry in std::fs::read_dir(&run).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().contains("tfevents") {
            continue;
        }
        let events = tfrecord::EventIter::open(&path, tfrecord::RecordReaderConfig::default())
            .unwrap()
            .map(|e| e.unwrap());
        for event in events {
            if let Some(What::Summary(summary)) = event.what {
                for v in summary.value {
                    if let (true, Some(Value::Image(img))) =
                        (v.tag == "brims/module_activity", v.value)
                    {
                        images.push(img.encoded_image_string);
                    }
                }
            }
        }
    }
    assert!(!images.is_empty(), "no brims/module_activity image");
    let decoder = png::Decoder::new(std::io::Cursor::new(&images[0]));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let active = buf[..info.buffer_size()]
        .chunks(info.color_type.samples())
        .filter(|p| p[..3] == [255, 192, 32])
        .count();
    assert!(active > 50, "{active} pixels of the active colour");
}

/// Issue 24, 18: `eval --gif` on CartPole played every episode, then failed. It is refused
/// up front, with one line, before any episode.
#[test]
fn eval_gif_of_an_env_without_frames_is_refused_before_playing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    run_ok(&mut train(
        "configs/cartpole_lstm.toml",
        &run,
        &["total_frames=1024"],
    ));
    let gif = tmp.path().join("cartpole.gif");
    let mut cmd = brims();
    cmd.args(["eval", "--episodes", "3", "--checkpoint"])
        .arg(&run)
        .arg("--gif")
        .arg(&gif);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("episode"),
        "played before refusing: {stdout}"
    );
    let err = run_err(&mut cmd);
    assert!(
        err.contains("--gif needs an env that renders frames"),
        "{err}"
    );
    assert!(err.contains("CartPole-v1"), "{err}");
    assert!(!gif.exists());
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
    // What acting reports reaches TensorBoard: the core's scale per layer and BRIMs attention.
    let tags = summary_tags(&run);
    for tag in [
        "charts/SPS",
        "losses/grad_norm_core",
        "losses/first_ratio_deviation",
        "core/layer0/h_rms",
        "core/layer1/h_spread",
        "brims/layer0/attention_entropy",
        "brims/layer1/read_rms",
    ] {
        assert!(tags.contains(tag), "no {tag} in {tags:?}");
    }
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

/// `brims bench …` with no anchor Python: neither `--python` nor `BRIMS_ANCHOR_PYTHON`.
fn bench_without_anchor() -> Command {
    let mut cmd = brims();
    cmd.env_remove("BRIMS_ANCHOR_PYTHON").arg("bench");
    cmd
}

/// A bench's JSON records what produced it, and its anchor's skip says `why`.
fn assert_provenance_and_skip(json: &serde_json::Value, bench: &str, why: &str) {
    assert_eq!(json["bench"], bench, "{json}");
    assert!(json["command"][0].is_string(), "{json}");
    assert!(
        json["date"].as_str().is_some_and(|d| d.ends_with('Z')),
        "{json}"
    );
    assert!(json["machine"]["cores"].as_u64().is_some(), "{json}");
    assert!(json.get("git_commit").is_some(), "{json}");
    let skipped = json["anchor"]["skipped"].as_str().unwrap_or_default();
    assert!(
        skipped.contains(why),
        "skip reason {skipped:?} lacks {why:?}: {json}"
    );
}

/// `bench env` and `bench core` end with the JSON the architecture names; the figures are
/// consistent with each other (not timed: only their relations are checked). Without an anchor
/// Python, EnvPool is skipped, said so, and no ratio to it is printed.
#[test]
fn bench_env_and_core_print_consistent_json() {
    let out = bench_without_anchor()
        .args([
            "env",
            "--game",
            "Breakout",
            "--envs",
            "4",
            "--threads",
            "2",
            "--seconds",
            "0.5",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("anchor skipped: envpool: no Python given"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("EnvPool ="),
        "a ratio without EnvPool: {stdout}"
    );
    assert!(!stdout.to_lowercase().contains("quoted"), "{stdout}");
    let env = last_json(&out);
    assert_provenance_and_skip(&env, "env", "BRIMS_ANCHOR_PYTHON");
    assert!(env["ratio_to_envpool"].is_null(), "{env}");
    assert!(env["envpool_frames_per_sec"].is_null(), "{env}");
    assert!(env.get("ratio_to_envpool_quoted").is_none(), "{env}");
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
        assert_provenance_and_skip(&out, "core", "no anchor");
    }
}

/// An anchor Python that does not exist is a skip that names it, not a failure; `--json`
/// writes the same object as the last line.
#[test]
fn bench_with_a_missing_python_skips_the_anchor_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cnn.json");
    let out = bench_without_anchor()
        .args([
            "cnn",
            "--batch",
            "2",
            "--iters",
            "1",
            "--python",
            "/nonexistent",
        ])
        .arg("--json")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("anchor skipped: torch: /nonexistent: cannot run /nonexistent"),
        "{stdout}"
    );
    assert!(!stdout.contains("fastconv / torch"), "{stdout}");
    let cnn = last_json(&out);
    assert_provenance_and_skip(&cnn, "cnn", "/nonexistent");
    assert!(cnn["fastconv_over_torch"].is_null(), "{cnn}");
    assert_eq!(json_file(&file), cnn);

    // The variable is read when there is no flag.
    let env = run_ok(brims().env("BRIMS_ANCHOR_PYTHON", "/nonexistent").args([
        "bench",
        "env",
        "--envs",
        "2",
        "--seconds",
        "0.2",
    ]));
    assert_provenance_and_skip(&env, "env", "cannot run /nonexistent");
    assert!(env["ratio_to_envpool"].is_null(), "{env}");

    let train = run_ok(bench_without_anchor().args([
        "train",
        "--config",
        "configs/smoke.toml",
        "--seconds",
        "1",
        "--cleanrl-iterations",
        "1",
        "--python",
        "/nonexistent",
    ]));
    assert_provenance_and_skip(&train, "train", "cannot run /nonexistent");
    assert!(train["ratio_to_cleanrl"].is_null(), "{train}");
    assert!(train["sps"].as_f64().is_some_and(|s| s > 0.0), "{train}");
}

// ---------------------------------------------------------------------------------------------
// Runs that survive anything: resume bookkeeping, signals, the run lock, checks before the
// first step. Every wait polls for a file or an exit with a deadline; nothing sleeps a fixed time.

use std::time::{Duration, Instant};

/// CartPole LSTM with 8 envs × 32 steps = 256 steps per update.
const CARTPOLE: &str = "configs/cartpole_lstm.toml";

/// What an exited child wrote to its piped stderr.
fn read_stderr(child: &mut std::process::Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// `(global_step, episodic_return)` of every row of a run's returns.csv.
fn csv_rows(run: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(run.join("returns.csv")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| l.split(',').count() == 4)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect()
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// One timeline: steps never go backwards; the summary's mean is that of the file's last 20.
fn assert_one_timeline(run: &Path) {
    let rows = csv_rows(run);
    assert!(!rows.is_empty());
    for w in rows.windows(2) {
        assert!(w[0].0 <= w[1].0, "global_step runs backwards: {w:?}");
    }
    let last: Vec<f64> = rows[rows.len().saturating_sub(20)..]
        .iter()
        .map(|r| r.1)
        .collect();
    let mean = last.iter().sum::<f64>() / last.len() as f64;
    let summary = json_file(&run.join("summary.json"));
    let reported = summary["mean_return_last_20"].as_f64().unwrap();
    assert!(
        (reported - mean).abs() < 1e-9,
        "summary {reported}, csv {mean}"
    );
    assert!(summary["sps"].as_f64().unwrap() > 0.0, "{summary}");
}

fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The session-start (purge) steps written in a run's event files, file by file.
/// Every summary tag in the run's event files.
fn summary_tags(run: &Path) -> std::collections::BTreeSet<String> {
    use tfrecord::protobuf::event::What;
    let mut tags = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(run).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().contains("tfevents") {
            continue;
        }
        let events = tfrecord::EventIter::open(&path, tfrecord::RecordReaderConfig::default())
            .unwrap()
            .map(|e| e.unwrap());
        for event in events {
            if let Some(What::Summary(summary)) = event.what {
                tags.extend(summary.value.into_iter().map(|v| v.tag));
            }
        }
    }
    tags
}

fn purge_steps(run: &Path) -> Vec<Vec<i64>> {
    use tfrecord::protobuf::event::What;
    let mut files: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("tfevents"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            tfrecord::EventIter::open(f, tfrecord::RecordReaderConfig::default())
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| matches!(e.what, Some(What::SessionLog(_))))
                .map(|e| e.step)
                .collect()
        })
        .collect()
}

/// Items 1, 2 and 8 of issue 11: a finished run is left alone; a run that lost its last
/// checkpoint (killed after logging, before writing it) resumes from the one before, with
/// returns.csv and TensorBoard cut back to it and a summary of the whole run; identical fresh
/// runs give identical returns.
#[test]
fn resume_leaves_a_finished_run_alone_and_cuts_a_run_back_to_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = [
        "total_frames=3072",
        "ppo.num_steps=32",
        "run.checkpoint_every=1",
        "run.keep_checkpoints=20",
    ];
    let a = tmp.path().join("a");
    run_ok(&mut train(CARTPOLE, &a, &sets));
    let twin = tmp.path().join("twin");
    run_ok(&mut train(CARTPOLE, &twin, &sets));
    assert_eq!(
        std::fs::read(a.join("returns.csv")).unwrap(),
        std::fs::read(twin.join("returns.csv")).unwrap(),
        "two identical fresh runs must log identical returns"
    );

    // Resuming the finished run says so and changes nothing.
    let before = dir_snapshot(&a);
    let out = brims()
        .args(["train", "--resume", "--quiet", "--run-dir"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is finished"));
    assert_eq!(last_json(&out)["frames"], 3072);
    assert_eq!(before, dir_snapshot(&a), "resume rewrote a finished run");

    // b = a as if killed after update 12 was logged but before its checkpoint was written
    // (and in the middle of writing a returns.csv line).
    let b = tmp.path().join("b");
    copy_dir(&a, &b);
    for ext in ["json", "safetensors"] {
        std::fs::remove_file(b.join(format!("checkpoints/ckpt-00000012.{ext}"))).unwrap();
    }
    std::fs::remove_file(b.join("summary.json")).unwrap();
    let mut csv = std::fs::read_to_string(b.join("returns.csv")).unwrap();
    csv.push_str("3072,3072,1");
    std::fs::write(b.join("returns.csv"), csv).unwrap();
    let ckpt11: ppo::CheckpointHeader =
        ppo::read_header(&b.join("checkpoints/ckpt-00000011.json")).unwrap();
    assert_eq!(ckpt11.global_step, 2816);

    let out = brims()
        .args(["train", "--resume", "--quiet", "--run-dir"])
        .arg(&b)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("dropped"), "{stderr}");
    assert_eq!(last_json(&out)["frames"], 3072);
    assert_one_timeline(&b);
    // Up to the checkpoint, b's record is a's; after it, b's own (fresh episodes, see README).
    let upto = |run: &Path| -> Vec<(u64, f64)> {
        csv_rows(run).into_iter().filter(|r| r.0 <= 2816).collect()
    };
    assert_eq!(upto(&a), upto(&b));
    // The summary's time covers the whole run, not only the resumed part.
    let summary = json_file(&b.join("summary.json"));
    let clock = ckpt11.clock.expect("checkpoints record the run's clock");
    assert!(summary["update_secs"].as_f64().unwrap() > clock.update_secs);
    assert!(summary["rollout_secs"].as_f64().unwrap() > clock.rollout_secs);
    // TensorBoard: the resumed process's file starts by purging steps after the checkpoint.
    assert_eq!(purge_steps(&b), vec![vec![], vec![2817]]);
}

/// Items 2, 3 and 5: kill -9 at a random point (possibly before the first checkpoint), then
/// resume at once (the OS released the lock): one timeline, the whole budget, a true summary.
#[test]
fn kill_9_at_a_random_point_then_resume_keeps_one_timeline() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let target_rows = (nanos % 200) as usize;
    eprintln!("killing after {target_rows} logged episodes");
    let mut child = Reaped(
        train(
            CARTPOLE,
            &run,
            &[
                "total_frames=8192",
                "ppo.num_steps=32",
                "run.checkpoint_every=3",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    assert!(wait_until(60, || {
        run.join("returns.csv").exists() && csv_rows(&run).len() >= target_rows
            || child.0.try_wait().unwrap().is_some()
    }));
    let _ = child.0.kill(); // SIGKILL
    child.0.wait().unwrap();

    let json = run_ok(
        brims()
            .args(["train", "--resume", "--quiet", "--run-dir"])
            .arg(&run),
    );
    assert_eq!(json["frames"], 8192);
    assert_one_timeline(&run);
}

/// Items 4, 5 and 7: SIGTERM finishes like Ctrl-C (checkpoint, exit 0, quickly); while a run
/// trains, a second trainer on its directory is refused naming the holder; compare leaves the
/// interrupted run out, naming it.
#[test]
fn sigterm_checkpoints_a_second_trainer_is_refused_and_compare_leaves_it_out() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = tmp.path().join("finished");
    run_ok(&mut train(
        CARTPOLE,
        &finished,
        &["total_frames=1024", "ppo.num_steps=32"],
    ));
    let run = tmp.path().join("long");
    let mut child = Reaped(
        train(
            CARTPOLE,
            &run,
            &[
                "total_frames=100000000",
                "ppo.num_steps=32",
                "run.checkpoint_every=100000",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    // Wait for a logged episode: an update is done (no checkpoint yet).
    assert!(wait_until(60, || !csv_rows(&run).is_empty()));

    let err = run_err(
        brims()
            .args(["train", "--resume", "--quiet", "--run-dir"])
            .arg(&run),
    );
    assert!(
        err.contains("in use") && err.contains(&format!("process {}", child.0.id())),
        "{err}"
    );

    signal(child.0.id(), "-TERM");
    let sent = Instant::now();
    let status = wait_exit(&mut child.0, 30);
    let stderr = read_stderr(&mut child.0);
    assert!(
        status.success(),
        "SIGTERM must exit 0: {status:?}\n{stderr}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
    let summary = json_file(&run.join("summary.json"));
    assert_eq!(summary["interrupted"], true);
    let frames = summary["frames"].as_u64().unwrap();
    let ckpts = checkpoints(&run);
    assert_eq!(ckpts.len(), 1, "{stderr}");
    assert_eq!(ppo::read_header(&ckpts[0]).unwrap().global_step, frames);
    assert!(
        stderr.contains(&format!(
            "interrupted at {frames} frames: checkpoint {}",
            ckpts[0].display()
        )),
        "{stderr}"
    );

    let out = brims()
        .args(["compare", "--quiet", "--out"])
        .arg(tmp.path().join("cmp"))
        .arg("--runs")
        .arg(&finished)
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("leaving out {}", run.display()))
            && stderr.contains("interrupted"),
        "{stderr}"
    );
    let report = std::fs::read_to_string(last_json(&out)["report"].as_str().unwrap()).unwrap();
    assert!(!report.contains(&run.display().to_string()), "{report}");
    // Only unfinished runs: refused.
    let err = run_err(
        brims()
            .args(["compare", "--quiet", "--out"])
            .arg(tmp.path().join("cmp2"))
            .arg("--runs")
            .arg(&run),
    );
    assert!(err.contains("none of the 1 runs"), "{err}");
}

/// Item 3: Ctrl-C before the first update says that no checkpoint was written (none was), and
/// `--resume` then starts the run from its beginning.
#[test]
fn ctrl_c_before_the_first_update_says_so_and_resume_starts_from_the_beginning() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // One update of a long (about a second) rollout.
    let sets = [
        "total_frames=32000",
        "ppo.num_envs=2",
        "ppo.num_minibatches=1",
        "ppo.num_steps=16000",
        "ppo.update_epochs=1",
    ];
    let mut child = Reaped(
        train(CARTPOLE, &run, &sets)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(60, || run.join("config.toml").exists()));
    signal(child.0.id(), "-INT");
    let status = wait_exit(&mut child.0, 30);
    let stderr = read_stderr(&mut child.0);
    assert!(status.success(), "{stderr}");
    let ckpts = checkpoints(&run);
    if ckpts.is_empty() {
        assert!(stderr.contains("no checkpoint written"), "{stderr}");
    } else {
        // The signal came late (a slow machine): the message must name the checkpoint.
        assert!(stderr.contains(&ckpts[0].display().to_string()), "{stderr}");
    }
    assert!(!stderr.contains("checkpoint written to"), "{stderr}");

    let out = brims()
        .args(["train", "--resume", "--quiet", "--run-dir"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(last_json(&out)["frames"], 32000);
    if ckpts.is_empty() {
        assert!(
            stderr.contains("starting the run from its beginning"),
            "{stderr}"
        );
    }
    assert_one_timeline(&run);
}

/// Items 3 and 6: a start that fails (unknown game, more active modules than modules, more
/// memory than the machine has) leaves no run directory behind.
#[test]
fn failed_starts_leave_nothing_and_oversized_runs_are_refused_with_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let err = run_err(&mut train(
        "configs/smoke.toml",
        &run,
        &["env.game=\"Breakot\""],
    ));
    assert!(err.contains("Breakout"), "{err}");
    assert!(!run.exists(), "a failed start left {}", run.display());

    let err = run_err(&mut train(
        "configs/cartpole_brims.toml",
        &run,
        &["network.core.layers=[{hidden_size = 64, modules = 4, active = 5}]"],
    ));
    assert!(err.contains("active") || err.contains('5'), "{err}");
    assert!(!run.exists(), "a failed start left {}", run.display());

    let err = run_err(&mut train(
        "configs/smoke.toml",
        &run,
        &["ppo.num_envs=1000000", "total_frames=256000000"],
    ));
    assert!(
        err.contains("memory") && err.contains("GiB") && err.contains("available"),
        "{err}"
    );
    // The update's minibatch is counted (issue 24, item 6).
    assert!(err.contains("update") && err.contains("minibatch"), "{err}");
    assert!(!run.exists(), "a refused start left {}", run.display());
}

/// Writes NaN into the first value of `tensor` of a checkpoint (fixing the header's byte
/// count, so only the value is wrong).
fn poison_checkpoint(header: &Path, tensor: &str) {
    use candle_core::{Device, Tensor};
    let h = ppo::read_header(header).unwrap();
    let file = header.parent().unwrap().join(&h.tensors_file);
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let t = &tensors[tensor];
    let mut values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values[0] = f32::NAN;
    let poisoned = Tensor::from_vec(values, t.dims(), &Device::Cpu).unwrap();
    tensors.insert(tensor.to_string(), poisoned);
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let text = std::fs::read_to_string(header).unwrap();
    let old = format!("\"tensors_bytes\": {}", h.tensors_bytes);
    let new = format!(
        "\"tensors_bytes\": {}",
        std::fs::metadata(&file).unwrap().len()
    );
    std::fs::write(header, text.replace(&old, &new)).unwrap();
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// Item 6: eval and resume refuse a checkpoint of another game (another action count) and a
/// checkpoint with non-finite weights.
#[test]
fn eval_and_resume_refuse_another_games_checkpoint_and_non_finite_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("breakout");
    run_ok(&mut train(
        "configs/smoke.toml",
        &run,
        &[
            "total_frames=64",
            "ppo.num_envs=2",
            "ppo.num_steps=8",
            "ppo.num_minibatches=1",
            "actors.threads=1",
        ],
    ));
    let eval = |dir: &Path| {
        let mut cmd = brims();
        cmd.args(["eval", "--episodes", "1", "--checkpoint"])
            .arg(dir);
        cmd
    };
    let resume = |dir: &Path| {
        let mut cmd = brims();
        cmd.args(["train", "--resume", "--quiet", "--run-dir"])
            .arg(dir);
        cmd
    };

    // The run's config now says Pong (6 actions); the policy has Breakout's 4.
    let pong = tmp.path().join("pong");
    copy_dir(&run, &pong);
    edit(
        &pong.join("config.toml"),
        "game = \"Breakout\"",
        "game = \"Pong\"",
    );
    edit(
        &pong.join("config.toml"),
        "total_frames = 64",
        "total_frames = 128",
    );
    for mut cmd in [eval(&pong), resume(&pong)] {
        let err = run_err(&mut cmd);
        assert!(
            err.contains("4 actions") && err.contains("Pong has 6"),
            "{err}"
        );
    }

    // A NaN weight.
    let nan = tmp.path().join("nan");
    copy_dir(&run, &nan);
    edit(
        &nan.join("config.toml"),
        "total_frames = 64",
        "total_frames = 128",
    );
    let header = checkpoints(&nan).pop().unwrap();
    poison_checkpoint(&header, "model.policy.weight");
    for mut cmd in [eval(&nan), resume(&nan)] {
        let err = run_err(&mut cmd);
        assert!(err.contains("non-finite"), "{err}");
    }
}

/// Issue 24 item 4: a truncated newest checkpoint is passed over, with one line naming it and
/// why, by eval and by --resume, which continue from the newest one that loads; a temp file a
/// kill left in checkpoints/ is removed by the resume.
#[test]
fn a_truncated_newest_checkpoint_falls_back_to_the_one_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // 3 updates of 8 envs × 32 steps, a checkpoint after each.
    run_ok(&mut train(
        CARTPOLE,
        &run,
        &[
            "total_frames=768",
            "ppo.num_envs=8",
            "ppo.num_steps=32",
            "run.checkpoint_every=1",
            "run.keep_checkpoints=3",
            "actors.threads=1",
        ],
    ));
    edit(
        &run.join("config.toml"),
        "total_frames = 768",
        "total_frames = 1024",
    );
    let all = checkpoints(&run);
    assert_eq!(all.len(), 3, "{all:?}");
    let (older, newest) = (&all[1], &all[2]);
    let tensors = newest.with_extension("safetensors");
    let bytes = std::fs::read(&tensors).unwrap();
    std::fs::write(&tensors, &bytes[..bytes.len() / 2]).unwrap();
    let stale = run.join("checkpoints/ckpt-00000004.safetensors.tmp");
    std::fs::write(&stale, &bytes[..100]).unwrap();

    let out = brims()
        .args(["eval", "--episodes", "1", "--checkpoint"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let note: Vec<&str> = stderr.lines().filter(|l| l.contains("using")).collect();
    assert_eq!(note.len(), 1, "{stderr}");
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        note[0].contains(&name(older)) && note[0].contains(&name(newest)),
        "{stderr}"
    );
    assert!(note[0].contains("truncated"), "{stderr}");
    assert!(stale.exists(), "eval holds no lock: it must not clean up");

    let out = brims()
        .args(["train", "--resume", "--quiet", "--run-dir"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("removed") && stderr.contains("ckpt-00000004.safetensors.tmp"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("resuming from {}", older.display())),
        "{stderr}"
    );
    assert!(!stale.exists());
    assert_eq!(last_json(&out)["frames"], 1024);
    // Updates 3 and 4 were (re)written: every checkpoint on disk loads again.
    for header in checkpoints(&run) {
        run_ok(
            brims()
                .args(["eval", "--episodes", "1", "--checkpoint"])
                .arg(&header),
        );
    }
    assert_one_timeline(&run);
}

/// Issue 24 item 11: a checkpoint says which game it was trained on, so a Breakout checkpoint
/// is refused by a run on Atlantis (also 4 actions); it carries its config, so a copy outside
/// its run directory evaluates; a checkpoint without the embedded config (an older build's)
/// still evaluates from its run's config.toml.
#[test]
fn checkpoints_describe_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("breakout");
    run_ok(&mut train(
        "configs/smoke.toml",
        &run,
        &[
            "total_frames=64",
            "ppo.num_envs=2",
            "ppo.num_steps=8",
            "ppo.num_minibatches=1",
            "actors.threads=1",
        ],
    ));
    let header = checkpoints(&run).pop().unwrap();

    let atlantis = tmp.path().join("atlantis");
    copy_dir(&run, &atlantis);
    edit(
        &atlantis.join("config.toml"),
        "game = \"Breakout\"",
        "game = \"Atlantis\"",
    );
    edit(
        &atlantis.join("config.toml"),
        "total_frames = 64",
        "total_frames = 128",
    );
    let mut resume = brims();
    resume
        .args(["train", "--resume", "--quiet", "--run-dir"])
        .arg(&atlantis);
    let mut eval_atlantis = brims();
    eval_atlantis
        .args(["eval", "--episodes", "1", "--checkpoint"])
        .arg(&atlantis);
    for mut cmd in [resume, eval_atlantis] {
        let err = run_err(&mut cmd);
        assert!(
            err.contains("trained on Breakout") && err.contains("Atlantis"),
            "{err}"
        );
    }

    // Copied out of its run directory: both files, evaluated through the tensors file.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let tensors = header.with_extension("safetensors");
    for file in [&header, &tensors] {
        std::fs::copy(file, elsewhere.join(file.file_name().unwrap())).unwrap();
    }
    let json = run_ok(
        brims()
            .args(["eval", "--episodes", "1", "--checkpoint"])
            .arg(elsewhere.join(tensors.file_name().unwrap())),
    );
    assert_eq!(json["episodes"], 1);

    // Without the embedded config (as an older build wrote it): from ../config.toml as before,
    // and refused with one line outside a run directory.
    let strip = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        let at = text
            .find(",\n  \"run_config\"")
            .expect("an embedded config");
        std::fs::write(path, format!("{}\n}}", &text[..at])).unwrap();
        ppo::read_header(path).unwrap();
    };
    strip(&header);
    let old_copy = elsewhere.join(header.file_name().unwrap());
    strip(&old_copy);
    let json = run_ok(
        brims()
            .args(["eval", "--episodes", "1", "--checkpoint"])
            .arg(&header),
    );
    assert_eq!(json["episodes"], 1);
    let err = run_err(
        brims()
            .args(["eval", "--episodes", "1", "--checkpoint"])
            .arg(&old_copy),
    );
    assert!(err.contains("records no run config"), "{err}");
}

/// Item 5 of issue 24: a budget that is not a whole number of updates is rounded down (CleanRL's
/// `total_timesteps // batch_size`) with a one-line warning, and the run that trains it is
/// finished; a budget under one update is refused before any run directory exists.
#[test]
fn budgets_round_down_to_whole_updates_and_under_one_update_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // 8 envs × 32 steps = 256 frames an update: 868 frames buy 3 updates (768 frames).
    let out = train(CARTPOLE, &run, &["total_frames=868", "ppo.num_steps=32"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(last_json(&out)["frames"], 768, "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("total_frames = 868") && warnings[0].contains("3 updates"),
        "{stderr}"
    );
    let last = checkpoints(&run).pop().unwrap();
    assert_eq!(json_file(&last)["updates"], 3);
    // The rounded budget is the whole run: a resume says it is finished.
    let out = brims()
        .args(["train", "--resume", "--quiet", "--run-dir"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is finished (768 of 768 frames)"),
        "{stderr}"
    );

    for budget in ["total_frames=1", "total_frames=255"] {
        let fresh = tmp.path().join(budget);
        let err = run_err(&mut train(CARTPOLE, &fresh, &[budget, "ppo.num_steps=32"]));
        assert!(
            err.contains("less than one update") && err.contains("256"),
            "{err}"
        );
        assert!(!fresh.exists(), "a refused start left {}", fresh.display());
    }
}

/// Item 8 of issue 24: a resume stopped before its first update adds none of its time to the
/// run's steps/s (it did no work that was kept).
#[test]
fn a_resume_stopped_before_its_first_update_keeps_the_runs_steps_per_second() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // Two updates of a long (about a second) rollout, a checkpoint after each.
    let sets = [
        "total_frames=64000",
        "ppo.num_envs=2",
        "ppo.num_minibatches=1",
        "ppo.num_steps=16000",
        "ppo.update_epochs=1",
        "run.checkpoint_every=1",
    ];
    run_ok(&mut train(CARTPOLE, &run, &sets));
    // Make it a run stopped after its first update: drop the second checkpoint and the summary.
    let last = checkpoints(&run).pop().unwrap();
    assert!(
        last.to_string_lossy().contains("ckpt-00000002"),
        "{}",
        last.display()
    );
    std::fs::remove_file(&last).unwrap();
    std::fs::remove_file(last.with_extension("safetensors")).unwrap();
    std::fs::remove_file(run.join("summary.json")).unwrap();
    let first = json_file(&checkpoints(&run)[0]);
    let clock = &first["clock"];
    let sps_at_checkpoint = clock["steps"].as_f64().unwrap() / clock["wall_secs"].as_f64().unwrap();

    let mut child = Reaped(
        brims()
            .args(["train", "--resume", "--quiet", "--run-dir"])
            .arg(&run)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The resume holds the run's lock (its stop signals are installed by then): stop it.
    let pid = child.0.id().to_string();
    assert!(wait_until(60, || std::fs::read_to_string(
        run.join("run.lock")
    )
    .is_ok_and(|s| s.trim() == pid)));
    signal(child.0.id(), "-INT");
    let status = wait_exit(&mut child.0, 60);
    let stderr = read_stderr(&mut child.0);
    assert!(status.success(), "{stderr}");
    if checkpoints(&run).len() > 1 {
        eprintln!("the signal came after the resume's first update (a slow machine): no check");
        return;
    }
    let summary = json_file(&run.join("summary.json"));
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["frames"], 32000);
    let sps = summary["sps"].as_f64().unwrap();
    assert!(
        (sps - sps_at_checkpoint).abs() <= 1e-9 * sps_at_checkpoint,
        "summary {sps} steps/s, the checkpoint's {sps_at_checkpoint}: {stderr}"
    );
}

/// Item 9 of issue 24: argument errors are one line with clap's exit code 2 (`--help` is not
/// an error), and a mistyped `--set` key is blamed on the `--set`, with the nearest key.
#[test]
fn argument_errors_are_one_line_and_a_mistyped_set_key_gets_a_suggestion() {
    for (args, want) in [
        (&["play", "--game", "Pong", "--episodes", "-1"][..], "'-1'"),
        (
            &["train", "--confg", "configs/smoke.toml"][..],
            "'--config'",
        ),
        (&["trian"][..], "'trian'"),
    ] {
        let out = brims().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(want),
            "{stderr}"
        );
    }
    let help = brims().args(["train", "--help"]).output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).lines().count() > 5);

    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let err = run_err(&mut train(CARTPOLE, &run, &["ppo.lerning_rate=1e-4"]));
    assert!(
        err.starts_with("error: --set ppo.lerning_rate=1e-4: unknown key")
            && err.contains("did you mean `ppo.learning_rate`?"),
        "{err}"
    );
    assert!(!err.contains(CARTPOLE), "blames the file: {err}");
    assert!(!run.exists());
}

/// Items 7 and 12 of issue 24: a NaN or infinite float is refused naming its key, and a
/// Gymnasium id whose settings the config does not have is refused naming them; neither leaves
/// a run directory.
#[test]
fn non_finite_floats_and_gymnasium_ids_the_config_contradicts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let err = run_err(&mut train(
        "configs/breakout_brims.toml",
        &run,
        &["network.core.attention_init_gain=nan"],
    ));
    assert!(
        err.contains("network.core.attention_init_gain = NaN") && err.contains("finite"),
        "{err}"
    );
    assert!(!run.exists());
    let err = run_err(&mut train(CARTPOLE, &run, &["ppo.ent_coef=inf"]));
    assert!(err.contains("ppo.ent_coef = inf"), "{err}");
    assert!(!run.exists());

    // smoke.toml keeps the defaults (sticky actions 0.25, 108,000-frame episodes).
    let err = run_err(&mut train(
        "configs/smoke.toml",
        &run,
        &["env.game=PongNoFrameskip-v4"],
    ));
    assert!(
        err.contains("PongNoFrameskip-v4")
            && err.contains("repeat_action_probability = 0.0")
            && err.contains("max_episode_frames = 400000"),
        "{err}"
    );
    assert!(!run.exists());
}
