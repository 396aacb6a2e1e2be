//! The `compare` report: per config, final return and area under the curve with 95% bootstrap
//! intervals across seeds, SPS and parameter count (report.md), and learning curves with an
//! interval band per config (curves.png). Pure: it reads no runs and trains nothing.
//!
//! Intervals are percentile bootstrap intervals of the mean over seeds (rlstats), clamped to
//! the env's return range where one is known: unlike mean ± t·s they never leave the values a
//! run can score (with 3 seeds a t interval spans ±2.5 standard deviations, past Pong's ±21).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use plotters::prelude::*;

const PLOT_SIZE: (u32, u32) = (1024, 640);

/// One finished training run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunCurve {
    /// The run's seed.
    pub seed: u64,
    /// `(frames when the episode ended, its raw episodic return)`, in any order.
    pub points: Vec<(u64, f64)>,
    /// SPS over the run: agent steps per second summed over the envs (summary.json's `sps`).
    pub sps: f64,
    /// Trainable parameters of the policy.
    pub param_count: usize,
}

/// All seeds of one config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConfigRuns {
    /// Config name shown in the table and legend (e.g. `breakout_brims`).
    pub name: String,
    /// One entry per seed.
    pub runs: Vec<RunCurve>,
}

/// How the report summarises curves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ReportOptions {
    /// The final return is the mean over each run's last this-many episodes; curves are the
    /// trailing mean over this many episodes too, so a curve ends at the final return.
    pub last_episodes: usize,
    /// Points of the common frame grid every curve is interpolated onto.
    pub grid_points: usize,
    /// The returns an episode of the env can have, `(lowest, highest)`, where known (Pong
    /// [−21, 21], CartPole [0, 500]); intervals and bands are clamped to it.
    pub return_range: Option<(f64, f64)>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            last_episodes: 20,
            grid_points: 200,
            return_range: None,
        }
    }
}

/// Mean across seeds and its 95% percentile bootstrap interval `(lower, upper)` (seeds
/// resampled with replacement), clamped to the return range; `None` for a single seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MeanCi {
    pub mean: f64,
    pub interval: Option<(f64, f64)>,
}

/// What the report says about one config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConfigSummary {
    pub name: String,
    pub seeds: usize,
    /// Mean return over the last `last_episodes` episodes.
    pub final_return: MeanCi,
    /// Area under the smoothed curve over the common frame range divided by its length: the
    /// mean return over training, comparable across configs.
    pub auc: MeanCi,
    pub sps: f64,
    pub param_count: usize,
    /// Per seed: (seed, final return, AUC, SPS).
    pub per_seed: Vec<(u64, f64, f64, f64)>,
    /// Mean curve on the common grid and its interval at each grid point (the mean itself
    /// where there is one seed).
    pub curve_mean: Vec<f64>,
    pub curve_lower: Vec<f64>,
    pub curve_upper: Vec<f64>,
}

/// Everything computed for the report, before it is written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Comparison {
    /// The common frame grid, `[grid_points]`, from 0 to the shortest run's last episode.
    pub grid: Vec<f64>,
    pub configs: Vec<ConfigSummary>,
    pub last_episodes: usize,
    /// The return range the intervals were clamped to, if known.
    pub return_range: Option<(f64, f64)>,
}

/// Writes `report.md` and `curves.png` into `out_dir` with default options and the env's
/// return range, if known.
pub(crate) fn write_report(
    out_dir: &Path,
    runs: &[ConfigRuns],
    return_range: Option<(f64, f64)>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let options = ReportOptions {
        return_range,
        ..ReportOptions::default()
    };
    write_report_with(out_dir, runs, options)
}

/// Writes `report.md` and `curves.png` into `out_dir` (created if missing); returns their paths.
pub(crate) fn write_report_with(
    out_dir: &Path,
    runs: &[ConfigRuns],
    options: ReportOptions,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let comparison = compare(runs, options)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create report directory {}", out_dir.display()))?;
    let report = out_dir.join("report.md");
    let plot = out_dir.join("curves.png");
    std::fs::write(&report, markdown(&comparison))
        .with_context(|| format!("cannot write {}", report.display()))?;
    draw_curves(&plot, &comparison).with_context(|| format!("cannot draw {}", plot.display()))?;
    Ok((report, plot))
}

