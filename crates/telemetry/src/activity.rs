//! The module-activity picture: time on x, modules stacked on y, one band per BRIMs layer.

use crate::TelemetryError;

/// Pixels per step when the episode is short enough.
const STEP_PX: usize = 4;
/// Pixel rows per module.
const ROW_PX: usize = 8;
/// Widest default picture; longer episodes are binned (a column = mean over several steps).
const MAX_WIDTH: usize = 2048;
/// Height of the separator line between layers.
const SEPARATOR_PX: usize = 2;

const ACTIVE: [f32; 3] = [255.0, 190.0, 40.0];
const INACTIVE: [f32; 3] = [25.0, 25.0, 35.0];
/// An inactive module that paid little attention to the null input (almost won) is drawn
/// toward this colour, so near-misses show.
const INACTIVE_ATTENDING: [f32; 3] = [70.0, 95.0, 150.0];
const SEPARATOR: [u8; 3] = [200, 200, 200];
const NO_DATA: [u8; 3] = [0, 0, 0];

/// One layer's activity over an episode: which of its modules were active at each step, and
/// optionally each module's attention on the null input (in `[0, 1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityBand {
    steps: usize,
    modules: usize,
    active: Vec<bool>,
    null_attention: Option<Vec<f32>>,
}

impl ActivityBand {
    /// `active` is `[steps, modules]` row-major: `active[t * modules + j]` says whether module
    /// `j` was active at step `t`.
    pub fn new(steps: usize, modules: usize, active: Vec<bool>) -> Result<Self, TelemetryError> {
        if modules == 0 {
            return Err(TelemetryError::Invalid(
                "an activity band needs at least one module".into(),
            ));
        }
        check_len(
            "activity matrix [steps, modules]",
            steps * modules,
            active.len(),
        )?;
        Ok(Self {
            steps,
            modules,
            active,
            null_attention: None,
        })
    }

    /// Adds null-attention scores, `[steps, modules]` row-major like `active`; values are
    /// clamped to `[0, 1]` when drawn.
    pub fn with_null_attention(mut self, scores: Vec<f32>) -> Result<Self, TelemetryError> {
        check_len(
            "null attention [steps, modules]",
            self.steps * self.modules,
            scores.len(),
        )?;
        self.null_attention = Some(scores);
        Ok(self)
    }

    /// Number of steps recorded.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Number of modules in this layer.
    pub fn modules(&self) -> usize {
        self.modules
    }

    /// Whether module `module` was active at step `step` (false outside the recorded range).
    pub fn is_active(&self, step: usize, module: usize) -> bool {
        step < self.steps && module < self.modules && self.active[step * self.modules + module]
    }

    /// Null-attention scores `[steps, modules]` row-major, if given.
    pub fn null_attention(&self) -> Option<&[f32]> {
        self.null_attention.as_deref()
    }

    /// Fraction of steps each module was active, `[modules]` (zeros for an empty band); what
    /// `brims/layer{l}/module{j}_active_rate` logs.
    pub fn active_rates(&self) -> Vec<f64> {
        let mut counts = vec![0usize; self.modules];
        for row in self.active.chunks_exact(self.modules) {
            for (c, &a) in counts.iter_mut().zip(row) {
                *c += usize::from(a);
            }
        }
        counts
            .into_iter()
            .map(|c| c as f64 / self.steps.max(1) as f64)
            .collect()
    }

    /// Mean colour of module `module` over steps `[from, to)`; `None` if no step is recorded.
    fn cell_colour(&self, module: usize, from: usize, to: usize) -> Option<[u8; 3]> {
        let to = to.min(self.steps);
        if from >= to {
            return None;
        }
        let mut sum = [0.0f32; 3];
        for t in from..to {
            let i = t * self.modules + module;
            let colour = if self.active[i] {
                ACTIVE
            } else {
                let attending = self
                    .null_attention
                    .as_ref()
                    .map_or(0.0, |n| 1.0 - n[i].clamp(0.0, 1.0));
                lerp(INACTIVE, INACTIVE_ATTENDING, attending)
            };
            for (s, c) in sum.iter_mut().zip(colour) {
                *s += c;
            }
        }
        let n = (to - from) as f32;
        Some(sum.map(|s| (s / n).round().clamp(0.0, 255.0) as u8))
    }
}

