//! Live anchors: the Python programs (EnvPool, torch, CleanRL) the benches measure in the same
//! run as ours, under an interpreter the user names (`--python PATH` or `BRIMS_ANCHOR_PYTHON`;
//! `scripts/anchors-venv.sh` makes one). Never a fixed path: without one, or when the anchor
//! cannot start, the bench says "anchor skipped: <why>" and its JSON says the same.
//!
//! A long-lived anchor is a [`Worker`]: a Python process that prints `BRIMS {json}` once ready
//! (its name and version), then answers each request line on its stdin with one `BRIMS {json}`
//! line, so that its measurements can be interleaved with ours round by round. Other lines it
//! prints are ignored.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};

/// The environment variable naming the anchors' Python when `--python` is not given.
pub(crate) const PYTHON_ENV: &str = "BRIMS_ANCHOR_PYTHON";

/// Prefix of the lines an anchor writes for us.
const REPLY_PREFIX: &str = "BRIMS ";

/// Arguments shared by the benches that have a Python anchor.
#[derive(Args, Debug, Clone)]
pub(crate) struct AnchorArgs {
    /// Python interpreter for the anchor (e.g. .venv-anchors/bin/python, made by
    /// scripts/anchors-venv.sh); default: $BRIMS_ANCHOR_PYTHON. Without either, the anchor is
    /// skipped.
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
}

impl AnchorArgs {
    /// The interpreter to use, or why there is none.
    pub(crate) fn interpreter(&self) -> Result<PathBuf, String> {
        if let Some(path) = &self.python {
            return Ok(path.clone());
        }
        match std::env::var_os(PYTHON_ENV) {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => Err(format!("no Python given (--python PATH or {PYTHON_ENV})")),
        }
    }
}

/// What a bench's JSON says of its anchor: name and version, or why it was skipped.
#[derive(Debug, Clone)]
pub(crate) enum Anchor {
    /// Measured: `info` is the anchor's own `BRIMS` hello (name, version, settings).
    Measured { info: Value, python: PathBuf },
    /// Not measured, and why.
    Skipped { name: &'static str, why: String },
}

impl Anchor {
    pub(crate) fn skipped(name: &'static str, why: impl Into<String>) -> Self {
        let why = why.into();
        println!("anchor skipped: {name}: {why}");
        Anchor::Skipped { name, why }
    }

    /// The `"anchor"` object of a bench's JSON.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Anchor::Measured { info, python } => {
                let mut v = info.clone();
                v["python"] = json!(python);
                v
            }
            Anchor::Skipped { name, why } => json!({"name": name, "skipped": why}),
        }
    }

    /// A one-line label, e.g. `envpool 1.2.5`.
    pub(crate) fn label(&self) -> String {
        match self {
            Anchor::Measured { info, .. } => format!(
                "{} {}",
                info["name"].as_str().unwrap_or("?"),
                info["version"].as_str().unwrap_or("?")
            ),
            Anchor::Skipped { name, .. } => format!("{name} (skipped)"),
        }
    }
}

/// A running Python anchor answering requests line by line.
pub(crate) struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Where the worker's stderr goes (read for the reason when it fails).
    stderr: tempfile::NamedTempFile,
}

impl Worker {
    /// Starts `python -c SOURCE ARG` and waits for its hello line; on failure, the reason (the
    /// last line of the worker's stderr, e.g. `ModuleNotFoundError: No module named 'envpool'`).
    pub(crate) fn start(
        python: &std::path::Path,
        source: &str,
        arg: &Value,
    ) -> Result<(Self, Value), String> {
        let stderr = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let err_file = stderr.reopen().map_err(|e| e.to_string())?;
        let mut child = Command::new(python)
            .args(["-c", source, &arg.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let stdin = child.stdin.take();
        let mut worker = Worker {
            child,
            stdin,
            stdout,
            stderr,
        };
        match worker.read_reply() {
            Ok(hello) => Ok((worker, hello)),
            Err(e) => Err(worker.why(&e)),
        }
    }

    /// Sends one request line and reads the reply.
    pub(crate) fn request(&mut self, line: &str) -> anyhow::Result<Value> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the anchor's stdin is closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| anyhow::anyhow!(self.why(&e.into())))?;
        self.read_reply().map_err(|e| anyhow::anyhow!(self.why(&e)))
    }

    fn read_reply(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                anyhow::bail!("the anchor exited");
            }
            if let Some(body) = line.trim_end().strip_prefix(REPLY_PREFIX) {
                return serde_json::from_str(body)
                    .with_context(|| format!("the anchor's reply {body:?} is not JSON"));
            }
        }
    }

    /// Why the worker failed: the last line of its stderr if it wrote one, else `err`.
    fn why(&mut self, err: &anyhow::Error) -> String {
        // EOF on stdin ends a worker that still runs; give it time to finish its traceback.
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(self.stderr.path()).unwrap_or_default();
        last_line(&text).map_or_else(|| err.to_string(), str::to_string)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // EOF on stdin ends a worker's request loop.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The last non-empty line of `text`.
pub(crate) fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// Our figure over the anchor's, printed with both figures, e.g. `1.11x EnvPool`.
pub(crate) fn ratio(ours: f64, anchor: f64) -> Option<f64> {
    (anchor > 0.0 && ours.is_finite() && anchor.is_finite()).then(|| ours / anchor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_prefers_the_flag_and_explains_its_absence() {
        let args = AnchorArgs {
            python: Some(PathBuf::from("/x/python")),
        };
        assert_eq!(args.interpreter().unwrap(), PathBuf::from("/x/python"));
        // Only the flag is tested with the variable unset: tests share one environment.
        if std::env::var_os(PYTHON_ENV).is_none() {
            let why = AnchorArgs { python: None }.interpreter().unwrap_err();
            assert!(
                why.contains("--python") && why.contains(PYTHON_ENV),
                "{why}"
            );
        }
    }

    #[test]
    fn a_worker_that_cannot_start_says_why() {
        let why = Worker::start(std::path::Path::new("/nonexistent/python"), "", &json!({}))
            .err()
            .unwrap();
        assert!(why.contains("/nonexistent/python"), "{why}");
    }

    #[test]
    fn last_line_skips_blank_lines() {
        assert_eq!(last_line("a\nb\n\n  \n"), Some("b"));
        assert_eq!(last_line(""), None);
    }
}
