//! Run directories: `runs/<name>-<UTC time>/` holding the effective config, what produced the
//! run (seed, git revision, crate versions), checkpoints and TensorBoard event files.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

/// File names inside a run directory.
pub(crate) const CONFIG_FILE: &str = "config.toml";
pub(crate) const META_FILE: &str = "run.json";
pub(crate) const CHECKPOINT_DIR: &str = "checkpoints";

/// Picks the run directory: the one given, or `runs/<name>-<UTC time>`.
pub(crate) fn choose(explicit: Option<&Path>, name: &str) -> PathBuf {
    match explicit {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("runs").join(format!("{name}-{}", utc_stamp(SystemTime::now()))),
    }
}

/// Creates a fresh run directory, or checks that a resumed one holds a run.
///
/// A directory that already exists is refused unless `resume` is set, so nothing a previous run
/// wrote is ever overwritten by accident; `resume` on a directory without a run is refused too.
pub(crate) fn prepare(dir: &Path, resume: bool) -> anyhow::Result<()> {
    let exists = dir.exists();
    match (exists, resume) {
        (true, false) => bail!(
            "run directory {} already exists; pass --resume to continue it, or choose another --run-dir",
            dir.display()
        ),
        (false, true) => bail!("--resume: run directory {} does not exist", dir.display()),
        (true, true) => {
            if !dir.join(CONFIG_FILE).is_file() {
                bail!("--resume: {} holds no {CONFIG_FILE}; is it a run directory?", dir.display());
            }
        }
        (false, false) => {
            std::fs::create_dir_all(dir.join(CHECKPOINT_DIR))
                .with_context(|| format!("cannot create run directory {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// What produced a run: recorded once in `run.json`.
pub(crate) fn metadata(seed: u64, config_source: &str) -> serde_json::Value {
    serde_json::json!({
        "seed": seed,
        "config_source": config_source,
        "git_revision": git_revision(),
        "brims_version": env!("CARGO_PKG_VERSION"),
        "dependencies": env!("BRIMS_DEP_VERSIONS").split(',').collect::<Vec<_>>(),
        "command": std::env::args().collect::<Vec<_>>(),
        "started_utc": utc_stamp(SystemTime::now()),
    })
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `YYYYmmdd-HHMMSS` in UTC.
pub(crate) fn utc_stamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil conversion (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_stamp_matches_known_dates() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101-000000");
        // 2026-11-28 09:13:27 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_795_857_207);
        assert_eq!(utc_stamp(t), "20261128-091327");
        // 2024-02-29 23:59:59 UTC (leap day)
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(utc_stamp(t), "20240229-235959");
    }

    #[test]
    fn existing_dir_is_refused_without_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        prepare(&dir, false).unwrap();
        assert!(dir.join(CHECKPOINT_DIR).is_dir());
        std::fs::write(dir.join(CONFIG_FILE), "x").unwrap();
        let err = prepare(&dir, false).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        prepare(&dir, true).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(), "x");
        let err = prepare(&tmp.path().join("nope"), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