/// Computes every number the report shows.
pub(crate) fn compare(runs: &[ConfigRuns], options: ReportOptions) -> anyhow::Result<Comparison> {
    if runs.is_empty() {
        bail!("nothing to compare: no configs given");
    }
    let last_episodes = options.last_episodes.max(1);
    let mut sorted: Vec<Vec<Vec<(f64, f64)>>> = Vec::with_capacity(runs.len());
    for config in runs {
        if config.runs.is_empty() {
            bail!("config {} has no runs", config.name);
        }
        let mut per_run = Vec::with_capacity(config.runs.len());
        for run in &config.runs {
            if run.points.is_empty() {
                bail!(
                    "run {} seed {} finished no episode; train it longer",
                    config.name,
                    run.seed
                );
            }
            if let Some(&(frames, ret)) = run.points.iter().find(|(_, r)| !r.is_finite()) {
                bail!(
                    "run {} seed {} has a non-finite return {ret} at frame {frames}",
                    config.name,
                    run.seed
                );
            }
            let mut points = run.points.clone();
            points.sort_by_key(|&(frames, _)| frames);
            per_run.push(trailing_mean(&points, last_episodes));
        }
        sorted.push(per_run);
    }

    // Every run covers [0, end]; before a run's first episode its curve holds that value.
    let end = sorted
        .iter()
        .flatten()
        .map(|curve| curve.last().map_or(0.0, |p| p.0))
        .fold(f64::INFINITY, f64::min);
    let n = options.grid_points.max(2);
    let grid: Vec<f64> = (0..n).map(|i| end * i as f64 / (n - 1) as f64).collect();

    let mut configs = Vec::with_capacity(runs.len());
    for (config, curves) in runs.iter().zip(&sorted) {
        let on_grid: Vec<Vec<f64>> = curves.iter().map(|c| interpolate(c, &grid)).collect();
        let finals: Vec<f64> = config
            .runs
            .iter()
            .map(|run| {
                let mut points = run.points.clone();
                points.sort_by_key(|&(frames, _)| frames);
                let tail = &points[points.len().saturating_sub(last_episodes)..];
                tail.iter().map(|p| p.1).sum::<f64>() / tail.len() as f64
            })
            .collect();
        let aucs: Vec<f64> = on_grid.iter().map(|ys| normalised_auc(&grid, ys)).collect();
        let range = options.return_range;
        let mut curve_mean = Vec::with_capacity(n);
        let mut curve_lower = Vec::with_capacity(n);
        let mut curve_upper = Vec::with_capacity(n);
        for i in 0..n {
            let column: Vec<f64> = on_grid.iter().map(|ys| ys[i]).collect();
            let ci = mean_ci(&column, range)?;
            let (lower, upper) = ci.interval.unwrap_or((ci.mean, ci.mean));
            curve_mean.push(ci.mean);
            curve_lower.push(lower);
            curve_upper.push(upper);
        }
        let sps: Vec<f64> = config.runs.iter().map(|r| r.sps).collect();
        configs.push(ConfigSummary {
            name: config.name.clone(),
            seeds: config.runs.len(),
            final_return: mean_ci(&finals, range)?,
            auc: mean_ci(&aucs, range)?,
            sps: sps.iter().sum::<f64>() / sps.len() as f64,
            param_count: config.runs[0].param_count,
            per_seed: config
                .runs
                .iter()
                .zip(finals.iter().zip(&aucs))
                .map(|(r, (&f, &a))| (r.seed, f, a, r.sps))
                .collect(),
            curve_mean,
            curve_lower,
            curve_upper,
        });
    }
    Ok(Comparison {
        grid,
        configs,
        last_episodes,
        return_range: options.return_range,
    })
}

/// Trailing mean over the last `window` episodes at each episode end; `points` sorted by frame.
fn trailing_mean(points: &[(u64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(frames, ret))| {
            sum += ret;
            if i >= window {
                sum -= points[i - window].1;
            }
            (frames as f64, sum / (i + 1).min(window) as f64)
        })
        .collect()
}

