//! Helpers shared by the integration tests that run the `brims` binary.
#![allow(dead_code)]

pub mod slurm;

use std::process::Command;
use std::time::{Duration, Instant};

/// A child process that is killed (SIGKILL) if the test ends, e.g. by a failed assertion,
/// while it still runs.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `cond` every 10 ms until it holds (true) or `secs` pass (false).
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Waits at most `secs` for `child` to exit; kills it and fails the test otherwise.
pub fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(secs, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            panic!("process {} did not exit within {secs} s", child.id());
        }
    }
}

/// Sends `sig` (e.g. `-TERM`) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}
