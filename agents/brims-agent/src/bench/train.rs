//! `brims bench train --config F --seconds S`: real training on the config for S seconds,
//! reporting steps/s, the rollout/update split and peak memory.
//!
//! With `--cleanrl-iterations N` (and a Python made by scripts/anchors-venv.sh, see
//! [`super::anchor`]), CleanRL's `ppo_atari_lstm.py` then runs N iterations in the same process
//! tree on the same game, seed, number of envs and steps per iteration, on the CPU, once per
//! `--cleanrl-threads` value. Its steps/s is the `SPS` it prints itself after its last
//! iteration: agent steps over the time since its start, which follows its imports and the
//! creation of its envs and network (so start-up is excluded, as ours is).

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

use super::anchor::{self, Anchor, AnchorArgs};
use super::peak::Peak;
use crate::config::run::EnvConfig;
use crate::run::summary::RunSummary;
use crate::train;
use crate::train::spec::Limits;

/// Source of the CleanRL runner (see its docstring).
const CLEANRL_RUNNER: &str = include_str!("anchors/cleanrl_runner.py");

/// Arguments of `brims bench train`.
#[derive(Args, Debug, Clone)]
pub(crate) struct TrainArgs {
    /// The run's TOML config.
    #[arg(long)]
    pub config: PathBuf,
    /// Stop after this many seconds (the last update started finishes).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Then run CleanRL's ppo_atari_lstm.py for this many iterations (0: not at all).
    #[arg(long, default_value_t = 0)]
    pub cleanrl_iterations: usize,
    /// torch threads for CleanRL, 0 for torch's default; repeat to run it once per value (the
    /// ratio is to the fastest).
    #[arg(long, value_name = "N", default_values_t = [0])]
    pub cleanrl_threads: Vec<usize>,
    /// CleanRL's script; default: the one in the anchors' virtualenv.
    #[arg(long, value_name = "PATH")]
    pub cleanrl_script: Option<PathBuf>,
    #[command(flatten)]
    pub anchor: AnchorArgs,
}

/// Runs the benchmark; returns the JSON object printed as the last line.
pub(crate) fn run(args: &TrainArgs) -> anyhow::Result<serde_json::Value> {
    if args.seconds.is_nan() || args.seconds <= 0.0 {
        anyhow::bail!("--seconds must be > 0");
    }
    let tmp = tempfile::tempdir()?;
    let targs = train::TrainArgs {
        config: Some(args.config.clone()),
        overrides: args.overrides.clone(),
        run_dir: Some(tmp.path().join("bench")),
        resume: false,
        quiet: true,
    };
    let spec = train::prepare_run(&targs)?;
    // The machine's peak first, on every core, before training loads them.
    let peak = Peak::measure(std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("{}", peak.describe());
    let stop = crate::run::stop::install_stop_signals();
    let limits = Limits {
        seconds: Some(args.seconds),
        quiet: true,
    };
    let summary = train::train(&spec, &limits, &stop)?;
    let total = summary.rollout_secs + summary.update_secs;
    let peak_rss_mb = peak_rss_mb();
    println!(
        "config {}: {} frames in {:.1} s",
        args.config.display(),
        summary.frames,
        total
    );
    println!(
        "steps/s {:.1}  (rollout {:.1} s = {:.0}%, update {:.1} s = {:.0}%)",
        summary.sps,
        summary.rollout_secs,
        100.0 * summary.rollout_secs / total.max(1e-9),
        summary.update_secs,
        100.0 * summary.update_secs / total.max(1e-9)
    );
    println!("peak RSS {:.0} MiB", peak_rss_mb.unwrap_or(f64::NAN));
    let compute = Compute::of(&summary, &peak);
    println!("{}", compute.describe());
    let mut json = json!({
        "sps": summary.sps,
        "rollout_secs": summary.rollout_secs,
        "update_secs": summary.update_secs,
        "peak_rss_mb": peak_rss_mb,
        "config": args.config,
        "flops_per_step": summary.flops_per_step,
        "gflops": compute.gflops,
        "update_gflops": compute.update_gflops,
        "peak": peak.to_json(),
        "share_of_fp32_peak": compute.fp32_share,
        "update_share_of_fp32_peak": compute.update_fp32_share,
    });
    let (anchor, runs) = cleanrl(args, &spec.cfg);
    let best = runs
        .iter()
        .filter_map(|r| r["sps"].as_f64())
        .fold(None, |best: Option<f64>, s| {
            Some(best.map_or(s, |b| b.max(s)))
        });
    if let Some(best) = best {
        let ratio = anchor::ratio(summary.sps, best);
        println!(
            "{}: best {best:.0} steps/s (its own SPS, start-up excluded); ours / CleanRL = {} \
             (target >= 3x)",
            anchor.label(),
            ratio.map_or("?".into(), |r| format!("{r:.2}x")),
        );
        json["cleanrl_sps"] = json!(best);
        json["ratio_to_cleanrl"] = json!(ratio);
    }
    json["cleanrl_runs"] = json!(runs);
    json["anchor"] = anchor.to_json();
    Ok(json)
}

/// Training's arithmetic against the machine's peak.
struct Compute {
    flops_per_step: u64,
    /// Training FLOPs over the whole time (rollout and update): what steps/s amounts to.
    gflops: f64,
    /// The update's FLOPs (every epoch's replay and backward) over the update's time.
    update_gflops: f64,
    fp32_share: f64,
    update_fp32_share: f64,
}

impl Compute {
    fn of(summary: &RunSummary, peak: &Peak) -> Self {
        let flops_per_step = summary.flops_per_step;
        let gflops = summary.sps * flops_per_step as f64 / 1e9;
        // Agent steps trained in this bench: the update's share excludes the acting forward.
        let steps = summary.sps * (summary.rollout_secs + summary.update_secs);
        let update_flops = flops_per_step.saturating_sub(summary.forward_flops) as f64;
        let update_gflops = steps * update_flops / summary.update_secs.max(1e-9) / 1e9;
        Compute {
            flops_per_step,
            gflops,
            update_gflops,
            fp32_share: peak.fp32_share(gflops),
            update_fp32_share: peak.fp32_share(update_gflops),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:.1} MFLOP per agent step (counted from the network): {:.1} GFLOP/s overall = {:.0}% \
             of the FP32 peak; the update alone {:.1} GFLOP/s = {:.0}%",
            self.flops_per_step as f64 / 1e6,
            self.gflops,
            100.0 * self.fp32_share,
            self.update_gflops,
            100.0 * self.update_fp32_share
        )
    }
}

