//! `brims analyze` end to end: a short BRIMs training run on Breakout (the smoke config), then
//! the analysis of its checkpoint; and the inputs it must refuse.

use std::path::Path;
use std::process::{Command, Output};

fn brims(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brims"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .args(args)
        .output()
        .unwrap()
}

fn train(config: &str, dir: &Path, frames: &str) {
    let o = brims(&[
        "train",
        "--config",
        config,
        "--run-dir",
        dir.to_str().unwrap(),
        "--quiet",
        "--set",
        &format!("total_frames={frames}"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn fails_with(args: &[&str], want: &str) {
    let o = brims(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(want), "{args:?}: {err}");
}

#[test]
fn analyze_writes_the_report_and_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("smoke");
    train("configs/smoke.toml", &run, "4096");
    let out = tmp.path().join("analysis");
    let o = brims(&[
        "analyze",
        run.to_str().unwrap(),
        "--episodes",
        "2",
        "--max-steps",
        "150",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let json: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(json["layers"], 2);
    let analysis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("analysis.json")).unwrap()).unwrap();
    let layers = analysis["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for l in layers {
        let rate = l["switch_rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&rate), "{l}");
        let usage: f64 = l["usage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_f64().unwrap())
            .sum();
        // Each step activates exactly `active` modules: usage sums to it (smoke: 2 and 1).
        assert!(
            (usage - [2.0, 1.0][l["layer"].as_u64().unwrap() as usize]).abs() < 1e-9,
            "{l}"
        );
    }
    assert_eq!(analysis["claims"].as_array().unwrap().len(), 2);
    assert!(analysis["steps"].as_u64().unwrap() > 0);
    let md = std::fs::read_to_string(out.join("analysis.md")).unwrap();
    assert!(md.contains("switches less often") && md.contains("raster.png"));
    let png = std::fs::read(out.join("raster.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // Issue 24, 16: active modules are drawn in the colour of every activity picture.
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let active = buf[..info.buffer_size()]
        .chunks(info.color_type.samples())
        .filter(|p| p[..3] == telemetry::ACTIVE_COLOUR)
        .count();
    assert!(
        active > 100,
        "{active} pixels of the active colour in the raster"
    );

    // Bad input: an existing output directory, no episodes, a missing or truncated checkpoint,
    // an LSTM checkpoint.
    fails_with(
        &[
            "analyze",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "--force",
    );
    fails_with(
        &["analyze", run.to_str().unwrap(), "--episodes", "0"],
        "--episodes",
    );
    fails_with(
        &["analyze", tmp.path().join("nope").to_str().unwrap()],
        "does not exist",
    );
    let ckpt = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .unwrap();
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let truncated = brims(&[
        "analyze",
        ckpt.to_str().unwrap(),
        "--out",
        tmp.path().join("a2").to_str().unwrap(),
    ]);
    assert!(!truncated.status.success());
    assert_eq!(
        String::from_utf8_lossy(&truncated.stderr)
            .trim()
            .lines()
            .count(),
        1
    );
    let lstm = tmp.path().join("lstm");
    train("configs/cartpole_lstm.toml", &lstm, "1024");
    fails_with(&["analyze", lstm.to_str().unwrap()], "not a BRIMs agent");
}

/// All files under `dir` with their contents.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
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

/// Issue 24 item 1: `--force` replaces an earlier analysis, never a run directory, the
/// working directory or a directory that holds anything analyze did not write.
#[test]
fn force_replaces_only_what_analyze_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("brims");
    train("configs/cartpole_brims.toml", &run, "1024");
    let analyze = |cwd: &Path, out: &str| {
        Command::new(env!("CARGO_BIN_EXE_brims"))
            .current_dir(cwd)
            .args(["analyze", run.to_str().unwrap(), "--episodes", "1"])
            .args(["--max-steps", "20", "--out", out, "--force"])
            .output()
            .unwrap()
    };
    let refused = |o: &Output, want: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "succeeded: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    };

    // The run directory itself.
    let before = snapshot(&run);
    refused(&analyze(tmp.path(), run.to_str().unwrap()), "not one");
    assert_eq!(snapshot(&run), before);

    // The working directory, holding someone's file.
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("notes.txt"), "mine").unwrap();
    refused(&analyze(&work, "."), "not one");
    assert_eq!(
        std::fs::read_to_string(work.join("notes.txt")).unwrap(),
        "mine"
    );

    // An earlier analysis is replaced; once it holds a file of someone else's, it is not.
    let out = tmp.path().join("analysis");
    for _ in 0..2 {
        let o = analyze(tmp.path(), out.to_str().unwrap());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.join(".brims-analysis").is_file() && out.join("analysis.json").is_file());
    }
    std::fs::write(out.join("mine.txt"), "keep").unwrap();
    refused(&analyze(tmp.path(), out.to_str().unwrap()), "mine.txt");
    assert_eq!(
        std::fs::read_to_string(out.join("mine.txt")).unwrap(),
        "keep"
    );
    assert!(out.join("analysis.json").is_file());
}

/// `brims lesion` end to end on a tiny CartPole BRIMs run: one row per condition, the intact
/// row's change exactly 0, every row over the same number of episodes, the same numbers when
/// run again (same episode seeds), and an existing output directory refused.
#[test]
fn lesion_plays_every_condition_on_the_same_episodes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("cartpole");
    train("configs/cartpole_brims.toml", &run, "1024");
    let lesion = |out: &Path| {
        brims(&[
            "lesion",
            run.to_str().unwrap(),
            "--episodes",
            "10",
            "--max-steps",
            "40",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        let o = lesion(out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("lesions.json")).unwrap()).unwrap()
    };
    let (ja, jb) = (read(&a), read(&b));
    assert_eq!(
        ja["rows"], jb["rows"],
        "the same episodes give the same scores"
    );
    let rows = ja["rows"].as_array().unwrap();
    let core: toml::Table =
        toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    let layers = core["network"]["core"]["layers"].as_array().unwrap();
    let modules: i64 = layers
        .iter()
        .map(|l| l["modules"].as_integer().unwrap())
        .sum();
    // intact, 3 top-down, frozen upper (two layers or more), all active, each module masked.
    let expected = 1 + 3 + usize::from(layers.len() >= 2) + 1 + modules as usize;
    assert_eq!(rows.len(), expected, "{rows:?}");
    assert_eq!(rows[0]["condition"], "intact");
    assert_eq!(rows[0]["change"], 0.0);
    for r in rows {
        assert_eq!(r["scores"].as_array().unwrap().len(), 10, "{r}");
        let (lo, hi) = (
            r["interval"][0].as_f64().unwrap(),
            r["interval"][1].as_f64().unwrap(),
        );
        let change = r["change"].as_f64().unwrap();
        assert!(lo <= change + 1e-9 && change <= hi + 1e-9, "{r}");
    }
    fails_with(
        &[
            "lesion",
            run.to_str().unwrap(),
            "--out",
            a.to_str().unwrap(),
        ],
        "exists",
    );
}

/// `brims probe` end to end on a tiny Pong BRIMs run: a probe per target and representation
/// (the CNN features and both layers), AUCs in [0, 1], every fold scored, and the claim stated.
#[test]
fn probe_fits_every_target_on_every_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("pong");
    let o = brims(&[
        "train",
        "--config",
        "configs/smoke.toml",
        "--run-dir",
        run.to_str().unwrap(),
        "--quiet",
        "--set",
        "env.game=Pong",
        "--set",
        "total_frames=4096",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = tmp.path().join("probes");
    let o = brims(&[
        "probe",
        run.to_str().unwrap(),
        "--episodes",
        "4",
        "--folds",
        "2",
        "--max-steps",
        "700",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("probes.json")).unwrap()).unwrap();
    let cells = json["cells"].as_array().unwrap();
    let reps: std::collections::BTreeSet<&str> = cells
        .iter()
        .map(|c| c["representation"].as_str().unwrap())
        .collect();
    assert_eq!(
        reps.into_iter().collect::<Vec<_>>(),
        ["CNN features", "layer 0 h", "layer 1 h"]
    );
    let targets: std::collections::BTreeSet<&str> = cells
        .iter()
        .map(|c| c["target"].as_str().unwrap())
        .collect();
    // A random Pong agent concedes a point every ~100 steps: every target can be scored.
    assert_eq!(targets.len(), 5, "{targets:?}");
    for c in cells {
        // Points won are rare for an untrained agent: a fold without one cannot be scored.
        let folds = c["cv"]["folds"].as_u64().unwrap();
        assert!(
            folds == 2 || (folds == 1 && c["target"] == "points won, next 200 steps"),
            "{c}"
        );
        if c["score"] == "AUC" {
            let auc = c["cv"]["mean"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&auc), "{c}");
        }
    }
    assert!(json["claim"].as_str().unwrap().contains("hold"));
    fails_with(
        &[
            "probe",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "exists",
    );
}
