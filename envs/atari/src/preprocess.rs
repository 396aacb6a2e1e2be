//! Frame preprocessing: palette indices to grayscale, max over two frames and an integer
//! area resize.

/// ALE's map from palette index to grayscale, learned from ALE's own conversion.
///
/// ALE's grayscale screen is a per-pixel lookup in the console's palette (NTSC, PAL or
/// SECAM, chosen by the ROM), a loop that costs about as much as a fifth of a frame's
/// emulation. Fetching the palette indices and looking them up here is cheaper. The table is
/// not hard-coded: an index is learned the first time it appears, from ALE's grayscale screen
/// of that very frame, so the result is ALE's, bit for bit, whatever the palette.
#[derive(Clone, Debug)]
pub(crate) struct GrayLut {
    /// Gray level in the low byte, or `UNKNOWN` for an index not seen yet.
    entries: [u16; 256],
}

/// Marks a `GrayLut` entry not learned yet (outside the u8 range, so one OR over a frame's
/// entries tells whether any was missing).
const UNKNOWN: u16 = 0x100;

impl GrayLut {
    /// A table that knows no index yet.
    pub(crate) fn new() -> Self {
        GrayLut {
            entries: [UNKNOWN; 256],
        }
    }

    /// Writes the gray levels of palette indices `indices` into `out`; `false` if some index
    /// is not known yet (then `out` is partly wrong: fetch ALE's grayscale and [`learn`]).
    ///
    /// [`learn`]: GrayLut::learn
    #[inline]
    pub(crate) fn convert(&self, indices: &[u8], out: &mut [u8]) -> bool {
        assert_eq!(indices.len(), out.len(), "grayscale buffer size");
        let mut seen = 0u16;
        for (o, &i) in out.iter_mut().zip(indices) {
            let entry = self.entries[usize::from(i)];
            seen |= entry;
            *o = entry as u8; // the low byte is the gray level
        }
        seen & UNKNOWN == 0
    }

    /// Learns the gray level of every index of a frame from ALE's grayscale of the same frame.
    pub(crate) fn learn(&mut self, indices: &[u8], gray: &[u8]) {
        for (&i, &g) in indices.iter().zip(gray) {
            self.entries[usize::from(i)] = u16::from(g);
        }
    }
}

/// Two grayscale frame slots (a step's last two frames), filled from the screen's palette
/// indices through a [`GrayLut`].
///
/// Consecutive frames differ in few rows (a ball, a paddle, a score), so a row whose palette
/// indices equal those of the same row in the other slot is copied from that slot's gray
/// row instead of looked up: a row compare and copy cost a fraction of the lookups. Each slot
/// keeps the invariant `gray == ALE's grayscale of indices` once valid, so any two valid
/// slots can be compared, whichever frame each holds.
#[derive(Clone, Debug)]
pub(crate) struct GrayFrames {
    width: usize,
    /// `indices[s]`: slot `s`'s palette indices, `[h, w]`.
    indices: [Vec<u8>; 2],
    /// `gray[s]`: slot `s`'s gray levels, `[h, w]`.
    gray: [Vec<u8>; 2],
    /// `valid[s]`: slot `s` holds a grabbed frame (its gray matches its indices).
    valid: [bool; 2],
    lut: GrayLut,
}

impl GrayFrames {
    /// Two empty slots for `[height, width]` screens.
    pub(crate) fn new(height: usize, width: usize) -> Self {
        let len = height * width;
        GrayFrames {
            width: width.max(1),
            indices: [vec![0; len], vec![0; len]],
            gray: [vec![0; len], vec![0; len]],
            valid: [false; 2],
            lut: GrayLut::new(),
        }
    }

    /// Grabs the current frame into `slot`: `fetch_indices` writes its palette indices,
    /// `fetch_gray` its grayscale (ALE's own conversion, called only when an index is new).
    pub(crate) fn grab(
        &mut self,
        slot: usize,
        fetch_indices: impl FnOnce(&mut [u8]),
        fetch_gray: impl FnOnce(&mut [u8]),
    ) {
        let other = 1 - slot;
        let [idx0, idx1] = &mut self.indices;
        let [gray0, gray1] = &mut self.gray;
        let (indices, gray, other_indices, other_gray) = if slot == 0 {
            (idx0, gray0, &*idx1, &*gray1)
        } else {
            (idx1, gray1, &*idx0, &*gray0)
        };
        fetch_indices(indices);
        let w = self.width;
        let mut known = true;
        if self.valid[other] {
            let rows = indices.chunks_exact(w).zip(gray.chunks_exact_mut(w));
            let other_rows = other_indices
                .chunks_exact(w)
                .zip(other_gray.chunks_exact(w));
            for ((row, gray_row), (other_row, other_gray_row)) in rows.zip(other_rows) {
                if row == other_row {
                    gray_row.copy_from_slice(other_gray_row);
                } else {
                    known &= self.lut.convert(row, gray_row);
                }
            }
        } else {
            known = self.lut.convert(indices, gray);
        }
        if !known {
            fetch_gray(gray);
            self.lut.learn(indices, gray);
        }
        self.valid[slot] = true;
    }