/// An RGB picture: `rgb` is `[height, width, 3]` row-major u8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `[height, width, 3]` row-major.
    pub rgb: Vec<u8>,
}

/// Draws `layers` (index 0 = bottom layer) as one picture: time on x, one band of module rows
/// per layer with the top layer on top, a light separator between layers. Active cells are
/// amber, inactive ones dark (bluish when the module paid little attention to the null input).
/// Short episodes get 4 px per step and 8 px rows per module; episodes longer than 512 steps are squeezed to
/// at most 2048 px, each column showing the mean over its steps.
pub fn module_activity_image(layers: &[ActivityBand]) -> RgbImage {
    let steps = layers.iter().map(|b| b.steps).max().unwrap_or(0).max(1);
    let step_px = (MAX_WIDTH / steps).clamp(1, STEP_PX);
    let width = (steps * step_px).min(MAX_WIDTH);
    let rows: usize = layers.iter().map(|b| b.modules).sum();
    let height = (rows * ROW_PX + SEPARATOR_PX * layers.len().saturating_sub(1)).max(1);
    module_activity_image_sized(layers, width as u32, height as u32)
}

/// Like [`module_activity_image`] but exactly `width × height` pixels (at least 1 × 1): the
/// whole episode spans the width and the layers share the height in proportion to their
/// module counts (separators are dropped when the height is too small for them).
pub fn module_activity_image_sized(layers: &[ActivityBand], width: u32, height: u32) -> RgbImage {
    let (w, h) = (width.max(1) as usize, height.max(1) as usize);
    let steps = layers.iter().map(|b| b.steps).max().unwrap_or(0);
    let rows = row_layout(layers, h);
    let mut rgb = vec![0u8; w * h * 3];
    for x in 0..w {
        let from = x * steps / w;
        let to = ((x + 1) * steps / w).max(from + 1);
        for (y, row) in rows.iter().enumerate() {
            let colour = match *row {
                Row::Separator => SEPARATOR,
                Row::Module { band, module } => layers[band]
                    .cell_colour(module, from, to)
                    .unwrap_or(NO_DATA),
                Row::Empty => NO_DATA,
            };
            let i = (y * w + x) * 3;
            rgb[i..i + 3].copy_from_slice(&colour);
        }
    }
    RgbImage {
        width: w as u32,
        height: h as u32,
        rgb,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Row {
    Module { band: usize, module: usize },
    Separator,
    Empty,
}

/// What each pixel row shows: top layer first, module 0 at the top of its band.
fn row_layout(layers: &[ActivityBand], height: usize) -> Vec<Row> {
    let total: usize = layers.iter().map(|b| b.modules).sum();
    if total == 0 {
        return vec![Row::Empty; height];
    }
    let gaps = layers.len() - 1;
    let sep = if height >= total + gaps * SEPARATOR_PX {
        SEPARATOR_PX
    } else {
        0
    };
    let content = height - gaps * sep;
    let mut rows = Vec::with_capacity(height);
    let mut modules_above = 0;
    for (k, band) in (0..layers.len()).rev().enumerate() {
        if k > 0 {
            rows.extend(std::iter::repeat_n(Row::Separator, sep));
        }
        let modules = layers[band].modules;
        let top = modules_above * content / total;
        let bottom = (modules_above + modules) * content / total;
        for y in 0..bottom - top {
            let module = (y * modules / (bottom - top).max(1)).min(modules - 1);
            rows.push(Row::Module { band, module });
        }
        modules_above += modules;
    }
    rows.resize(height, Row::Empty);
    rows
}

/// PNG-encodes `rgb` (`[height, width, 3]` row-major).
pub(crate) fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>, TelemetryError> {
    if width == 0 || height == 0 {
        return Err(TelemetryError::Invalid(format!(
            "image must not be empty, got {width}x{height}"
        )));
    }
    check_len(
        "RGB image [height, width, 3]",
        width as usize * height as usize * 3,
        rgb.len(),
    )?;
    let png_err = |e: png::EncodingError| TelemetryError::Png {
        width,
        height,
        message: e.to_string(),
    };
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(rgb).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), TelemetryError> {
    if expected == got {
        Ok(())
    } else {
        Err(TelemetryError::Shape {
            what,
            expected,
            got,
        })
    }
}

fn lerp(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [0, 1, 2].map(|i| a[i] + (b[i] - a[i]) * t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixel(img: &RgbImage, x: usize, y: usize) -> [u8; 3] {
        let i = (y * img.width as usize + x) * 3;
        [img.rgb[i], img.rgb[i + 1], img.rgb[i + 2]]
    }

    /// Layer 0: 3 modules, module 0 always active; layer 1: 2 modules, module 1 active on odd steps.
    fn two_layers(steps: usize) -> Vec<ActivityBand> {
        let l0 = (0..steps * 3).map(|i| i % 3 == 0).collect();
        let l1 = (0..steps * 2)
            .map(|i| i % 2 == 1 && (i / 2) % 2 == 1)
            .collect();
        vec![
            ActivityBand::new(steps, 3, l0).unwrap(),
            ActivityBand::new(steps, 2, l1).unwrap(),
        ]
    }

    #[test]
    fn short_episode_gets_four_px_cells_top_layer_on_top() {
        let img = module_activity_image(&two_layers(10));
        assert_eq!((img.width, img.height), (40, 5 * 8 + 2));
        assert_eq!(img.rgb.len(), 40 * 42 * 3);
        let active = ACTIVE.map(|c| c as u8);
        let inactive = INACTIVE.map(|c| c as u8);
        // Rows 0..16: layer 1 (module 0 never active, module 1 active on odd steps).
        assert_eq!(pixel(&img, 1, 1), inactive);
        assert_eq!(pixel(&img, 1, 10), inactive); // step 0
        assert_eq!(pixel(&img, 5, 10), active); // step 1
        assert_eq!(pixel(&img, 0, 16), SEPARATOR);
        assert_eq!(pixel(&img, 39, 17), SEPARATOR);
        // Rows 18..42: layer 0, module 0 active at every step.
        assert_eq!(pixel(&img, 0, 18), active);
        assert_eq!(pixel(&img, 39, 25), active);
        assert_eq!(pixel(&img, 20, 28), inactive);
    }

    #[test]
    fn long_episode_is_binned_to_the_maximum_width() {
        let img = module_activity_image(&two_layers(5000));
        assert_eq!(img.width as usize, MAX_WIDTH);
        // Layer 1 module 1 is active half the time: its columns are the mean colour.
        let mid = pixel(&img, 100, 10);
        for c in 0..3 {
            let expect = (ACTIVE[c] + INACTIVE[c]) / 2.0;
            assert!((mid[c] as f32 - expect).abs() <= 2.0, "{mid:?}");
        }
    }

    #[test]
    fn null_attention_lightens_inactive_cells_only() {
        let band = ActivityBand::new(2, 1, vec![false, true])
            .unwrap()
            .with_null_attention(vec![0.0, 0.0])
            .unwrap();
        let img = module_activity_image(&[band]);
        assert_eq!(pixel(&img, 0, 0), INACTIVE_ATTENDING.map(|c| c as u8));
        assert_eq!(pixel(&img, 4, 0), ACTIVE.map(|c| c as u8));
    }

    #[test]
    fn sized_image_has_exact_size_and_pads_shorter_bands() {
        let short = ActivityBand::new(2, 1, vec![true, true]).unwrap();
        let long = ActivityBand::new(8, 1, vec![true; 8]).unwrap();
        let img = module_activity_image_sized(&[short, long], 80, 30);
        assert_eq!((img.width, img.height), (80, 30));
        // Bottom band (short, 2 of 8 steps) has no data after a quarter of the width.
        assert_eq!(pixel(&img, 79, 29), NO_DATA);
        assert_eq!(pixel(&img, 0, 29), ACTIVE.map(|c| c as u8));
        assert_eq!(pixel(&img, 79, 0), ACTIVE.map(|c| c as u8));
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(ActivityBand::new(3, 2, vec![true; 5]).is_err());
        assert!(ActivityBand::new(3, 0, vec![]).is_err());
        let band = ActivityBand::new(1, 2, vec![true, false]).unwrap();
        assert!(band.with_null_attention(vec![0.5]).is_err());
        assert!(encode_png(2, 2, &[0; 11]).is_err());
        assert!(encode_png(0, 2, &[]).is_err());
    }

    #[test]
    fn active_rates_are_per_module_fractions() {
        let rates = two_layers(10)[1].active_rates();
        assert_eq!(rates, vec![0.0, 0.5]);
    }
}
