//! A sweep's report: per game, each config's final return (mean and 95% bootstrap interval over
//! seeds), AUC, steps/s and learning curves, from the finished runs; unfinished runs are
//! counted, not used. The same report can be drawn from a published directory of CSVs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::compare::finished_curve;
use crate::compare::report::{self, ConfigRuns, ReportOptions, RunCurve};
use crate::run::dir::CONFIG_FILE;
use crate::sweep::manifest::{read_json, runs_by_game, SPEC_FILE};
use crate::sweep::spec::{PlannedRun, ResolvedSpec};

/// One game's finished runs per config, and how many runs each config has in all.
pub(crate) struct GameRuns {
    pub game: Option<String>,
    pub configs: Vec<ConfigRuns>,
    pub planned: Vec<(String, usize)>,
    /// The returns an episode of this game can have, where known (intervals are clamped to it).
    pub return_range: Option<(f64, f64)>,
}

/// The return range of a game's runs: the game's, or without games the one every config's env
/// shares (none if they differ or one is unknown).
fn return_range_of(spec: &ResolvedSpec, game: &Option<String>) -> Option<(f64, f64)> {
    if let Some(game) = game {
        return envs_atari::return_range(game);
    }
    let ranges: Vec<Option<(f64, f64)>> = spec
        .runs
        .iter()
        .filter(|r| r.game.is_none())
        .map(|r| {
            let table = toml::from_str(&r.config_toml).ok()?;
            crate::config::run::RunConfig::from_table(table)
                .ok()?
                .env
                .return_range()
        })
        .collect();
    match ranges.first() {
        Some(first) if ranges.iter().all(|r| r == first) => *first,
        _ => None,
    }
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
                // A run not yet started has no directory; an unfinished one is counted only.
                if !run.join(CONFIG_FILE).is_file() {
                    continue;
                }
                if let Ok((_, curve)) = finished_curve(&run)? {
                    if !curve.points.is_empty() {
                        runs.push(curve);
                    }
                }
            }
            if !runs.is_empty() {
                finished.push(ConfigRuns { name, runs });
            }
        }
        out.push(GameRuns {
            return_range: return_range_of(spec, &game),
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
    write_games(dir, spec, &games)
}

/// Writes the report of `games` (the finished runs of `spec`) into `dir`.
fn write_games(dir: &Path, spec: &ResolvedSpec, games: &[GameRuns]) -> anyhow::Result<PathBuf> {
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
    for g in games {
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
        let options = ReportOptions {
            return_range: g.return_range,
            ..ReportOptions::default()
        };
        let comparison = report::compare(&g.configs, options)?;
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
    across_games(dir, spec, games, &mut md)?;
    let path = dir.join("report.md");
    crate::run::dir::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// `runs/runs.json` of a published results directory: the sweep's spec and, per run, what
/// its report needs beyond the episodes (which are in `runs/<id>.csv`).
#[derive(serde::Deserialize)]
struct PublishedSweep {
    name: String,
    configs: Vec<String>,
    seeds: Vec<u64>,
    total_frames: u64,
    overrides: Vec<String>,
    runs: Vec<PublishedRun>,
}

/// One run of [`PublishedSweep`] (other fields of the file are for the page, not the report).
#[derive(serde::Deserialize)]
struct PublishedRun {
    id: String,
    game: Option<String>,
    config: String,
    seed: u64,
    total_frames: u64,
    /// None for a run that had not finished when the page was published (it has no CSV).
    sps: Option<f64>,
    param_count: Option<usize>,
}

/// Per config: how many runs the spec has, and the curves of those with a CSV.
type ConfigCurves = BTreeMap<String, (usize, Vec<RunCurve>)>;

/// The published results file, under the directory.
const PUBLISHED_RUNS: &str = "runs/runs.json";

/// Writes the report of a published results directory (`runs/runs.json` and `runs/<id>.csv`,
/// as `publish.py` writes them from a finished sweep) into `<dir>/report`: the same report
/// `brims sweep report` draws from the sweep's run directories, so the page can be redrawn
/// from what the repository holds. A run without its CSV is counted as unfinished.
pub(crate) fn write_published(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(PUBLISHED_RUNS);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (a published results directory)",
            path.display()
        )
    })?;
    let published: PublishedSweep =
        serde_json::from_str(&text).with_context(|| format!("{}: malformed", path.display()))?;
    let runs: Vec<PlannedRun> = published
        .runs
        .iter()
        .map(|r| PlannedRun {
            id: r.id.clone(),
            game: r.game.clone(),
            config: r.config.clone(),
            seed: r.seed,
            total_frames: r.total_frames,
            config_toml: String::new(),
        })
        .collect();
    let mut games: Vec<String> = Vec::new();
    for game in published.runs.iter().filter_map(|r| r.game.clone()) {
        if !games.contains(&game) {
            games.push(game);
        }
    }
    let spec = ResolvedSpec {
        name: published.name,
        games,
        configs: published.configs,
        seeds: published.seeds,
        total_frames: Some(published.total_frames),
        overrides: published.overrides,
        max_attempts: 0,
        runs,
    };
    // Game -> config -> runs, sorted as runs_by_game sorts a sweep's.
    let mut by_game: BTreeMap<Option<String>, ConfigCurves> = BTreeMap::new();
    for run in &published.runs {
        let entry = by_game
            .entry(run.game.clone())
            .or_default()
            .entry(run.config.clone())
            .or_default();
        entry.0 += 1;
        let csv = dir.join("runs").join(format!("{}.csv", run.id));
        if !csv.is_file() {
            continue;
        }
        let (Some(sps), Some(param_count)) = (run.sps, run.param_count) else {
            bail!(
                "{}: run {} has a CSV but no sps or param_count",
                path.display(),
                run.id
            );
        };
        let points = read_episodes_csv(&csv)?;
        if !points.is_empty() {
            entry.1.push(RunCurve {
                seed: run.seed,
                points,
                sps,
                param_count,
            });
        }
    }
    let games: Vec<GameRuns> = by_game
        .into_iter()
        .map(|(game, configs)| GameRuns {
            return_range: return_range_of(&spec, &game),
            planned: configs
                .iter()
                .map(|(name, (n, _))| (name.clone(), *n))
                .collect(),
            configs: configs
                .into_iter()
                .filter(|(_, (_, runs))| !runs.is_empty())
                .map(|(name, (_, runs))| ConfigRuns { name, runs })
                .collect(),
            game,
        })
        .collect();
    let out = dir.join("report");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    write_games(&out, &spec, &games)
}