    /// Copies slot `from` into slot `to`.
    pub(crate) fn copy(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        for [a, b] in [&mut self.indices, &mut self.gray] {
            let (src, dst) = if from == 0 { (&*a, b) } else { (&*b, a) };
            dst.copy_from_slice(src);
        }
        self.valid[to] = self.valid[from];
    }

    /// Slot `slot`'s gray levels, `[h, w]`.
    pub(crate) fn gray(&self, slot: usize) -> &[u8] {
        &self.gray[slot]
    }

    /// Forgets everything learned (after a ROM reload; the same ROM gets the same palette, so
    /// this only costs one full lookup and is the safe side).
    pub(crate) fn forget(&mut self) {
        self.valid = [false; 2];
        self.lut = GrayLut::new();
    }
}

/// Writes the elementwise max of `a` and `b` into `out` row by row (`width` bytes a row),
/// setting `changed[r]` to whether row `r` of `out` differs from what it held before.
pub(crate) fn max_frames_tracked(
    a: &[u8],
    b: &[u8],
    out: &mut [u8],
    width: usize,
    changed: &mut [bool],
) {
    let rows = a.chunks_exact(width).zip(b.chunks_exact(width));
    for (((a, b), out), changed) in rows.zip(out.chunks_exact_mut(width)).zip(changed) {
        let mut diff = 0u8;
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            let m = x.max(y);
            diff |= *o ^ m;
            *o = m;
        }
        *changed = diff != 0;
    }
}

/// The input pixels one output pixel covers along one axis, with integer weights.
#[derive(Clone, Copy, Debug)]
struct Taps {
    start: usize,
    weights: [u32; MAX_TAPS],
}

const MAX_TAPS: usize = 4;

/// Area interpolation (OpenCV's `INTER_AREA` when shrinking) in integer arithmetic: each
/// output pixel is the mean of the input area it covers, partially covered pixels weighted by
/// their covered fraction. Weights are exact integers (in units of the gcd-reduced pixel
/// sizes), so the result is the exact area mean rounded to nearest.
///
/// Output rows are computed one at a time (a vertical pass over whole input rows in 16-bit
/// lanes, which vectorises on plain SSE2, then a fixed 4-tap horizontal pass), so rows whose
/// input did not change can be skipped ([`AreaResize::apply_changed`]).
#[derive(Clone, Debug)]
pub(crate) struct AreaResize {
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    rows: Vec<Taps>,
    cols: Vec<Taps>,
    /// Sum of all weights of one output pixel (row sum × column sum); `255 * norm` fits u16.
    norm: u32,
    /// `ceil(2^32 / norm)`: dividing by multiplying (a division per pixel costs more than
    /// the rest of the resize).
    inv_norm: u64,
    /// One vertically reduced row, `[in_w]`.
    row: Vec<u16>,
}

