//! The evaluation GIF: each frame is the game screen with the BRIMs module-activity strip
//! beside it, filled up to the current step with a cursor on it.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{bail, Context};
use telemetry::{labelled_activity_image, ActivityBand, RgbImage, StepEvents, GUTTER_PX};

/// Black gap between the game screen and the strip.
const GAP_PX: usize = 4;
const CURSOR: [u8; 3] = [255, 255, 255];
/// NeuQuant speed for frames with more than 256 colours (1 = best, 30 = fastest).
const QUANTISE_SPEED: i32 = 10;

/// How the GIF is laid out and paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GifOptions {
    /// Integer upscaling of the game screen (2 turns 160×210 into 320×420).
    pub scale: u32,
    /// Width of the module-activity strip in pixels (its height is the scaled screen's).
    pub strip_width: u32,
    /// At most this many GIF frames; longer episodes are subsampled evenly (and so play faster).
    pub max_frames: usize,
    /// Delay between GIF frames in hundredths of a second.
    pub delay_cs: u16,
}

impl Default for GifOptions {
    fn default() -> Self {
        Self {
            scale: 2,
            strip_width: 240,
            max_frames: 400,
            delay_cs: 4,
        }
    }
}

/// Writes an episode as an animated GIF at `path`.
///
/// `frames[t]` is the RGB screen (`[height, width, 3]`, all the same size) after step `t`.
/// `activity`, one band per layer (index 0 = bottom layer) with step `t` matching `frames[t]`,
/// adds the strip: time left to right over the whole episode, modules stacked, the top layer on
/// top, layers named and modules numbered in a gutter, and with `events` ticks for rewards and
/// lives lost above; it is drawn up to the current step with a white cursor there.
pub(crate) fn write_episode_gif(
    path: &Path,
    frames: &[RgbImage],
    activity: Option<&[ActivityBand]>,
    events: Option<&StepEvents>,
    options: GifOptions,
) -> anyhow::Result<()> {
    let Some(first) = frames.first() else {
        bail!("cannot write {}: the episode has no frames", path.display());
    };
    let (fw, fh) = (first.width as usize, first.height as usize);
    for (t, f) in frames.iter().enumerate() {
        if (f.width as usize, f.height as usize) != (fw, fh) || f.rgb.len() != fw * fh * 3 {
            bail!(
                "frame {t} is {}x{} with {} bytes; expected {fw}x{fh} RGB like frame 0",
                f.width,
                f.height,
                f.rgb.len()
            );
        }
    }
    let scale = options.scale.max(1) as usize;
    let (sw, sh) = (fw * scale, fh * scale);
    let strip = activity.filter(|bands| !bands.is_empty()).map(|bands| {
        let width = options.strip_width.max(GUTTER_PX as u32 * 5);
        let mut strip = labelled_activity_image(bands, events, width, sh as u32);
        snap_colours(&mut strip.rgb);
        strip
    });
    let strip_steps = activity
        .map(|bands| bands.iter().map(|b| b.steps()).max().unwrap_or(0))
        .unwrap_or(0);
    let width = sw + strip.as_ref().map_or(0, |s| GAP_PX + s.width as usize);
    let (Ok(gif_w), Ok(gif_h)) = (u16::try_from(width), u16::try_from(sh)) else {
        bail!("GIF of {width}x{sh} pixels is too large (max 65535 a side)");
    };

    let file =
        File::create(path).with_context(|| format!("cannot create GIF {}", path.display()))?;
    let mut encoder = gif::Encoder::new(BufWriter::new(file), gif_w, gif_h, &[])
        .with_context(|| format!("cannot write GIF {}", path.display()))?;
    encoder.set_repeat(gif::Repeat::Infinite)?;

    let mut canvas = vec![0u8; width * sh * 3];
    for t in subsample(frames.len(), options.max_frames.max(1)) {
        blit_scaled(&mut canvas, width, &frames[t], scale);
        if let Some(strip) = &strip {
            // Frame t is drawn after step t; the strip spans the whole episode.
            let body = strip.width as usize - GUTTER_PX;
            let cursor = GUTTER_PX + strip_cursor(t, strip_steps.max(frames.len()), body);
            draw_strip(&mut canvas, width, sw + GAP_PX, strip, cursor);
        }
        let mut frame = quantise(gif_w, gif_h, &canvas);
        frame.delay = options.delay_cs;
        encoder
            .write_frame(&frame)
            .with_context(|| format!("cannot write GIF {}", path.display()))?;
    }
    // Dropping the encoder writes the trailer; flush explicitly to see errors.
    let mut out = encoder
        .into_inner()
        .with_context(|| format!("cannot finish GIF {}", path.display()))?;
    std::io::Write::flush(&mut out).with_context(|| format!("cannot flush {}", path.display()))?;
    Ok(())
}