/// `(frames, episodic return)` of each row of a published `frames,episodic_return` CSV.
fn read_episodes_csv(path: &Path) -> anyhow::Result<Vec<(u64, f64)>> {
    crate::compare::report::read_frames_returns(path, 0, 1)
}

/// Final return of a run: the mean of its last `k` episodes.
fn final_return(run: &RunCurve, k: usize) -> f64 {
    let mut points = run.points.clone();
    points.sort_by_key(|p| p.0);
    let tail = &points[points.len().saturating_sub(k)..];
    tail.iter().map(|p| p.1).sum::<f64>() / tail.len().max(1) as f64
}

/// The trailing mean of the last `k` episodes that ended by `frame` (None before the first).
fn return_at(run: &RunCurve, frame: u64, k: usize) -> Option<f64> {
    let mut points: Vec<&(u64, f64)> = run.points.iter().filter(|p| p.0 <= frame).collect();
    points.sort_by_key(|p| p.0);
    let tail = &points[points.len().saturating_sub(k)..];
    (!tail.is_empty()).then(|| tail.iter().map(|p| p.1).sum::<f64>() / tail.len() as f64)
}

/// rliable's statistics across games (Agarwal et al. 2021): IQM and mean with 95% stratified
/// bootstrap intervals, probability of improvement, performance profiles and IQM against
/// frames. Scores are human-normalised for Atari games with reference scores, raw returns
/// otherwise. Only seeds finished in every game enter (the score matrix is runs × games).
fn across_games(
    dir: &Path,
    spec: &ResolvedSpec,
    games: &[GameRuns],
    md: &mut String,
) -> anyhow::Result<()> {
    let normalised = games.iter().all(|g| {
        g.game
            .as_deref()
            .is_some_and(|game| envs_atari::reference_scores(game).is_some())
    });
    let score_name = if normalised {
        "human-normalised score"
    } else {
        "return"
    };
    let normalise = |game: &Option<String>, x: f64| -> f64 {
        match game.as_deref().and_then(envs_atari::reference_scores) {
            Some((random, human)) if normalised => {
                rlstats::human_normalized(x, random, human).unwrap_or(f64::NAN)
            }
            _ => x,
        }
    };
    let k = ReportOptions::default().last_episodes;
    let matrices = complete_seed_matrices(spec, games);
    if matrices.is_empty() {
        return Ok(());
    }
    let scores_of = |rows: &[Vec<&RunCurve>], value: &dyn Fn(&RunCurve) -> Option<f64>| {
        let values: Option<Vec<Vec<f64>>> = rows
            .iter()
            .map(|row| {
                row.iter()
                    .zip(games)
                    .map(|(run, g)| value(run).map(|x| normalise(&g.game, x)))
                    .collect()
            })
            .collect();
        values.and_then(|v| rlstats::Scores::from_rows(&v).ok())
    };
    let boot = rlstats::Bootstrap {
        reps: 2000,
        confidence: 0.95,
        seed: 0,
    };
    writeln!(
        md,
        "## Across games ({score_name})
"
    )?;
    writeln!(
        md,
 "Final score = mean of each run's last {k} episodes. Intervals: 95% stratified bootstrap ({} resamples, seeds resampled within each game), as rliable computes them. Only seeds finished in every game enter.
",
        boot.reps
    )?;
    writeln!(md, "| config | runs × games | IQM | mean |")?;
    writeln!(md, "|---|---|---:|---:|")?;
    let mut finals = Vec::new();
    for (name, rows) in &matrices {
        let Some(scores) = scores_of(rows, &|r| Some(final_return(r, k))) else {
            continue;
        };
        let iqm = rlstats::stratified_bootstrap_ci(&scores, rlstats::iqm, &boot)?;
        let mean = rlstats::stratified_bootstrap_ci(&scores, rlstats::mean, &boot)?;
        writeln!(
            md,
            "| {name} | {} × {} | {:.3} [{:.3}, {:.3}] | {:.3} [{:.3}, {:.3}] |",
            scores.runs(),
            scores.tasks(),
            iqm.point,
            iqm.lower,
            iqm.upper,
            mean.point,
            mean.lower,
            mean.upper
        )?;
        finals.push((name.clone(), scores));
    }
    write_improvement_table(md, &finals, &boot)?;
    write_performance_profiles(dir, md, &finals, &boot, score_name)?;
    // Sample efficiency: IQM of the trailing return at ten points of the budget.
    if let Some(budget) = spec.runs.iter().map(|r| r.total_frames).min() {
        let frames: Vec<u64> = (1..=10).map(|i| budget * i / 10).collect();
        let mut bands = Vec::new();
        for (name, rows) in &matrices {
            let mut xs = Vec::new();
            let mut checkpoints = Vec::new();
            for &f in &frames {
                if let Some(s) = scores_of(rows, &|r| return_at(r, f, k)) {
                    xs.push(f as f64);
                    checkpoints.push(s);
                }
            }
            if !checkpoints.is_empty() {
                bands.push(rlstats::Band {
                    label: name.clone(),
                    x: xs,
                    y: rlstats::sample_efficiency(&checkpoints, rlstats::iqm, &boot)?,
                });
            }
        }
        if !bands.is_empty() {
            rlstats::plot_sample_efficiency(
                &dir.join("sample-efficiency.png"),
                &bands,
                score_name,
            )?;
            writeln!(
                md,
                "![sample efficiency](sample-efficiency.png)

Sample efficiency: the IQM of each run's trailing {k}-episode {score_name} against frames, with 95% bands.
"
            )?;
        }
    }
    Ok(())
}

