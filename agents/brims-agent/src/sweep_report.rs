//! A sweep's report: per game, each config's final return (mean ± 95% CI over seeds), AUC,
//! steps/s and learning curves, from the finished runs; unfinished runs are counted, not used.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::compare::{finished_summary, read_returns};
use crate::report::{self, ConfigRuns, ReportOptions, RunCurve};
use crate::run_config::RunConfig;
use crate::run_dir::CONFIG_FILE;
use crate::sweep::{runs_by_game, ResolvedSpec};
use crate::train::RETURNS_FILE;

/// One game's finished runs per config, and how many runs each config has in all.
pub(crate) struct GameRuns {
    pub game: Option<String>,
    pub configs: Vec<ConfigRuns>,
    pub planned: Vec<(String, usize)>,
}

/// The finished runs of the sweep in `dir`, by game.
pub(crate) fn finished_runs(dir: &Path, spec: &ResolvedSpec) -> anyhow::Result<Vec<GameRuns>> {
    let mut out = Vec::new();
    for (game, configs) in runs_by_game(dir, spec) {
        let mut finished = Vec::new();
        let mut planned = Vec::new();
        for (name, dirs) in configs {
            planned.push((name.clone(), dirs.len()));
            let mut runs = Vec::new();
            for run in dirs {
                if !run.join(CONFIG_FILE).is_file() {
                    continue;
                }
                let cfg = RunConfig::load(&run.join(CONFIG_FILE), &[])?;
                let Ok(summary) = finished_summary(&run, &cfg)? else {
                    continue;
                };
                let points = read_returns(&run.join(RETURNS_FILE))?;
                if points.is_empty() {
                    continue;
                }
                runs.push(RunCurve {
                    seed: cfg.seed,
                    points,
                    // As `brims compare` reports it (frames per second).
                    sps: summary.sps * cfg.env.frames_per_step() as f64,
                    param_count: summary.param_count,
                });
            }
            if !runs.is_empty() {
                finished.push(ConfigRuns { name, runs });
            }
        }
        out.push(GameRuns {
            game,
            configs: finished,
            planned,
        });
    }
    Ok(out)
}

/// Writes `report.md` and `curves-<game>.png` into `dir`; returns report.md's path.
pub(crate) fn write(dir: &Path, spec: &ResolvedSpec) -> anyhow::Result<PathBuf> {
    let games = finished_runs(dir, spec)?;
    let mut md = String::new();
    writeln!(md, "# Sweep `{}`\n", spec.name)?;
    writeln!(
        md,
        "Configs {:?}, seeds {:?}, {} frames per run{}.\n",
        spec.configs,
        spec.seeds,
        spec.total_frames
            .map_or("each config's own".to_string(), |f| f.to_string()),
        if spec.overrides.is_empty() {
            String::new()
        } else {
            format!(", overrides {:?}", spec.overrides)
        }
    )?;
    for g in &games {
        let title = g
            .game
            .clone()
            .unwrap_or_else(|| "env of each config".into());
        writeln!(md, "## {title}\n")?;
        let finished: usize = g.configs.iter().map(|c| c.runs.len()).sum();
        let planned: usize = g.planned.iter().map(|(_, n)| n).sum();
        if finished < planned {
            writeln!(
                md,
                "{finished} of {planned} runs finished; the rest are not in these numbers.\n"
            )?;
        }
        if g.configs.is_empty() {
            continue;
        }
        let comparison = report::compare(&g.configs, ReportOptions::default())?;
        let file = format!(
            "curves-{}.png",
            g.game.as_deref().unwrap_or("all").to_lowercase()
        );
        // The comparison's own Markdown, under this game's heading.
        let body = report::markdown(&comparison);
        let body = body
            .lines()
            .skip_while(|l| l.starts_with("# ") || l.trim().is_empty())
            .map(|l| l.replace("## ", "### ").replace("curves.png", &file))
            .collect::<Vec<_>>()
            .join("\n");
        md.push_str(&body);
        report::draw_curves(&dir.join(&file), &comparison)
            .with_context(|| format!("cannot draw {file}"))?;
        writeln!(md, "\n![learning curves]({file})\n")?;
    }
    let path = dir.join("report.md");
    crate::run_dir::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}
