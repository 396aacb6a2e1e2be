//! The training progress bar (indicatif) on a terminal; plain log lines with `quiet` or when
//! stderr is not a terminal (nohup, Slurm, `tee`), where a bar would draw nothing.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// In quiet mode, a line is printed at least this often (and at every 10% of progress).
const QUIET_INTERVAL: Duration = Duration::from_secs(60);
/// Without a terminal (and not quiet), a line is printed at least this often.
const LOG_INTERVAL: Duration = Duration::from_secs(30);
/// The environment variable that sets the seconds between plain progress lines (both quiet
/// mode and no terminal); `0` prints a line at every update.
pub const PROGRESS_SECS_ENV: &str = "BRIMS_PROGRESS_SECS";

/// Frames done / total, SPS, ETA and recent mean return, on stderr.
///
/// SPS is agent steps per second summed over the envs (one agent step is `frames_per_step`
/// emulator frames): the unit of TensorBoard's `charts/SPS` and summary.json's `sps`.
///
/// With `quiet` there is no bar; a plain line goes to stderr at every 10% of the frames and at
/// least once a minute, which suits logs and CI. Without `quiet` but with stderr not a
/// terminal, the same lines come at least every 30 s. [`PROGRESS_SECS_ENV`] sets that interval.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// The longest time between two plain lines (no bar).
    line_interval: Duration,
    total: u64,
    frames_per_step: u64,
    frames: u64,
    sps: f64,
    mean_return: Option<f64>,
    started: Instant,
    last_line: Instant,
    last_decile: u64,
}

impl Progress {
    /// A progress display for `total_frames` environment frames, `frames_per_step` to an agent
    /// step.
    pub fn new(total_frames: u64, frames_per_step: u64, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let default = if quiet { QUIET_INTERVAL } else { LOG_INTERVAL };
        let line_interval = match std::env::var(PROGRESS_SECS_ENV) {
            Err(_) => default,
            Ok(text) => match text.trim().parse::<f64>() {
                Ok(secs) if secs >= 0.0 && secs.is_finite() => Duration::from_secs_f64(secs),
                _ => {
                    eprintln!(
                        "warning: {PROGRESS_SECS_ENV}={text:?} is not a number of seconds \
                         (e.g. 30, or 0 for a line at every update); using {}",
                        default.as_secs()
                    );
                    default
                }
            },
        };
        Self::with_display(
            total_frames,
            frames_per_step,
            !quiet && terminal,
            line_interval,
        )
    }

    /// A progress display with a bar (`bar`) or plain lines at least every `line_interval`
    /// and at every 10% (`!bar`).
    pub fn with_display(
        total_frames: u64,
        frames_per_step: u64,
        bar: bool,
        line_interval: Duration,
    ) -> Self {
        let bar = bar.then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total_frames),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            // The template is a constant; if indicatif ever rejects it, fall back to its default.
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} frames  {msg}  ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            line_interval,
            total: total_frames,
            frames_per_step: frames_per_step.max(1),
            frames: 0,
            sps: 0.0,
            mean_return: None,
            started: now,
            last_line: now,
            last_decile: 0,
        }
    }

    /// Records progress: `frames` done so far and the current SPS (agent steps per second).
    pub fn update(&mut self, frames: u64, sps: f64) {
        self.frames = frames;
        self.sps = sps;
        match &self.bar {
            Some(bar) => {
                bar.set_position(frames);
                bar.set_message(self.message());
            }
            None => {
                let decile = (frames.saturating_mul(10)) / self.total.max(1);
                if decile > self.last_decile || self.last_line.elapsed() >= self.line_interval {
                    self.last_decile = decile;
                    self.last_line = Instant::now();
                    eprintln!("{}", self.line());
                }
            }
        }
    }

    /// Sets the recent mean episodic return shown next to the SPS.
    pub fn set_mean_return(&mut self, mean_return: f64) {
        self.mean_return = Some(mean_return);
        if let Some(bar) = &self.bar {
            bar.set_message(self.message());
        }
    }

    /// Prints a message above the bar (or as a plain line in quiet mode).
    pub fn println(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    /// Ends the display, leaving the final state visible.
    pub fn finish(&mut self) {
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(self.message()),
            None => eprintln!("{}", self.line()),
        }
    }

    fn message(&self) -> String {
        format_status(self.sps, self.mean_return)
    }

    fn line(&self) -> String {
        format_line(
            self.frames,
            self.total,
            self.sps,
            self.frames_per_step,
            self.mean_return,
            self.started.elapsed(),
        )
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

/// `"SPS 1234  return 5.67"` (return left out until known).
fn format_status(sps: f64, mean_return: Option<f64>) -> String {
    match mean_return {
        Some(r) => format!("SPS {sps:.0}  return {r:.2}"),
        None => format!("SPS {sps:.0}"),
    }
}

/// One quiet-mode log line: frames, percentage, SPS (agent steps per second), return, elapsed
/// and ETA in seconds (from the frames left at `sps · frames_per_step` frames per second).
fn format_line(
    frames: u64,
    total: u64,
    sps: f64,
    frames_per_step: u64,
    mean_return: Option<f64>,
    elapsed: Duration,
) -> String {
    let pct = 100.0 * frames as f64 / total.max(1) as f64;
    let frames_per_sec = sps * frames_per_step as f64;
    let eta = if frames_per_sec > 0.0 && total > frames {
        format!("{:.0}s", (total - frames) as f64 / frames_per_sec)
    } else {
        "-".to_string()
    };
    format!(
        "frames {frames}/{total} ({pct:.1}%)  {}  elapsed {:.0}s  ETA {eta}",
        format_status(sps, mean_return),
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_line_reports_frames_sps_return_and_eta() {
        let line = format_line(
            250_000,
            1_000_000,
            1250.0,
            4,
            Some(12.345),
            Duration::from_secs(50),
        );
        assert_eq!(
            line,
            "frames 250000/1000000 (25.0%)  SPS 1250  return 12.35  elapsed 50s  ETA 150s"
        );
    }

    #[test]
    fn eta_is_unknown_without_speed() {
        let line = format_line(0, 100, 0.0, 4, None, Duration::ZERO);
        assert!(line.ends_with("ETA -"), "{line}");
        assert!(!line.contains("return"));
    }

    #[test]
    fn bar_and_quiet_modes_track_state() {
        for quiet in [true, false] {
            let mut p = Progress::with_display(100, 4, !quiet, QUIET_INTERVAL);
            p.update(40, 10.0);
            p.set_mean_return(1.5);
            assert_eq!((p.frames, p.sps, p.mean_return), (40, 10.0, Some(1.5)));
            assert_eq!(p.bar.as_ref().map(|b| b.position()), (!quiet).then_some(40));
            p.finish();
            assert!(p.bar.is_none());
        }
    }
}