/// Runs CleanRL once per `--cleanrl-threads` value: the anchor, and one JSON per run that
/// finished (`threads_requested`, `threads`, `sps`, `sps_per_iteration`).
fn cleanrl(args: &TrainArgs, cfg: &crate::config::run::RunConfig) -> (Anchor, Vec<Value>) {
    const NAME: &str = "cleanrl ppo_atari_lstm.py";
    if args.cleanrl_iterations == 0 {
        return (
            Anchor::skipped(NAME, "not requested (--cleanrl-iterations N)"),
            Vec::new(),
        );
    }
    let python = match args.anchor.interpreter() {
        Ok(p) => p,
        Err(why) => return (Anchor::skipped(NAME, why), Vec::new()),
    };
    let EnvConfig::Atari { game, atari } = &cfg.env else {
        return (
            Anchor::skipped(NAME, "the config's env is not Atari"),
            Vec::new(),
        );
    };
    let game = match envs_atari::make_atari(game, atari, cfg.seed) {
        Ok(env) => env.game(),
        Err(e) => return (Anchor::skipped(NAME, e.to_string()), Vec::new()),
    };
    let mut anchor = None;
    let mut runs = Vec::new();
    for &threads in &args.cleanrl_threads {
        let config = json!({
            "game": game,
            "iterations": args.cleanrl_iterations,
            "num_envs": cfg.ppo.num_envs,
            "num_steps": cfg.ppo.num_steps,
            "num_minibatches": cfg.ppo.num_minibatches,
            "update_epochs": cfg.ppo.update_epochs,
            "seed": cfg.seed,
            "threads": threads,
            "script": args.cleanrl_script.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        });
        println!(
            "CleanRL's ppo_atari_lstm.py: {} iterations of {} envs x {} steps, torch threads {}",
            args.cleanrl_iterations,
            cfg.ppo.num_envs,
            cfg.ppo.num_steps,
            if threads == 0 {
                "default".to_string()
            } else {
                threads.to_string()
            },
        );
        match run_cleanrl(&python, &config) {
            Ok((info, sps_per_iteration)) => {
                let sps = sps_per_iteration.last().copied();
                println!(
                    "  {} threads: {} steps/s",
                    info["threads"],
                    sps.map_or("?".into(), |s| format!("{s:.0}"))
                );
                runs.push(json!({
                    "threads_requested": threads,
                    "threads": info["threads"],
                    "sps": sps,
                    "sps_per_iteration": sps_per_iteration,
                    "wall_secs_with_startup": info["wall_secs_with_startup"],
                }));
                anchor.get_or_insert(Anchor::Measured {
                    info,
                    python: python.clone(),
                });
            }
            Err(why) => {
                return (
                    Anchor::skipped(NAME, format!("{}: {why}", python.display())),
                    runs,
                )
            }
        }
    }
    let anchor = anchor.unwrap_or_else(|| Anchor::skipped(NAME, "--cleanrl-threads gave no run"));
    (anchor, runs)
}

/// One CleanRL run: the runner's `BRIMS` JSON and the SPS CleanRL printed per iteration, or
/// why it failed (the last line of its stderr).
fn run_cleanrl(python: &std::path::Path, config: &Value) -> Result<(Value, Vec<f64>), String> {
    // CleanRL writes TensorBoard events under ./runs: keep them out of the working directory.
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(python)
        .args(["-c", CLEANRL_RUNNER, &config.to_string()])
        .current_dir(tmp.path())
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let info = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("BRIMS "))
        .next_back()
        .and_then(|body| serde_json::from_str::<Value>(body).ok());
    match (out.status.success(), info) {
        (true, Some(info)) => {
            let sps = stdout
                .lines()
                .filter_map(|l| l.strip_prefix("SPS:")?.trim().parse::<f64>().ok())
                .collect();
            Ok((info, sps))
        }
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(anchor::last_line(&stderr)
                .map_or_else(|| format!("exited with {}", out.status), str::to_string))
        }
    }
}

/// The process's peak resident set size (VmHWM), Linux only.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