/// Indices of at most `max` frames spread evenly over `0..n`, always including the last.
fn subsample(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    if max == 1 {
        return vec![n - 1];
    }
    (0..max).map(|i| i * (n - 1) / (max - 1)).collect()
}

/// Strip column of step `t` in an episode of `steps` steps drawn `width` pixels wide.
fn strip_cursor(t: usize, steps: usize, width: usize) -> usize {
    (t * width / steps.max(1)).min(width.saturating_sub(1))
}

/// Copies `frame` upscaled by `scale` into the left of `canvas` (`canvas_w` pixels wide).
fn blit_scaled(canvas: &mut [u8], canvas_w: usize, frame: &RgbImage, scale: usize) {
    let fw = frame.width as usize;
    for (y, src_row) in frame.rgb.chunks_exact(fw * 3).enumerate() {
        for dy in 0..scale {
            let row = (y * scale + dy) * canvas_w * 3;
            for (x, px) in src_row.chunks_exact(3).enumerate() {
                for dx in 0..scale {
                    let i = row + (x * scale + dx) * 3;
                    canvas[i..i + 3].copy_from_slice(px);
                }
            }
        }
    }
}

/// Draws the strip's columns `0..=cursor` at `left`, blacks out the rest, and the cursor line.
fn draw_strip(canvas: &mut [u8], canvas_w: usize, left: usize, strip: &RgbImage, cursor: usize) {
    let w = strip.width as usize;
    for y in 0..strip.height as usize {
        let dst = (y * canvas_w + left) * 3;
        let src = y * w * 3;
        let shown = (cursor + 1).min(w) * 3;
        canvas[dst..dst + shown].copy_from_slice(&strip.rgb[src..src + shown]);
        canvas[dst + shown..dst + w * 3].fill(0);
        let c = dst + cursor.min(w - 1) * 3;
        canvas[c..c + 3].copy_from_slice(&CURSOR);
    }
}

/// Rounds each channel to a multiple of 32 (255 stays 255), so the strip's blended colours
/// add only a few dozen palette entries and frames keep the fast, exact palette path.
fn snap_colours(rgb: &mut [u8]) {
    for c in rgb {
        *c = if *c >= 240 {
            255
        } else {
            ((u16::from(*c) + 16) / 32 * 32) as u8
        };
    }
}