/// Piecewise-linear interpolation of `curve` (sorted by x) at each `x`, constant outside it.
/// Several episodes ending on one frame keep the last value there.
fn interpolate(curve: &[(f64, f64)], xs: &[f64]) -> Vec<f64> {
    xs.iter()
        .map(|&x| {
            let i = curve.partition_point(|p| p.0 <= x);
            match (i.checked_sub(1).map(|j| curve[j]), curve.get(i)) {
                (None, Some(&(_, y))) => y,
                (Some((_, y)), None) => y,
                (Some((x0, y0)), Some(&(x1, y1))) => y0 + (y1 - y0) * (x - x0) / (x1 - x0),
                (None, None) => f64::NAN,
            }
        })
        .collect()
}

/// Trapezoid area under `ys` over `grid`, divided by the grid's length (a mean return).
fn normalised_auc(grid: &[f64], ys: &[f64]) -> f64 {
    let span = grid.last().copied().unwrap_or(0.0) - grid.first().copied().unwrap_or(0.0);
    if span <= 0.0 {
        return ys.first().copied().unwrap_or(f64::NAN);
    }
    let area: f64 = grid
        .windows(2)
        .zip(ys.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
        .sum();
    area / span
}

/// The resampling of every interval in the report: rliable's 2,000 resamples for curves, 95%,
/// a fixed seed so a report is a pure function of its runs.
const BOOTSTRAP: rlstats::Bootstrap = rlstats::Bootstrap {
    reps: rlstats::MIN_REPS,
    confidence: 0.95,
    seed: 0,
};

/// The mean of `xs` (one value per seed) and its percentile bootstrap interval, clamped to
/// `range`; no interval for one seed.
fn mean_ci(xs: &[f64], range: Option<(f64, f64)>) -> anyhow::Result<MeanCi> {
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return Ok(MeanCi {
            mean,
            interval: None,
        });
    }
    let rows: Vec<[f64; 1]> = xs.iter().map(|&x| [x]).collect();
    let scores = rlstats::Scores::from_rows(&rows)?;
    let ci = rlstats::stratified_bootstrap_ci(&scores, rlstats::mean, &BOOTSTRAP)?;
    let clamp = |x: f64| range.map_or(x, |(lo, hi)| x.clamp(lo, hi));
    Ok(MeanCi {
        mean,
        interval: Some((clamp(ci.lower), clamp(ci.upper))),
    })
}

fn fmt_ci(ci: MeanCi) -> String {
    match ci.interval {
        Some((lo, hi)) => format!("{:.2} [{lo:.2}, {hi:.2}]", ci.mean),
        None => format!("{:.2} (1 seed, no CI)", ci.mean),
    }
}

/// Thousands separators: 1234567 -> "1,234,567".
fn fmt_count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 1500000 -> "1.5M", 20000 -> "20k".
fn fmt_frames(x: f64) -> String {
    if x >= 1e6 {
        format!("{}M", trim(x / 1e6))
    } else if x >= 1e3 {
        format!("{}k", trim(x / 1e3))
    } else {
        trim(x)
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The Markdown report.
pub(crate) fn markdown(c: &Comparison) -> String {
    let end = c.grid.last().copied().unwrap_or(0.0);
    let mut md = String::from("# LSTM vs BRIMs comparison\n\n");
    let _ = writeln!(
        md,
        "Final return = mean raw episodic return over each run's last {} episodes. \
         AUC = area under the learning curve (trailing mean over {} episodes) from 0 to {} frames \
         (the shortest run), divided by that length: the mean return over training. \
         [a, b] is the 95% percentile bootstrap interval of the mean across seeds ({} \
         resamples of the seeds){}. SPS = agent steps per second, summed over the envs.\n",
        c.last_episodes,
        c.last_episodes,
        fmt_frames(end),
        BOOTSTRAP.reps,
        match c.return_range {
            Some((lo, hi)) => format!(", within the env's return range [{lo}, {hi}]"),
            None => String::new(),
        }
    );
    md.push_str("| config | seeds | final return | AUC (return per frame) | SPS | parameters |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|\n");
    for s in &c.configs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {} |",
            s.name,
            s.seeds,
            fmt_ci(s.final_return),
            fmt_ci(s.auc),
            s.sps,
            fmt_count(s.param_count)
        );
    }
    md.push_str("\n## Per seed\n\n| config | seed | final return | AUC | SPS |\n|---|---:|---:|---:|---:|\n");
    for s in &c.configs {
        for &(seed, fin, auc, sps) in &s.per_seed {
            let _ = writeln!(
                md,
                "| {} | {seed} | {fin:.2} | {auc:.2} | {sps:.0} |",
                s.name
            );
        }
    }
    md.push_str(
        "\nLearning curves: curves.png (mean across seeds, shaded 95% bootstrap interval).\n",
    );
    md
}

