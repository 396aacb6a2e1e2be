//! A real, throwaway one-node Slurm cluster for tests: `scripts/slurm-local.sh` run on a
//! temporary directory (munged, slurmctld and slurmd, all state under that directory; see the
//! script's header for the configuration).
//!
//! A test that needs Slurm starts one and skips, saying why, where Slurm cannot be provided
//! (not installed and not installable: not root, or no apt-get; or the daemons failed):
//!
//! ```ignore
//! mod common;
//! use common::slurm::LocalSlurm;
//!
//! #[test]
//! fn my_slurm_test() {
//!     let Some(slurm) = LocalSlurm::start_or_skip("my_slurm_test") else { return };
//!     let out = slurm.command("sbatch").args(["--wait", "--wrap", "true"]).output().unwrap();
//!     // ...
//! } // dropping `slurm` cancels its jobs and stops exactly its daemons
//! ```
//!
//! which is shorthand for
//!
//! ```ignore
//! let slurm = match LocalSlurm::start() {
//!     Ok(slurm) => slurm,
//!     Err(reason) => {
//!         println!("SKIPPED: {reason}");
//!         return;
//!     }
//! };
//! ```
//!
//! except that with `BRIMS_REQUIRE_SLURM=1` in the environment (CI, where Slurm is installed
//! beforehand) `start_or_skip` panics instead of skipping, so a broken cluster never passes as a
//! skipped test. Run such tests with `--nocapture` to see the SKIPPED line.
//!
//! Clients (sbatch, squeue, scancel, sinfo, scontrol, and `brims sweep --executor slurm`) find
//! the cluster through `SLURM_CONF`: pass [`LocalSlurm::env`] to every command, or build it with
//! [`LocalSlurm::command`]. Daemons run as the user running the tests (root: as root).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One running local cluster; stopped when dropped.
pub struct LocalSlurm {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

/// Serialises `start` within one test binary: the first start may install packages (apt-get
/// holds a lock), and the daemons start quicker one cluster at a time.
static START: Mutex<()> = Mutex::new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/slurm-local.sh")
}

impl LocalSlurm {
    /// Installs Slurm if it is missing and can be installed (root with apt-get), then starts a
    /// fresh cluster under a new temporary directory and waits until its node is idle.
    /// `Err(reason)` when Slurm cannot be provided here (the script exits 2) or the cluster does
    /// not come up; the reason carries the script's stderr.
    pub fn start() -> Result<LocalSlurm, String> {
        let _guard = START.lock().unwrap_or_else(|e| e.into_inner());
        // A short path: munge's socket lives under it and a unix socket path is short.
        let dir = tempfile::Builder::new()
            .prefix("slurm-")
            .tempdir_in(short_tmp())
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        match out.status.code() {
            Some(0) => {
                let conf = dir.path().join("slurm.conf");
                eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
                Ok(LocalSlurm { dir, conf })
            }
            Some(2) => Err(if stderr.is_empty() {
                "Slurm cannot be provided here".to_string()
            } else {
                stderr
            }),
            code => {
                // The script stops what it started before failing; stop again to be sure.
                let _ = Command::new("bash")
                    .arg(script())
                    .arg("stop")
                    .arg(dir.path())
                    .output();
                Err(format!(
                    "scripts/slurm-local.sh start failed (exit {code:?}):\n{stderr}"
                ))
            }
        }
    }

    /// [`LocalSlurm::start`], printing `SKIPPED: <test>: <reason>` and returning `None` when it
    /// fails, unless `BRIMS_REQUIRE_SLURM` is set (not empty, not `0`): then it panics.
    pub fn start_or_skip(test: &str) -> Option<LocalSlurm> {
        match LocalSlurm::start() {
            Ok(slurm) => Some(slurm),
            Err(reason) => {
                let required = std::env::var("BRIMS_REQUIRE_SLURM")
                    .map(|v| !v.is_empty() && v != "0")
                    .unwrap_or(false);
                if required {
                    panic!("BRIMS_REQUIRE_SLURM is set but Slurm is unavailable: {reason}");
                }
                println!("SKIPPED: {test}: {reason}");
                None
            }
        }
    }

    /// The environment every client of this cluster needs.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "SLURM_CONF".to_string(),
            self.conf.to_string_lossy().into_owned(),
        )]
    }

    /// `program` (sbatch, squeue, `brims`, …) with [`LocalSlurm::env`] set.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env());
        cmd
    }

    /// The cluster's directory (slurm.conf, env.sh, log/, state/, spool/, munge/).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemons' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for name in ["log/slurmctld.log", "log/slurmd.log", "munge/munged.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            s.push_str(&format!("--- {name} (last {} lines)\n", tail.len()));
            for line in tail {
                s.push_str(line);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for LocalSlurm {
    /// Cancels the cluster's jobs and stops exactly its daemons (`slurm-local.sh stop`); the
    /// temporary directory goes afterwards.
    fn drop(&mut self) {
        match Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "slurm-local.sh stop {} failed ({}): {}",
                self.dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run slurm-local.sh stop: {e}"),
        }
    }
}

/// `$TMPDIR` when its paths are short enough for munge's socket, else /tmp.
fn short_tmp() -> PathBuf {
    let tmp = std::env::temp_dir();
    if tmp.as_os_str().len() <= 60 {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}