/// Per config: the seeds finished in every game, then the runs × games matrix of those seeds
/// (configs with no such seed are left out).
fn complete_seed_matrices<'a>(
    spec: &ResolvedSpec,
    games: &'a [GameRuns],
) -> Vec<(String, Vec<Vec<&'a RunCurve>>)> {
    let mut matrices: Vec<(String, Vec<Vec<&RunCurve>>)> = Vec::new();
    for name in &spec.configs {
        let per_game: Vec<Vec<&RunCurve>> = games
            .iter()
            .map(|g| {
                g.configs
                    .iter()
                    .filter(|c| &c.name == name)
                    .flat_map(|c| c.runs.iter())
                    .collect()
            })
            .collect();
        let seeds: Vec<u64> = spec
            .seeds
            .iter()
            .copied()
            .filter(|s| {
                per_game
                    .iter()
                    .all(|runs| runs.iter().any(|r| r.seed == *s))
            })
            .collect();
        if seeds.is_empty() {
            continue;
        }
        let rows: Vec<Vec<&RunCurve>> = seeds
            .iter()
            .map(|s| {
                per_game
                    .iter()
                    .map(|runs| *runs.iter().find(|r| r.seed == *s).expect("filtered above"))
                    .collect()
            })
            .collect();
        matrices.push((name.clone(), rows));
    }
    matrices
}