/// An exact palette when the frame has at most 256 colours (Atari screens and the strip
/// usually do), NeuQuant otherwise.
fn quantise(width: u16, height: u16, rgb: &[u8]) -> gif::Frame<'static> {
    let mut palette: Vec<u8> = Vec::with_capacity(256 * 3);
    let mut index: HashMap<[u8; 3], u8> = HashMap::with_capacity(256);
    let mut pixels = Vec::with_capacity(rgb.len() / 3);
    // Runs of one colour are common (background, the strip's cells): skip the lookup for them.
    let mut last: Option<([u8; 3], u8)> = None;
    for px in rgb.chunks_exact(3) {
        let key = [px[0], px[1], px[2]];
        if let Some((k, i)) = last {
            if k == key {
                pixels.push(i);
                continue;
            }
        }
        let i = match index.get(&key) {
            Some(&i) => i,
            None => {
                if index.len() == 256 {
                    return gif::Frame::from_rgb_speed(width, height, rgb, QUANTISE_SPEED);
                }
                // At most 256 entries, so the index fits a u8.
                let i = index.len() as u8;
                index.insert(key, i);
                palette.extend_from_slice(&key);
                i
            }
        };
        last = Some((key, i));
        pixels.push(i);
    }
    gif::Frame::from_palette_pixels(width, height, pixels, palette, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(t: usize) -> RgbImage {
        // 160x210 like ALE; a bar whose colour encodes the step.
        let mut rgb = vec![0u8; 160 * 210 * 3];
        for px in rgb.chunks_exact_mut(3).take(160 * 10) {
            px.copy_from_slice(&[(t * 10 % 256) as u8, 100, 50]);
        }
        RgbImage {
            width: 160,
            height: 210,
            rgb,
        }
    }

    /// Decodes every frame as RGBA: (width, height, frames).
    fn decode(path: &Path) -> (u16, u16, Vec<Vec<u8>>) {
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::RGBA);
        let mut dec = opts.read_info(File::open(path).unwrap()).unwrap();
        let (w, h) = (dec.width(), dec.height());
        let mut frames = Vec::new();
        while let Some(f) = dec.read_next_frame().unwrap() {
            assert_eq!((f.width, f.height), (w, h));
            frames.push(f.buffer.to_vec());
        }
        (w, h, frames)
    }

    fn rgba_at(frame: &[u8], w: usize, x: usize, y: usize) -> [u8; 3] {
        let i = (y * w + x) * 4;
        [frame[i], frame[i + 1], frame[i + 2]]
    }

    #[test]
    fn gif_has_every_frame_with_strip_and_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("episode.gif");
        let steps = 30;
        let frames: Vec<_> = (0..steps).map(screen).collect();
        // One layer of two modules: module 0 always active.
        let band =
            ActivityBand::new(steps, 2, (0..steps * 2).map(|i| i % 2 == 0).collect()).unwrap();
        let opts = GifOptions::default();
        write_episode_gif(&path, &frames, Some(&[band]), None, opts).unwrap();

        let (w, h, decoded) = decode(&path);
        assert_eq!((w, h), (320 + 4 + 240, 420));
        assert_eq!(decoded.len(), steps);
        let w = w as usize;
        for (t, f) in decoded.iter().enumerate() {
            // Exact colours survive (fewer than 256 per frame).
            assert_eq!(rgba_at(f, w, 319, 19), [(t * 10) as u8, 100, 50]);
            assert_eq!(rgba_at(f, w, 0, 20), [0, 0, 0]);
            let body = 324 + GUTTER_PX;
            let cursor = body + strip_cursor(t, steps, 240 - GUTTER_PX);
            assert_eq!(rgba_at(f, w, cursor, 5), CURSOR);
            // Left of the cursor module 0 (top half) is drawn active, right of it is blank.
            if cursor > body {
                assert_ne!(rgba_at(f, w, body, 5), [0, 0, 0]);
            }
            // The gutter names the layer: "L0" in light pixels at its top left.
            assert_ne!(rgba_at(f, w, 324, 0), [0, 0, 0]);
            if cursor < w - 1 {
                assert_eq!(rgba_at(f, w, w - 1, 5), [0, 0, 0]);
            }
        }
    }

    #[test]
    fn long_episodes_are_subsampled_and_work_without_activity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.gif");
        let frames: Vec<_> = (0..25).map(screen).collect();
        let opts = GifOptions {
            scale: 1,
            max_frames: 5,
            ..GifOptions::default()
        };
        write_episode_gif(&path, &frames, None, None, opts).unwrap();
        let (w, h, decoded) = decode(&path);
        assert_eq!((w, h, decoded.len()), (160, 210, 5));
        // The last frame shown is the episode's last.
        assert_eq!(rgba_at(&decoded[4], 160, 0, 0), [240, 100, 50]);
        assert_eq!(subsample(25, 5), vec![0, 6, 12, 18, 24]);
    }

    #[test]
    fn many_colours_fall_back_to_quantisation() {
        let rgb: Vec<u8> = (0..64 * 64)
            .flat_map(|i| [(i % 256) as u8, (i / 256) as u8 * 16, 7])
            .collect();
        let frame = quantise(64, 64, &rgb);
        assert_eq!(frame.buffer.len(), 64 * 64);
        assert!(frame.palette.as_ref().is_some_and(|p| p.len() <= 256 * 3));
    }

    #[test]
    fn snapping_keeps_extremes_and_coarsens_the_rest() {
        let mut c = [0, 15, 16, 190, 239, 240, 255];
        snap_colours(&mut c);
        assert_eq!(c, [0, 0, 32, 192, 224, 255, 255]);
    }

    #[test]
    fn bad_frames_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gif");
        assert!(write_episode_gif(&path, &[], None, None, GifOptions::default()).is_err());
        let mut odd = screen(0);
        odd.rgb.pop();
        let err = write_episode_gif(&path, &[screen(0), odd], None, None, GifOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("frame 1"), "{err}");
    }
}
