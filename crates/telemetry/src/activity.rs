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

/// The colour of an active module in every activity picture of the project: the TensorBoard
/// image, the GIF's strip and `brims analyze`'s raster. Each channel is a multiple of 32 (or
/// 255), so the GIF's colour snapping keeps it exact.
pub const ACTIVE_COLOUR: [u8; 3] = [255, 192, 32];
const ACTIVE: [f32; 3] = [
    ACTIVE_COLOUR[0] as f32,
    ACTIVE_COLOUR[1] as f32,
    ACTIVE_COLOUR[2] as f32,
];
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

/// Steps of an episode where something happened, drawn as ticks above the module activity:
/// a reward (green) or a life lost (red). Index = step, as in the bands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepEvents {
    /// A non-zero reward at this step.
    pub rewards: Vec<bool>,
    /// A life lost at this step (the game goes on).
    pub life_lost: Vec<bool>,
}

/// Width of the label gutter: the layer (`L0`, `L1`, …) and the module numbers.
pub const GUTTER_PX: usize = 16;
/// Height of the events row (and the gap under it).
const EVENTS_PX: usize = 6;
const REWARD: [u8; 3] = [40, 200, 90];
const LIFE_LOST: [u8; 3] = [230, 50, 50];
const LABEL: [u8; 3] = [230, 230, 230];

/// 3×5 pixel glyphs (one `u8` per row, bits 2..0 = left to right) for the labels.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'L' => [4, 4, 4, 4, 7],
        'A' => [2, 5, 7, 5, 5],
        'C' => [7, 4, 4, 4, 7],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'I' => [7, 2, 2, 2, 7],
        'O' => [7, 5, 5, 5, 7],
        'T' => [7, 2, 2, 2, 2],
        'V' => [5, 5, 5, 5, 2],
        _ => return None,
    })
}

/// Draws `text` (digits and the letters of the labels and legend) with its top-left corner at `(x, y)`, clipped to the image.
fn draw_text(img: &mut RgbImage, x: usize, y: usize, text: &str, colour: [u8; 3]) {
    let (w, h) = (img.width as usize, img.height as usize);
    for (k, c) in text.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        for (dy, bits) in rows.iter().enumerate() {
            for dx in 0..3 {
                let (px, py) = (x + k * 4 + dx, y + dy);
                if bits >> (2 - dx) & 1 == 1 && px < w && py < h {
                    let i = (py * w + px) * 3;
                    img.rgb[i..i + 3].copy_from_slice(&colour);
                }
            }
        }
    }
}

/// [`module_activity_image_sized`] with what a reader needs to read it without the docs: a
/// gutter that names each layer (`L1` above `L0`: the top layer on top) and numbers its
/// modules, and, with `events`, a row of ticks above for rewards (green) and lives lost (red).
/// Exactly `width × height` pixels; the labels are left out where the rows are too thin.
pub fn labelled_activity_image(
    layers: &[ActivityBand],
    events: Option<&StepEvents>,
    width: u32,
    height: u32,
) -> RgbImage {
    let (w, h) = (width.max(1) as usize, height.max(1) as usize);
    let gutter = if w > 4 * GUTTER_PX { GUTTER_PX } else { 0 };
    let events_h = if events.is_some() && h > 4 * EVENTS_PX {
        EVENTS_PX
    } else {
        0
    };
    let body = module_activity_image_sized(layers, (w - gutter) as u32, (h - events_h) as u32);
    let mut img = RgbImage {
        width: w as u32,
        height: h as u32,
        rgb: vec![0u8; w * h * 3],
    };
    let bw = body.width as usize;
    for y in 0..body.height as usize {
        let dst = ((y + events_h) * w + gutter) * 3;
        img.rgb[dst..dst + bw * 3].copy_from_slice(&body.rgb[y * bw * 3..(y + 1) * bw * 3]);
    }
    let steps = layers.iter().map(|b| b.steps).max().unwrap_or(0);
    if let (Some(ev), true) = (events, events_h > 0 && steps > 0) {
        for (flags, colour, rows) in [
            (&ev.rewards, REWARD, 0..2),
            (&ev.life_lost, LIFE_LOST, 2..5),
        ] {
            for (t, _) in flags.iter().enumerate().filter(|(_, &f)| f) {
                let x = gutter + t * bw / steps;
                for y in rows.clone() {
                    let i = (y * w + x.min(w - 1)) * 3;
                    img.rgb[i..i + 3].copy_from_slice(&colour);
                }
            }
        }
    }
    if gutter > 0 {
        // Each band's extent from the body's row layout: the top layer first.
        let rows = row_layout(layers, body.height as usize);
        for (band, layer) in layers.iter().enumerate() {
            let ys: Vec<usize> = rows
                .iter()
                .enumerate()
                .filter(|(_, r)| matches!(r, Row::Module { band: b, .. } if *b == band))
                .map(|(y, _)| y)
                .collect();
            let (Some(&top), Some(&bottom)) = (ys.first(), ys.last()) else {
                continue;
            };
            draw_text(&mut img, 0, top + events_h, &format!("L{band}"), LABEL);
            let modules = layer.modules;
            let row_h = (bottom - top + 1) / modules.max(1);
            if row_h >= 6 {
                for j in 0..modules {
                    let y = top + events_h + j * row_h + (row_h - 5) / 2;
                    // Below the layer label on the band's first row.
                    if j == 0 && row_h < 12 {
                        continue;
                    }
                    let y = if j == 0 { y.max(top + events_h + 6) } else { y };
                    draw_text(&mut img, 9, y, &(j % 10).to_string(), LABEL);
                }
            }
        }
    }
    img
}