/// Draws the learning curves: mean across seeds with a shaded 95% bootstrap band per config,
/// each config in its core's colour (rlstats' palette, the same in every figure).
pub(crate) fn draw_curves(path: &Path, c: &Comparison) -> anyhow::Result<()> {
    let sans = rlstats::font_family();
    let x_max = c.grid.last().copied().unwrap_or(0.0).max(1.0);
    let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for s in &c.configs {
        for (lo, hi) in s.curve_lower.iter().zip(&s.curve_upper) {
            y_min = y_min.min(*lo);
            y_max = y_max.max(*hi);
        }
    }
    if !(y_min.is_finite() && y_max.is_finite()) {
        bail!("learning curves have no finite values");
    }
    let pad = ((y_max - y_min) * 0.05).max(0.5);
    let (y_min, y_max) = (y_min - pad, y_max + pad);

    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Episodic return (trailing mean of {} episodes), mean and 95% bootstrap CI across seeds",
                c.last_episodes
            ),
            (sans, 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, y_min..y_max)?;
    let x_fmt = |x: &f64| fmt_frames(*x);
    let y_fmt = |y: &f64| trim(*y);
    chart
        .configure_mesh()
        .x_desc("frames")
        .y_desc("episodic return")
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((sans, 15))
        .axis_desc_style((sans, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    for s in &c.configs {
        let colour = rlstats::series_colour(&s.name);
        let mut band: Vec<(f64, f64)> = c.grid.iter().copied().zip(s.curve_upper.clone()).collect();
        band.extend(c.grid.iter().copied().zip(s.curve_lower.clone()).rev());
        chart.draw_series(std::iter::once(Polygon::new(
            band,
            colour.mix(0.2).filled(),
        )))?;
        let label = format!("{} ({} seeds)", s.name, s.seeds);
        chart
            .draw_series(LineSeries::new(
                c.grid.iter().copied().zip(s.curve_mean.iter().copied()),
                colour.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((sans, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `(frames, return)` pairs from a CSV with a header line: the frames from column
/// `frames_col`, the return from `return_col` (returns.csv: 1 and 2; a published run's
/// `frames,episodic_return`: 0 and 1). A line that does not parse, or a return that is not
/// finite, is an error naming the file and line.
pub(crate) fn read_frames_returns(
    path: &Path,
    frames_col: usize,
    return_col: usize,
) -> anyhow::Result<Vec<(u64, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let frames = fields.get(frames_col).and_then(|f| f.parse::<u64>().ok());
            let ret = fields.get(return_col).and_then(|r| r.parse::<f64>().ok());
            frames
                .zip(ret)
                .filter(|(_, r)| r.is_finite())
                .with_context(|| format!("{}:{}: malformed line {line:?}", path.display(), i + 2))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn run(seed: u64, slope: f64, episodes: u64, sps: f64) -> RunCurve {
        RunCurve {
            seed,
            points: (1..=episodes)
                .map(|i| (i * 100, slope * i as f64))
                .collect(),
            sps,
            param_count: 1234,
        }
    }

    #[test]
    fn mean_ci_of_three_seeds_is_a_bootstrap_interval_inside_the_seeds() {
        let ci = mean_ci(&[1.0, 2.0, 3.0], None).unwrap();
        assert_eq!(ci.mean, 2.0);
        let (lo, hi) = ci.interval.unwrap();
        // The resampled means of three seeds lie in [1, 3]; a t interval would be 2 ± 2.48.
        assert!(
            (1.0..2.0).contains(&lo) && hi > 2.0 && hi <= 3.0,
            "{lo} {hi}"
        );
        assert_eq!(mean_ci(&[5.0], None).unwrap().interval, None);
        assert_eq!(
            mean_ci(&[1.0, 2.0, 3.0], None).unwrap(),
            ci,
            "the same seeds, the same interval"
        );
    }

    /// Issue 24, 14: Pong's band reached −36 and +35 (mean ± t·s of 3 seeds on a game bounded
    /// by ±21). Bands and table intervals now stay within the return range.
    #[test]
    fn intervals_and_bands_stay_within_the_return_range() {
        // Three Pong-like seeds: two lose every point, one wins every point, at the end.
        let pong = |seed: u64, last: f64| RunCurve {
            seed,
            points: (1..=40)
                .map(|i| (i * 1000, if i > 20 { last } else { -21.0 }))
                .collect(),
            sps: 1.0,
            param_count: 1,
        };
        let runs = vec![ConfigRuns {
            name: "pong_brims".into(),
            runs: vec![pong(1, -21.0), pong(2, -21.0), pong(3, 21.0)],
        }];
        let options = ReportOptions {
            return_range: Some((-21.0, 21.0)),
            ..ReportOptions::default()
        };
        let c = compare(&runs, options).unwrap();
        let s = &c.configs[0];
        let (lo, hi) = s.final_return.interval.unwrap();
        assert!(
            (-21.0..=21.0).contains(&lo) && (-21.0..=21.0).contains(&hi),
            "{lo} {hi}"
        );
        assert!(lo <= s.final_return.mean && s.final_return.mean <= hi);
        assert!(
            hi > lo,
            "three different seeds give an interval, not a point"
        );
        for ((lower, upper), mean) in s.curve_lower.iter().zip(&s.curve_upper).zip(&s.curve_mean) {
            assert!(*lower >= -21.0 && *upper <= 21.0, "band [{lower}, {upper}]");
            assert!(lower <= mean && mean <= upper);
        }
        let md = markdown(&c);
        assert!(
            md.contains("within the env's return range [-21, 21]"),
            "{md}"
        );
        // Unknown range: the intervals are the bootstrap's own (still inside the seeds here).
        let free = compare(&runs, ReportOptions::default()).unwrap();
        let (lo, hi) = free.configs[0].final_return.interval.unwrap();
        assert!(lo >= -21.0 && hi <= 21.0);
    }

    #[test]
    fn interpolation_is_linear_inside_and_constant_outside() {
        let curve = [(10.0, 1.0), (20.0, 3.0), (20.0, 5.0), (30.0, 5.0)];
        let ys = interpolate(&curve, &[0.0, 15.0, 20.0, 25.0, 40.0]);
        assert_eq!(ys, vec![1.0, 2.0, 5.0, 5.0, 5.0]);
    }

    #[test]
    fn auc_of_a_line_is_its_mean() {
        let grid: Vec<f64> = (0..=10).map(|i| i as f64).collect();
        let ys: Vec<f64> = grid.iter().map(|x| 2.0 * x).collect();
        assert!((normalised_auc(&grid, &ys) - 10.0).abs() < 1e-12);
    }

    #[test]
    fn trailing_mean_uses_at_most_window_episodes() {
        let m = trailing_mean(&[(1, 1.0), (2, 3.0), (3, 5.0), (4, 7.0)], 2);
        assert_eq!(m, vec![(1.0, 1.0), (2.0, 2.0), (3.0, 4.0), (4.0, 6.0)]);
    }

    #[test]
    fn comparison_ranks_the_faster_learner_higher() {
        let runs = vec![
            ConfigRuns {
                name: "slow".into(),
                runs: vec![run(1, 1.0, 50, 100.0), run(2, 1.2, 50, 300.0)],
            },
            ConfigRuns {
                name: "fast".into(),
                runs: vec![run(1, 2.0, 60, 50.0), run(2, 2.2, 60, 50.0)],
            },
        ];
        let c = compare(
            &runs,
            ReportOptions {
                last_episodes: 10,
                grid_points: 51,
                return_range: None,
            },
        )
        .unwrap();
        // Common grid ends at the shortest run's last episode (50 * 100 frames).
        assert_eq!((c.grid[0], *c.grid.last().unwrap()), (0.0, 5000.0));
        let (slow, fast) = (&c.configs[0], &c.configs[1]);
        // Final = mean of returns of episodes 41..=50 = 45.5 * slope, averaged over seeds.
        assert!((slow.final_return.mean - 45.5 * 1.1).abs() < 1e-9);
        assert!((fast.final_return.mean - 55.5 * 2.1).abs() < 1e-9);
        assert!(fast.auc.mean > slow.auc.mean);
        assert_eq!(slow.sps, 200.0);
        assert_eq!(slow.per_seed.len(), 2);
        assert!(slow
            .curve_lower
            .iter()
            .zip(&slow.curve_upper)
            .all(|(lo, hi)| lo <= hi));
        let md = markdown(&c);
        assert!(md.contains("| slow | 2 | 50.05 ["), "{md}");
        assert!(md.contains("| 200 | 1,234 |"), "{md}");
    }

    #[test]
    fn bad_input_is_an_error_naming_the_run() {
        let empty = vec![ConfigRuns {
            name: "a".into(),
            runs: vec![RunCurve {
                seed: 7,
                points: vec![],
                sps: 1.0,
                param_count: 1,
            }],
        }];
        let err = compare(&empty, ReportOptions::default()).unwrap_err();
        assert!(err.to_string().contains("a seed 7"), "{err}");
        assert!(compare(&[], ReportOptions::default()).is_err());
    }

    #[test]
    fn writes_report_and_a_png_of_the_plot_size() {
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![
            ConfigRuns {
                name: "cartpole_lstm".into(),
                runs: vec![run(1, 1.0, 40, 100.0), run(2, 1.5, 45, 100.0)],
            },
            ConfigRuns {
                name: "cartpole_brims".into(),
                runs: vec![run(1, 2.0, 40, 80.0)],
            },
        ];
        let (report, plot) = write_report(dir.path(), &runs, None).unwrap();
        let md = std::fs::read_to_string(&report).unwrap();
        assert!(md.contains("cartpole_brims | 1 |"), "{md}");
        let bytes = std::fs::read(&plot).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR width and height, big endian, right after the signature and chunk header.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), PLOT_SIZE);
    }

    /// How many pixels of the PNG at `path` are exactly `colour`.
    pub(crate) fn pixels_of(path: &Path, colour: RGBColor) -> usize {
        let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf[..info.buffer_size()]
            .chunks(info.color_type.samples())
            .filter(|p| p[..3] == [colour.0, colour.1, colour.2])
            .count()
    }

    /// Issue 24, 13: the learning curves colour each config by its core, so BRIMs is the
    /// same green in a figure of three cores sorted by name and in one of two in another order.
    #[test]
    fn curves_colour_each_core_the_same_in_every_figure() {
        let dir = tempfile::tempdir().unwrap();
        let configs = |names: &[&str]| -> Vec<ConfigRuns> {
            names
                .iter()
                .enumerate()
                .map(|(k, name)| ConfigRuns {
                    name: name.to_string(),
                    runs: vec![
                        run(1, 1.0 + k as f64, 40, 1.0),
                        run(2, 1.5 + k as f64, 40, 1.0),
                    ],
                })
                .collect()
        };
        let draw = |file: &str, names: &[&str]| {
            let c = compare(&configs(names), ReportOptions::default()).unwrap();
            let path = dir.path().join(file);
            draw_curves(&path, &c).unwrap();
            path
        };
        // Sorted by name, as `compare --runs` orders them: brims, lstm, rims.
        let first = draw("first.png", &["brims", "lstm", "rims"]);
        let second = draw("second.png", &["breakout_lstm", "breakout_brims"]);
        let colour = rlstats::series_colour;
        for core in ["lstm", "rims", "brims"] {
            let n = pixels_of(&first, colour(core));
            assert!(n > 100, "first figure: {n} pixels of {core}'s colour");
        }
        for core in ["lstm", "brims"] {
            let n = pixels_of(&second, colour(core));
            assert!(n > 100, "second figure: {n} pixels of {core}'s colour");
        }
        assert_eq!(pixels_of(&second, colour("rims")), 0);
    }
}
