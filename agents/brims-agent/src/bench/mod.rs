//! `brims bench …`: each prints human-readable lines, then one JSON object as its last line
//! (also written to `--json PATH`). Every JSON records what produced it ([`provenance`]):
//! scripts/benchmarks_md.py turns such files into docs/benchmarks.md.

pub(crate) mod anchor;
pub(crate) mod cnn;
pub(crate) mod core;
pub(crate) mod env;
pub(crate) mod peak;
pub(crate) mod train;

use std::time::SystemTime;

use serde_json::{json, Value};

/// Adds what produced a bench's figures to its JSON: `bench` (its name), `command` (the
/// command line), `date` (UTC, ISO 8601), `git_commit` and `git_dirty` (the revision the
/// binary was built from and whether the tree had changes then, as run.json records them),
/// `machine` (cores, CPU model) and, for a bench
/// without one, an `anchor` that says so.
pub(crate) fn provenance(bench: &str, json: &mut Value) {
    json["bench"] = json!(bench);
    json["command"] = json!(std::env::args().collect::<Vec<_>>());
    json["date"] = json!(iso_utc(SystemTime::now()));
    json["git_commit"] = json!(crate::run::dir::build_revision());
    json["git_dirty"] = json!(env!("BRIMS_GIT_DIRTY") == "true");
    json["machine"] = machine();
    if json.get("anchor").is_none() {
        json["anchor"] = json!({"name": null, "skipped": "this bench has no anchor"});
    }
}

/// Cores this process may use, the CPU model, its flags of interest and the kernel's idea of
/// the logical CPUs.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let flags = field("flags").unwrap_or_default();
    let simd: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|g| g == *f))
        .collect();
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "logical_cpus": cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
        "cpu_model": field("model name"),
        "simd": simd,
    })
}

/// `YYYY-mm-ddTHH:MM:SSZ`.
fn iso_utc(time: SystemTime) -> String {
    let stamp = crate::run::dir::utc_stamp(time); // YYYYmmdd-HHMMSS
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn iso_dates() {
        // 2026-11-28 09:13:27 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_795_857_207);
        assert_eq!(iso_utc(t), "2026-11-28T09:13:27Z");
    }

    #[test]
    fn provenance_records_command_date_machine() {
        let mut v = json!({"x": 1});
        provenance("env", &mut v);
        assert_eq!(v["bench"], "env");
        assert!(v["command"].as_array().is_some_and(|a| !a.is_empty()));
        assert!(v["date"].as_str().is_some_and(|d| d.ends_with('Z')));
        assert!(v["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
        assert_eq!(v["x"], 1);
    }
}