/// Height of the legend row under the TensorBoard picture.
const LEGEND_PX: usize = 9;

/// [`labelled_activity_image`] at [`module_activity_image`]'s natural size plus the gutter
/// (and the events row with `events`), with a legend row under it: an [`ACTIVE_COLOUR`]
/// swatch labelled `ACTIVE` and an inactive one labelled `OFF` (the gutter names the layers,
/// `L0` at the bottom, and numbers the modules).
pub fn labelled_module_activity_image(
    layers: &[ActivityBand],
    events: Option<&StepEvents>,
) -> RgbImage {
    let natural = module_activity_image(layers);
    let extra_h = if events.is_some() { EVENTS_PX } else { 0 };
    let height = (natural.height as usize + extra_h).max(5 * EVENTS_PX);
    let width = (natural.width as usize + GUTTER_PX).max(5 * GUTTER_PX);
    let body = labelled_activity_image(layers, events, width as u32, height as u32);
    let mut img = RgbImage {
        width: width as u32,
        height: (height + LEGEND_PX) as u32,
        rgb: body.rgb,
    };
    img.rgb.resize(width * (height + LEGEND_PX) * 3, 0);
    let inactive = INACTIVE.map(|c| c as u8);
    let y = height + 2;
    // Swatch, then its word: ACTIVE at the left, OFF after it.
    for (x, colour, word) in [(1, ACTIVE_COLOUR, "ACTIVE"), (36, inactive, "OFF")] {
        for dy in 0..5 {
            for dx in 0..6 {
                let (px, py) = (x + dx, y + dy);
                if px < width {
                    let i = (py * width + px) * 3;
                    img.rgb[i..i + 3].copy_from_slice(&colour);
                }
            }
        }
        draw_text(&mut img, x + 8, y, word, LABEL);
    }
    img
}

#[cfg(test)]
mod legend_tests {
    use super::*;

    /// Issue 24, 16: the TensorBoard picture says which colour is "active", and active cells
    /// are drawn in the one shared colour.
    #[test]
    fn the_tensorboard_picture_has_a_legend_and_the_shared_active_colour() {
        let band = ActivityBand::new(10, 2, (0..20).map(|i| i % 2 == 0).collect()).unwrap();
        let plain = labelled_activity_image(std::slice::from_ref(&band), None, 56, 30);
        let img = labelled_module_activity_image(&[band], None);
        assert_eq!(img.height as usize, 30.max(2 * ROW_PX) + LEGEND_PX);
        let px = |x: usize, y: usize| {
            let i = (y * img.width as usize + x) * 3;
            [img.rgb[i], img.rgb[i + 1], img.rgb[i + 2]]
        };
        // Module 0 (active at every step) in the body; the legend's swatch under it.
        let body_h = img.height as usize - LEGEND_PX;
        let row = (0..body_h)
            .find(|&y| px(GUTTER_PX + 1, y) == ACTIVE_COLOUR)
            .expect("an active cell");
        assert!(row < body_h);
        assert_eq!(px(2, body_h + 3), ACTIVE_COLOUR, "legend swatch");
        // The legend's words are drawn (label pixels right of each swatch).
        let label_pixels = (0..img.width as usize)
            .flat_map(|x| (body_h..img.height as usize).map(move |y| (x, y)))
            .filter(|&(x, y)| px(x, y) == LABEL)
            .count();
        assert!(
            label_pixels > 20,
            "{label_pixels} label pixels in the legend"
        );
        assert_eq!(plain.height, 30, "the GIF strip's layout is unchanged");
    }
}
