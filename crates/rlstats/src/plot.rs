//! PNG plots of the across-task statistics: performance profiles and sample efficiency, each a
//! line per algorithm with its shaded confidence band, axis labels and a legend.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::bootstrap::Interval;
use crate::error::{Result, StatsError};

/// The font the plots' text is drawn with: DejaVu Sans cut down to ASCII and `±` (14 kB; licence
/// in assets/DejaVuSans-LICENSE.txt). plotters' ab_glyph backend has no system fonts, so text
/// outside ASCII (e.g. `τ`) is not drawn: labels here are ASCII.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");
/// The plotters font family the bundled font is registered as (see [`font_family`]).
pub const FAMILY: &str = "rlstats-sans";
static REGISTER_FONT: Once = Once::new();

const PLOT_SIZE: (u32, u32) = (1024, 640);
/// The colour of each core, the same in every figure of the project (Okabe–Ito, colour-blind
/// friendly): a series is coloured by its core label ([`core_label`]), never by its position,
/// so a core keeps its colour whatever the other series are and in whatever order they come.
pub const CORE_COLOURS: [(&str, RGBColor); 7] = [
    ("lstm", RGBColor(0, 114, 178)),
    ("rims", RGBColor(213, 94, 0)),
    ("brims", RGBColor(0, 158, 115)),
    ("brims_no_top_down", RGBColor(204, 121, 167)),
    ("brims_dense", RGBColor(230, 159, 0)),
    ("brims_one_module", RGBColor(86, 180, 233)),
    ("lstm_matched", RGBColor(0, 0, 0)),
];

/// The core label of a series name: the longest label of [`CORE_COLOURS`] that the name is or
/// ends with after an `_`, a `-` or a space (`breakout_brims` → `brims`, `cartpole_lstm (3
/// seeds)` → `lstm`, `breakout_brims_no_top_down` → `brims_no_top_down`); otherwise the name
/// before any ` (` suffix, as it is.
pub fn core_label(name: &str) -> &str {
    let base = name.split(" (").next().unwrap_or(name).trim();
    CORE_COLOURS
        .iter()
        .map(|(label, _)| *label)
        .filter(|label| {
            base == *label
                || base.strip_suffix(label).is_some_and(|head| {
                    head.ends_with('_') || head.ends_with('-') || head.ends_with(' ')
                })
        })
        .max_by_key(|label| label.len())
        .unwrap_or(base)
}

/// The colour of a series: its core's colour from [`CORE_COLOURS`], or for a label outside the
/// table a colour derived from a hash of the label (the same in every run and every figure)
/// that keeps clear of the fixed colours.
pub fn series_colour(name: &str) -> RGBColor {
    let label = core_label(name);
    if let Some((_, colour)) = CORE_COLOURS.iter().find(|(l, _)| *l == label) {
        return *colour;
    }
    // FNV-1a: stable across Rust versions and platforms, unlike std's hasher.
    let hash = label.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut hue = (hash % 360) as f64;
    let mut colour = hsv(hue, 0.7, 0.75);
    // Step round the hue circle until the colour is far from every fixed one (40 steps of 9°
    // cover the circle; the fixed colours leave most of it free).
    for _ in 0..40 {
        if CORE_COLOURS
            .iter()
            .all(|(_, fixed)| distance(*fixed, colour) >= 90.0)
        {
            break;
        }
        hue = (hue + 9.0) % 360.0;
        colour = hsv(hue, 0.7, 0.75);
    }
    colour
}

fn hsv(hue: f64, saturation: f64, value: f64) -> RGBColor {
    let c = value * saturation;
    let h = hue / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = value - c;
    let byte = |v: f64| ((v + m) * 255.0).round() as u8;
    RGBColor(byte(r), byte(g), byte(b))
}

fn distance(a: RGBColor, b: RGBColor) -> f64 {
    let d = |x: u8, y: u8| (f64::from(x) - f64::from(y)).powi(2);
    (d(a.0, b.0) + d(a.1, b.1) + d(a.2, b.2)).sqrt()
}

/// One labelled curve with a confidence band: `y[i]` is the estimate and interval at `x[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Legend text (the algorithm or config), ASCII.
    pub label: String,
    /// Abscissae in increasing order (thresholds `τ`, or frames).
    pub x: Vec<f64>,
    /// Estimate (line) and interval (shaded band) at each `x`.
    pub y: Vec<Interval>,
}

/// Draws performance profiles ([`crate::performance_profile`] per algorithm, `x` = the
/// thresholds): the fraction of runs with score > tau against tau, with bootstrap bands.
/// `score_name` names the score on the axis, e.g. "human-normalised score" or "return".
pub fn plot_performance_profiles(path: &Path, profiles: &[Band], score_name: &str) -> Result<()> {
    draw(
        path,
        profiles,
        &Axes {
            title: format!("Performance profiles ({score_name}), shaded 95% bootstrap CI"),
            x_desc: format!("threshold tau ({score_name})"),
            y_desc: format!("fraction of runs with {score_name} > tau"),
            x_is_frames: false,
            unit_y: true,
            mark_points: false,
            legend: SeriesLabelPosition::UpperRight,
        },
    )
}