/// The probability-of-improvement table of every ordered pair of configs (two or more).
fn write_improvement_table(
    md: &mut String,
    finals: &[(String, rlstats::Scores)],
    boot: &rlstats::Bootstrap,
) -> anyhow::Result<()> {
    if finals.len() >= 2 {
        writeln!(
            md,
            "
Probability of improvement P(X > Y), with its 95% interval:
"
        )?;
        writeln!(md, "| X | Y | P(X > Y) |")?;
        writeln!(md, "|---|---|---:|")?;
        for (xn, x) in finals {
            for (yn, y) in finals {
                if xn != yn {
                    let p = rlstats::probability_of_improvement_ci(x, y, boot)?;
                    writeln!(
                        md,
                        "| {xn} | {yn} | {:.3} [{:.3}, {:.3}] |",
                        p.point, p.lower, p.upper
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Performance profiles over the range of final scores: performance-profiles.png and its
/// paragraph.
fn write_performance_profiles(
    dir: &Path,
    md: &mut String,
    finals: &[(String, rlstats::Scores)],
    boot: &rlstats::Bootstrap,
    score_name: &str,
) -> anyhow::Result<()> {
    let (lo, hi) = finals
        .iter()
        .flat_map(|(_, s)| s.values().iter().copied())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if lo.is_finite() && hi > lo {
        let taus: Vec<f64> = (0..=40).map(|i| lo + (hi - lo) * i as f64 / 40.0).collect();
        let bands = finals
            .iter()
            .map(|(name, s)| {
                Ok(rlstats::Band {
                    label: name.clone(),
                    x: taus.clone(),
                    y: rlstats::performance_profile(s, &taus, boot)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        rlstats::plot_performance_profiles(
            &dir.join("performance-profiles.png"),
            &bands,
            score_name,
        )?;
        writeln!(
            md,
            "
![performance profiles](performance-profiles.png)

Performance profiles: the fraction of runs whose final {score_name} exceeds τ, with 95% bands.
"
        )?;
    }
    Ok(())
}

/// Writes report.md and the plots from the finished runs; returns report.md's path.
pub(crate) fn write_report(dir: &Path) -> anyhow::Result<PathBuf> {
    let spec: ResolvedSpec = read_json(&dir.join(SPEC_FILE))
        .with_context(|| format!("{} is not a sweep directory", dir.display()))?;
    write(dir, &spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published results directory: two games × two cores × two seeds of a few episodes.
    fn published(dir: &Path, with_pong_brims_s2: bool) {
        std::fs::create_dir_all(dir.join("runs")).unwrap();
        let mut runs = Vec::new();
        for game in ["Breakout", "Pong"] {
            for (k, core) in ["lstm", "brims"].iter().enumerate() {
                for seed in [1u64, 2] {
                    let id = format!("{game}-{core}-s{seed}");
                    runs.push(serde_json::json!({
                        "id": id, "game": game, "config": core, "seed": seed,
                        "total_frames": 4000, "sps": 100.0 + seed as f64, "param_count": 7,
                        "rev": "abc", "frames": 4000,
                    }));
                    if game == "Pong" && *core == "brims" && seed == 2 && !with_pong_brims_s2 {
                        continue;
                    }
                    let base = if game == "Pong" { -21.0 } else { 0.0 };
                    let rows: String = (1..=30)
                        .map(|i| {
                            let r = base + (i as f64 * (k + 1) as f64 * seed as f64 / 10.0);
                            format!("{},{}\n", i * 100, r.min(21.0))
                        })
                        .collect();
                    std::fs::write(
                        dir.join(format!("runs/{id}.csv")),
                        format!("frames,episodic_return\n{rows}"),
                    )
                    .unwrap();
                }
            }
        }
        let doc = serde_json::json!({
            "name": "pub", "configs": ["lstm", "brims"], "seeds": [1, 2],
            "total_frames": 4000, "overrides": [], "runs": runs, "updates": 10,
        });
        std::fs::write(dir.join(PUBLISHED_RUNS), doc.to_string()).unwrap();
    }

    /// The final part of issue 24: the published page's report is redrawn from the CSVs the
    /// repository holds, with the same tables and figures a sweep directory gives.
    #[test]
    fn a_published_directory_gives_the_sweep_report() {
        let tmp = tempfile::tempdir().unwrap();
        published(tmp.path(), false);
        let report = write_published(tmp.path()).unwrap();
        assert_eq!(report, tmp.path().join("report/report.md"));
        let md = std::fs::read_to_string(&report).unwrap();
        assert!(md.contains("# Sweep `pub`"), "{md}");
        assert!(md.contains("## Breakout") && md.contains("## Pong"), "{md}");
        assert!(md.contains("3 of 4 runs finished"), "{md}");
        assert!(md.contains("| brims | 2 | "), "{md}");
        assert!(md.contains("| lstm | 1 | "), "{md}");
        assert!(
            md.contains("within the env's return range [-21, 21]"),
            "{md}"
        );
        assert!(
            md.contains("## Across games (human-normalised score)"),
            "{md}"
        );
        for png in [
            "curves-breakout.png",
            "curves-pong.png",
            "sample-efficiency.png",
        ] {
            let path = tmp.path().join("report").join(png);
            for core in ["lstm", "brims"] {
                let n =
                    crate::compare::report::tests::pixels_of(&path, rlstats::series_colour(core));
                assert!(n > 50, "{png}: {n} pixels of {core}'s colour");
            }
        }
        // A CSV cut short is an error naming it.
        std::fs::write(
            tmp.path().join("runs/Pong-lstm-s1.csv"),
            "frames,ep\n10,x\n",
        )
        .unwrap();
        let err = write_published(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("Pong-lstm-s1.csv:2: malformed"), "{err}");
    }
}
