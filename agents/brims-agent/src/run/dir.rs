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

/// The advisory lock file of a run directory: the process training the run holds an exclusive
/// `flock` on it (the OS releases it when the process ends, however it ends) and writes its pid.
pub(crate) const LOCK_FILE: &str = "run.lock";
/// The per-run CSV of finished episodes (`compare` reads it).
pub(crate) const RETURNS_FILE: &str = "returns.csv";
/// Its header line.
pub(crate) const RETURNS_HEADER: &str = "global_step,frames,episodic_return,episodic_length";

/// Checks, without writing anything, that a new run may go to `dir` (it must not exist).
pub(crate) fn check_new(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        bail!(
            "run directory {} already exists; pass --resume to continue it, or choose another --run-dir",
            dir.display()
        );
    }
    Ok(())
}

/// Checks, without writing anything, that `dir` holds a run to resume.
pub(crate) fn check_resumable(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        bail!("--resume: run directory {} does not exist", dir.display());
    }
    if !dir.join(CONFIG_FILE).is_file() {
        bail!(
            "--resume: {} holds no {CONFIG_FILE}; is it a run directory?",
            dir.display()
        );
    }
    Ok(())
}

/// Creates a new run directory, locked, holding `meta` (run.json), the effective config
/// (config.toml) and an empty checkpoints/. It is built under a temporary name next to `dir`
/// and renamed into place, so `dir` either does not exist or is a complete start that
/// `--resume` can begin (a kill at any moment leaves no half-made run directory). Fails if
/// `dir` exists, even if another process created it a moment ago.
pub(crate) fn create(
    dir: &Path,
    config_toml: &str,
    meta: &serde_json::Value,
) -> anyhow::Result<RunLock> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let name = dir
        .file_name()
        .with_context(|| format!("{} is not a directory name", dir.display()))?;
    let tmp = parent.join(format!(
        ".{}.starting-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let built = (|| -> anyhow::Result<RunLock> {
        std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let lock = RunLock::acquire(&tmp)?;
        std::fs::create_dir(tmp.join(CHECKPOINT_DIR))
            .with_context(|| format!("cannot create {}", tmp.join(CHECKPOINT_DIR).display()))?;
        write_atomic(
            &tmp.join(META_FILE),
            serde_json::to_string_pretty(meta)?.as_bytes(),
        )?;
        write_atomic(&tmp.join(CONFIG_FILE), config_toml.as_bytes())?;
        check_new(dir)?;
        // Renaming onto a non-empty directory fails: a run created meanwhile is never replaced.
        std::fs::rename(&tmp, dir).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTEMPTY | libc::EEXIST) => anyhow::anyhow!(
                "run directory {} already exists; pass --resume to continue it, or choose another --run-dir",
                dir.display()
            ),
            _ => anyhow::Error::new(e)
                .context(format!("cannot create run directory {}", dir.display())),
        })?;
        // The lock is on the file, which moved with the directory.
        Ok(lock)
    })();
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    built
}

/// An exclusive advisory lock on a directory (a run's `run.lock`, a sweep's `sweep.lock`),
/// held while the value lives (and released by the OS when the process dies, so a `kill -9`
/// never leaves a stale lock).
pub(crate) struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Locks `dir/run.lock` (creating it), or fails naming the process that holds it.
    pub(crate) fn acquire(dir: &Path) -> anyhow::Result<RunLock> {
        Self::acquire_file(&dir.join(LOCK_FILE), |holder, path| {
            format!(
                "run directory {} is in use: {holder} is training it (it holds {}); \
                 wait for it to finish or stop it first",
                dir.display(),
                path.display()
            )
        })
    }

    /// Locks the file `path` (creating it) and writes this process's pid into it; if another
    /// process holds it, fails with `in_use(holder, path)`, the holder named by its pid.
    pub(crate) fn acquire_file(
        path: &Path,
        in_use: impl FnOnce(&str, &Path) -> String,
    ) -> anyhow::Result<RunLock> {
        use std::io::{Seek, Write};
        let path = path.to_path_buf();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a descriptor we own; the lock lives as long as the file.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::WouldBlock {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let holder = match holder.trim().parse::<u32>() {
                        Ok(pid) => format!("process {pid}"),
                        Err(_) => "another process".to_string(),
                    };
                    bail!("{}", in_use(&holder, &path));
                }
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(RunLock { _file: file })
    }
}

/// What is left of returns.csv after [`cut_returns`].
pub(crate) struct KeptReturns {
    /// Episodic returns of the rows kept, in order.
    pub returns: Vec<f64>,
    /// Rows dropped: logged after the step, or malformed (a line cut short by a kill).
    pub dropped: usize,
}