/// Draws sample efficiency ([`crate::sample_efficiency`] per algorithm, `x` = frames): IQM of
/// `score_name` against training frames, with bootstrap bands.
pub fn plot_sample_efficiency(path: &Path, curves: &[Band], score_name: &str) -> Result<()> {
    draw(
        path,
        curves,
        &Axes {
            title: format!("Sample efficiency: IQM of {score_name}, shaded 95% bootstrap CI"),
            x_desc: "frames".into(),
            y_desc: format!("IQM {score_name}"),
            x_is_frames: true,
            unit_y: false,
            mark_points: true,
            legend: SeriesLabelPosition::LowerRight,
        },
    )
}

struct Axes {
    title: String,
    x_desc: String,
    y_desc: String,
    /// Label ticks as 1.5M, 200k.
    x_is_frames: bool,
    /// The y axis is a fraction: always show [0, 1].
    unit_y: bool,
    /// Mark every estimate with a dot.
    mark_points: bool,
    legend: SeriesLabelPosition,
}

fn check_bands(bands: &[Band]) -> Result<()> {
    if bands.is_empty() {
        return Err(StatsError::Empty {
            what: "plot: series",
        });
    }
    for b in bands {
        if b.x.is_empty() {
            return Err(StatsError::Empty { what: "plot: x" });
        }
        if b.x.len() != b.y.len() {
            return Err(StatsError::Shape {
                what: "plot: x and y of a series",
                expected: format!("{} points, one per x", b.x.len()),
                got: format!("{} in {:?}", b.y.len(), b.label),
            });
        }
        let ys = b.y.iter().flat_map(|i| [i.point, i.lower, i.upper]);
        crate::error::check_finite("plot: x", &b.x)?;
        crate::error::check_finite("plot: y", &ys.collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Registers the bundled font (once per process) and returns its family name, for any plot
/// of this workspace that draws text.
pub fn font_family() -> &'static str {
    REGISTER_FONT.call_once(|| {
        // The font is compiled in and known to parse (tested); were it not, drawing text would
        // fail with a font error, which the caller's drawing returns.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
    FAMILY
}

fn draw(path: &Path, bands: &[Band], axes: &Axes) -> Result<()> {
    check_bands(bands)?;
    font_family();
    let plot_err = |e: &dyn std::fmt::Display| StatsError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };

    let xs = bands.iter().flat_map(|b| b.x.iter().copied());
    let (x_min, x_max) = min_max(xs);
    let (x_min, x_max) = if x_max > x_min {
        (x_min, x_max)
    } else {
        (x_min - 0.5, x_max + 0.5)
    };
    let (y_min, y_max) = if axes.unit_y {
        (-0.02, 1.02)
    } else {
        let ys = bands
            .iter()
            .flat_map(|b| b.y.iter().flat_map(|i| [i.point, i.lower, i.upper]));
        let (lo, hi) = min_max(ys);
        let pad = ((hi - lo) * 0.05).max(1e-3 * hi.abs().max(1.0));
        (lo - pad, hi + pad)
    };

    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&axes.title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_min..x_max, y_min..y_max)
        .map_err(|e| plot_err(&e))?;
    let x_fmt = |x: &f64| {
        if axes.x_is_frames {
            fmt_frames(*x)
        } else {
            trim(*x)
        }
    };
    let y_fmt = |y: &f64| trim(*y);
    chart
        .configure_mesh()
        .x_desc(axes.x_desc.as_str())
        .y_desc(axes.y_desc.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| plot_err(&e))?;

    for b in bands {
        let colour = series_colour(&b.label);
        let mut outline: Vec<(f64, f64)> =
            b.x.iter().zip(&b.y).map(|(&x, i)| (x, i.upper)).collect();
        outline.extend(b.x.iter().zip(&b.y).rev().map(|(&x, i)| (x, i.lower)));
        chart
            .draw_series(std::iter::once(Polygon::new(
                outline,
                colour.mix(0.2).filled(),
            )))
            .map_err(|e| plot_err(&e))?;
        let line = b.x.iter().zip(&b.y).map(|(&x, i)| (x, i.point));
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))
            .map_err(|e| plot_err(&e))?
            .label(b.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
        if axes.mark_points || b.x.len() == 1 {
            // Checkpoints are few: mark where the estimates are (and a single point draws no line).
            let points =
                b.x.iter()
                    .zip(&b.y)
                    .map(|(&x, i)| Circle::new((x, i.point), 4, colour.filled()));
            chart.draw_series(points).map_err(|e| plot_err(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .position(axes.legend.clone())
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err(&e))?;
    root.present().map_err(|e| plot_err(&e))?;
    Ok(())
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// 1234567 frames -> "1.23M", 200000 -> "200k".
fn fmt_frames(x: f64) -> String {
    if x.abs() >= 1e6 {
        format!("{}M", trim(x / 1e6))
    } else if x.abs() >= 1e3 {
        format!("{}k", trim(x / 1e3))
    } else {
        trim(x)
    }
}

/// At most 2 decimals, trailing zeros dropped: 0.50 -> "0.5", 2.00 -> "2".
fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_font_parses() {
        assert!(plotters::style::register_font("rlstats-test", FontStyle::Normal, FONT).is_ok());
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(fmt_frames(1_500_000.0), "1.5M");
        assert_eq!(fmt_frames(200_000.0), "200k");
        assert_eq!(trim(0.50), "0.5");
        assert_eq!(trim(-0.001), "0");
        assert_eq!(trim(100.0), "100");
    }
}