impl AreaResize {
    /// A resize from `[in_h, in_w]` to `[out_h, out_w]`, shrinking by at most 3× per axis.
    /// Fast when `255 × norm < 2^16` (true for 210×160 -> 84×84, where norm = 5 × 40);
    /// otherwise (Adventure's 250×160 screen) a slower exact path runs.
    pub(crate) fn new(in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Option<Self> {
        let rows = axis_taps(in_h, out_h)?;
        let cols = axis_taps(in_w, out_w)?;
        let row_sum: u32 = rows[0].weights.iter().sum();
        let col_sum: u32 = cols[0].weights.iter().sum();
        let norm = row_sum * col_sum;
        Some(AreaResize {
            in_h,
            in_w,
            out_h,
            out_w,
            rows,
            cols,
            norm,
            inv_norm: (1u64 << 32).div_ceil(u64::from(norm)),
            row: vec![0; in_w],
        })
    }

    /// Resizes `input` (`[in_h, in_w]`, row-major) into `out` (`[out_h, out_w]`). With
    /// `changed = Some([in_h] flags)` only the output rows that cover a changed input row are
    /// computed: `out` must hold the resize of an input that equals `input` on every
    /// unchanged row.
    pub(crate) fn apply_changed(&mut self, input: &[u8], out: &mut [u8], changed: Option<&[bool]>) {
        assert_eq!(input.len(), self.in_h * self.in_w, "resize input size");
        assert_eq!(out.len(), self.out_h * self.out_w, "resize output size");
        if let Some(changed) = changed {
            assert_eq!(changed.len(), self.in_h, "changed rows size");
        }
        if 255 * self.norm > u32::from(u16::MAX) {
            self.apply_wide(input, out);
            return;
        }
        let w = self.in_w;
        let (half, inv) = (self.norm / 2, self.inv_norm);
        for (taps, out_row) in self.rows.iter().zip(out.chunks_exact_mut(self.out_w)) {
            let used = |k: usize| taps.weights[k] != 0;
            if let Some(changed) = changed {
                if !(0..MAX_TAPS).any(|k| used(k) && changed[taps.start + k]) {
                    continue;
                }
            }
            // Vertical pass along whole input rows.
            self.row.fill(0);
            for (k, &weight) in taps.weights.iter().enumerate() {
                if weight == 0 {
                    continue;
                }
                let weight = weight as u16; // <= norm, which fits u16 (checked above)
                let src = &input[(taps.start + k) * w..(taps.start + k + 1) * w];
                for (t, &p) in self.row.iter_mut().zip(src) {
                    *t += weight * u16::from(p);
                }
            }
            // Horizontal pass: a fixed window of MAX_TAPS (`axis_taps` keeps it in bounds),
            // then normalise. (s + half) * inv >> 32 == (s + half) / norm exactly: s + half <
            // 2^16 and the reciprocal's relative error is below 2^-32.
            for (o, taps) in out_row.iter_mut().zip(&self.cols) {
                let window = &self.row[taps.start..taps.start + MAX_TAPS];
                let s: u32 = window
                    .iter()
                    .zip(taps.weights)
                    .map(|(&v, weight)| u32::from(v) * weight)
                    .sum();
                *o = ((u64::from(s + half) * inv) >> 32) as u8;
            }
        }
    }
}

impl AreaResize {
    /// The same resize with 64-bit sums, for sizes whose sums overflow 16 bits.
    fn apply_wide(&self, input: &[u8], out: &mut [u8]) {
        let norm = u64::from(self.norm);
        for (r, rt) in self.rows.iter().enumerate() {
            for (j, ct) in self.cols.iter().enumerate() {
                let mut acc = 0u64;
                for (a, &wr) in rt.weights.iter().enumerate() {
                    let row = &input[(rt.start + a) * self.in_w..][..self.in_w];
                    for (b, &wc) in ct.weights.iter().enumerate() {
                        acc += u64::from(wr * wc) * u64::from(row[ct.start + b]);
                    }
                }
                out[r * self.out_w + j] = ((acc + norm / 2) / norm) as u8;
            }
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Taps of each of `m` output pixels over `n` input pixels. In units where an input pixel is
/// `m' = m / g` long and an output pixel `n' = n / g` long (g = gcd), output `j` covers
/// `[j n', (j+1) n')` and input `i` covers `[i m', (i+1) m')`; the overlap is the weight.
fn axis_taps(n: usize, m: usize) -> Option<Vec<Taps>> {
    if m == 0 || m > n || n > 3 * m {
        return None;
    }
    let g = gcd(n, m);
    let (n_u, m_u) = (n / g, m / g);
    let mut taps = Vec::with_capacity(m);
    for j in 0..m {
        let (lo, hi) = (j * n_u, (j + 1) * n_u);
        let first = lo / m_u;
        let last = (hi - 1) / m_u;
        // Keep `start + MAX_TAPS <= n` so the column pass can read a fixed-size window.
        let start = first.min(n - MAX_TAPS.min(n));
        let mut weights = [0u32; MAX_TAPS];
        for i in first..=last {
            let overlap = hi.min((i + 1) * m_u) - lo.max(i * m_u);
            weights[i - start] = overlap as u32;
        }
        taps.push(Taps { start, weights });
    }
    Some(taps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact area mean in floating point, for comparison.
    fn reference(input: &[u8], in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Vec<u8> {
        let (sy, sx) = (in_h as f64 / out_h as f64, in_w as f64 / out_w as f64);
        let mut out = vec![0u8; out_h * out_w];
        for oy in 0..out_h {
            for ox in 0..out_w {
                let (y0, y1, x0, x1) = (
                    oy as f64 * sy,
                    (oy + 1) as f64 * sy,
                    ox as f64 * sx,
                    (ox + 1) as f64 * sx,
                );
                let mut acc = 0.0;
                for iy in y0.floor() as usize..(y1.ceil() as usize).min(in_h) {
                    let wy = (y1.min(iy as f64 + 1.0) - y0.max(iy as f64)).max(0.0);
                    for ix in x0.floor() as usize..(x1.ceil() as usize).min(in_w) {
                        let wx = (x1.min(ix as f64 + 1.0) - x0.max(ix as f64)).max(0.0);
                        acc += wy * wx * input[iy * in_w + ix] as f64;
                    }
                }
                out[oy * out_w + ox] = (acc / (sy * sx)).round() as u8;
            }
        }
        out
    }

    #[test]
    fn area_resize_matches_float_area_mean() {
        let (h, w) = (210, 160);
        let input: Vec<u8> = (0..h * w).map(|i| ((i * 7919) % 251) as u8).collect();
        let mut resize = AreaResize::new(h, w, 84, 84).expect("valid sizes");
        let mut out = vec![0u8; 84 * 84];
        resize.apply_changed(&input, &mut out, None);
        let want = reference(&input, h, w, 84, 84);
        let max_diff = out
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .max();
        // Only ties at .5 may round differently between integer and float arithmetic.
        assert!(max_diff <= Some(1), "max diff {max_diff:?}");
    }

    #[test]
    fn tall_screens_take_the_wide_path_and_match() {
        // Adventure's screen is 250×160: its sums overflow 16 bits.
        let (h, w) = (250, 160);
        let input: Vec<u8> = (0..h * w).map(|i| ((i * 7919) % 251) as u8).collect();
        let mut resize = AreaResize::new(h, w, 84, 84).expect("valid sizes");
        assert!(255 * resize.norm > u32::from(u16::MAX));
        let mut out = vec![0u8; 84 * 84];
        resize.apply_changed(&input, &mut out, None);
        let want = reference(&input, h, w, 84, 84);
        let max_diff = out.iter().zip(&want).map(|(&a, &b)| a.abs_diff(b)).max();
        assert!(max_diff <= Some(1), "max diff {max_diff:?}");
    }

    #[test]
    fn fast_path_equals_the_exact_wide_path_and_skips_only_unchanged_rows() {
        let (h, w) = (210, 160);
        let mut resize = AreaResize::new(h, w, 84, 84).expect("valid sizes");
        let (mut fast, mut exact) = (vec![0u8; 84 * 84], vec![0u8; 84 * 84]);
        let mut input: Vec<u8> = (0..h * w).map(|i| ((i * 7919) % 251) as u8).collect();
        for extreme in [0u8, 255] {
            input[..w * 5].fill(extreme); // rounding at the ends of the range
            resize.apply_changed(&input, &mut fast, None);
            resize.apply_wide(&input, &mut exact);
            assert!(fast == exact, "the fast path rounds differently");
        }
        // Change rows 7 and 100: the incremental result equals a full resize.
        let mut changed = vec![false; h];
        for r in [7, 100] {
            changed[r] = true;
            input[r * w..(r + 1) * w]
                .iter_mut()
                .for_each(|p| *p = p.wrapping_add(77));
        }
        resize.apply_changed(&input, &mut fast, Some(&changed));
        resize.apply_changed(&input, &mut exact, None);
        assert!(fast == exact, "incremental resize differs from a full one");
    }

    #[test]
    fn max_frames_tracked_flags_exactly_the_changed_rows() {
        let (a, b) = (vec![1u8; 12], vec![2u8; 12]);
        let mut out = vec![2u8; 12];
        out[5] = 0; // row 1 (of width 4) differs
        let mut changed = vec![true; 3];
        max_frames_tracked(&a, &b, &mut out, 4, &mut changed);
        assert_eq!(changed, [false, true, false]);
        assert!(out.iter().all(|&p| p == 2));
    }

    #[test]
    fn constant_image_stays_constant() {
        let input = vec![200u8; 210 * 160];
        let mut resize = AreaResize::new(210, 160, 84, 84).expect("valid sizes");
        let mut out = vec![0u8; 84 * 84];
        resize.apply_changed(&input, &mut out, None);
        assert!(out.iter().all(|&p| p == 200));
    }

    #[test]
    fn weights_sum_to_the_scale() {
        for taps in axis_taps(210, 84).expect("valid") {
            assert_eq!(taps.weights.iter().sum::<u32>(), 5); // 210/84 = 5/2, in units of 1/2
        }
        for taps in axis_taps(160, 84).expect("valid") {
            assert_eq!(taps.weights.iter().sum::<u32>(), 40); // 160/84 = 40/21
        }
        assert!(axis_taps(84, 160).is_none(), "upscaling is not supported");
    }

    #[test]
    fn gray_lut_reports_unknown_indices_until_learned() {
        let mut lut = GrayLut::new();
        let (indices, gray) = ([0u8, 14, 14, 200], [0u8, 142, 142, 77]);
        let mut out = [0u8; 4];
        assert!(!lut.convert(&indices, &mut out), "nothing learned yet");
        lut.learn(&indices[..2], &gray[..2]);
        assert!(!lut.convert(&indices, &mut out), "200 is still unknown");
        lut.learn(&indices, &gray);
        assert!(lut.convert(&indices, &mut out));
        assert_eq!(out, gray);
        assert!(lut.convert(&[14, 0], &mut out[..2]));
        assert_eq!(out[..2], [142, 0]);
    }
}