/// Cuts the run's returns.csv back to `max_step`: rows logged at a `global_step` after it (by
/// a process that died before its next checkpoint), and malformed or unterminated lines, are
/// dropped (the file is rewritten atomically, only if something is dropped). A missing file
/// or header is (re)created.
pub(crate) fn cut_returns(dir: &Path, max_step: u64) -> anyhow::Result<KeptReturns> {
    let path = dir.join(RETURNS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut kept = String::with_capacity(text.len());
    kept.push_str(RETURNS_HEADER);
    kept.push('\n');
    let mut returns = Vec::new();
    let mut dropped = 0;
    let mut lines = text.split_inclusive('\n');
    let header_ok = lines
        .next()
        .is_some_and(|h| h.trim_end() == RETURNS_HEADER && h.ends_with('\n'));
    for line in lines {
        let parsed = line.strip_suffix('\n').and_then(|l| {
            let f: Vec<&str> = l.split(',').collect();
            match f.as_slice() {
                [step, frames, ret, len] => Some((
                    step.parse::<u64>().ok()?,
                    frames.parse::<u64>().ok()?,
                    ret.parse::<f64>().ok()?,
                    len.parse::<u64>().ok()?,
                )),
                _ => None,
            }
        });
        match parsed {
            Some((step, _, ret, _)) if step <= max_step => {
                kept.push_str(line);
                returns.push(ret);
            }
            _ => dropped += 1,
        }
    }
    if dropped > 0 || !header_ok {
        write_atomic(&path, kept.as_bytes())?;
    }
    Ok(KeptReturns { returns, dropped })
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
        "git_revision": build_revision(),
        "git_dirty_at_build": env!("BRIMS_GIT_DIRTY") == "true",
        "brims_version": env!("CARGO_PKG_VERSION"),
        "dependencies": env!("BRIMS_DEP_VERSIONS").split(',').collect::<Vec<_>>(),
        "command": std::env::args().collect::<Vec<_>>(),
        "started_utc": utc_stamp(SystemTime::now()),
    })
}

/// The git revision the binary was built from (by build.rs), if it was built in a checkout.
pub(crate) fn build_revision() -> Option<&'static str> {
    Some(env!("BRIMS_GIT_REVISION")).filter(|r| !r.is_empty())
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

/// Held by the unit tests that start processes and by those that check a lock is released:
/// a child forked on another test's thread holds this process's descriptors, and so its
/// locks, until it execs.
#[cfg(test)]
pub(crate) static SPAWN_GUARD: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    fn existing_dir_is_refused_and_create_locks_and_records() {
        let _no_forks = SPAWN_GUARD.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        check_new(&dir).unwrap();
        let err = check_resumable(&dir).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let lock = create(&dir, "x", &serde_json::json!({})).unwrap();
        assert!(dir.join(CHECKPOINT_DIR).is_dir());
        check_resumable(&dir).unwrap();
        for err in [
            check_new(&dir).unwrap_err(),
            create(&dir, "y", &serde_json::json!({})).err().unwrap(),
        ] {
            assert!(err.to_string().contains("already exists"), "{err}");
        }
        assert_eq!(std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(), "x");
        // Nothing but the run directory is left next to it.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("run")]);
        // The lock names its holder; it is free again once dropped.
        let err = RunLock::acquire(&dir).err().unwrap().to_string();
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        drop(lock);
        RunLock::acquire(&dir).unwrap();
    }

    #[test]
    fn returns_are_cut_back_to_the_step_and_torn_lines_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(RETURNS_FILE);
        let rows = "10,40,1.5,10\n20,80,2.5,12\n30,120,3.5,9\n";
        std::fs::write(&path, format!("{RETURNS_HEADER}\n{rows}40,16")).unwrap();
        let kept = cut_returns(tmp.path(), 20).unwrap();
        assert_eq!((kept.returns, kept.dropped), (vec![1.5, 2.5], 2));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{RETURNS_HEADER}\n10,40,1.5,10\n20,80,2.5,12\n")
        );
        // Nothing to drop: the file is left as it is.
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        let kept = cut_returns(tmp.path(), 100).unwrap();
        assert_eq!((kept.returns.len(), kept.dropped), (2, 0));
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
        // Missing file: created with its header.
        std::fs::remove_file(&path).unwrap();
        assert!(cut_returns(tmp.path(), 0).unwrap().returns.is_empty());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{RETURNS_HEADER}\n")
        );
    }
}
