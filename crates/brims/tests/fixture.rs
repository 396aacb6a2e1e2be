//! The reference fixture (../shared/fixtures/brims) through the library's checker, plus the
//! checker's typed errors on broken fixtures.

use std::path::PathBuf;

use brims::{check_fixture, BrimsError};

/// The repository's copy (`<repo>/fixtures`), else the shared folder beside the repository
/// (`<repo>/../shared/fixtures`): the nearest ancestor holding either wins.
fn fixture() -> PathBuf {
    let rel = "fixtures/brims/reference_small.safetensors";
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .flat_map(|a| [a.join(rel), a.join("shared").join(rel)])
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{rel} not found above {}", manifest.display()))
}

#[test]
fn reference_small_matches_every_case() {
    let report = check_fixture(&fixture()).unwrap();
    let names: Vec<&str> = report.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["rand", "rand_f64", "zero"]);
    for case in &report.cases {
        assert!(
            case.compared > 100,
            "{}: only {} tensors",
            case.name,
            case.compared
        );
        assert!(case.mask_mismatches.is_empty(), "{case:?}");
        assert!(case.max_abs_err <= case.tolerance, "{case:?}");
    }
    assert!(report.passed());
}

fn copy_fixture(json: Option<String>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("f.safetensors");
    std::fs::copy(fixture(), &st).unwrap();
    if let Some(json) = json {
        std::fs::write(dir.path().join("f.json"), json).unwrap();
    }
    (dir, st)
}

fn reference_json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture().with_extension("json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn missing_json_is_a_typed_error() {
    let (_dir, st) = copy_fixture(None);
    assert!(matches!(
        check_fixture(&st),
        Err(BrimsError::FixtureJson { .. })
    ));
}

#[test]
fn json_disagreeing_with_tensors_is_a_typed_error() {
    let mut json = reference_json();
    json["config"]["num_blocks"] = serde_json::json!([4, 2]);
    let (_dir, st) = copy_fixture(Some(json.to_string()));
    let err = check_fixture(&st).unwrap_err();
    assert!(matches!(err, BrimsError::WeightShape { .. }), "{err}");

    let mut json = reference_json();
    json["tensors"]["case.rand.emb"]["shape"] = serde_json::json!([5, 3, 17]);
    let (_dir, st) = copy_fixture(Some(json.to_string()));
    let err = check_fixture(&st).unwrap_err();
    assert!(
        matches!(&err, BrimsError::WeightShape { name, .. } if name == "case.rand.emb"),
        "{err}"
    );

    let mut json = reference_json();
    json["config"]["topk"] = serde_json::json!([2, 5]);
    let (_dir, st) = copy_fixture(Some(json.to_string()));
    assert!(matches!(
        check_fixture(&st),
        Err(BrimsError::ActiveOutOfRange { layer: 1, .. })
    ));
}

/// A different selection (k) must be caught as differing masks, not pass silently.
#[test]
fn wrong_active_count_fails_the_masks() {
    let mut json = reference_json();
    json["config"]["topk"] = serde_json::json!([3, 2]);
    let (_dir, st) = copy_fixture(Some(json.to_string()));
    let report = check_fixture(&st).unwrap();
    assert!(!report.passed());
    assert!(report.cases.iter().all(|c| !c.mask_mismatches.is_empty()));
}
