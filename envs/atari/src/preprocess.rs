//! Frame preprocessing: max over two frames and an integer area resize.

/// Writes the elementwise max of `a` and `b` into `out` (all the same length).
#[inline]
pub(crate) fn max_frames(a: &[u8], b: &[u8], out: &mut [u8]) {
    // Zipped iterators vectorise; an indexed loop with bounds checks does not.
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x.max(y);
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
/// their covered fraction. Weights are exact integers (in units of `1/gcd`-reduced output
/// size), so the result is the exact area mean rounded to nearest.
#[derive(Clone, Debug)]
pub(crate) struct AreaResize {
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    rows: Vec<Taps>,
    cols: Vec<Taps>,
    /// Sum of all weights of one output pixel (row sum × column sum).
    norm: u32,
    /// Rows reduced, `[out_h, in_w]`.
    tmp: Vec<u32>,
}

impl AreaResize {
    /// A resize from `[in_h, in_w]` to `[out_h, out_w]`; shrinking only, by at most a factor
    /// of 3 per axis (so a pixel spans at most 4 input pixels).
    pub(crate) fn new(in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Option<Self> {
        let rows = axis_taps(in_h, out_h)?;
        let cols = axis_taps(in_w, out_w)?;
        let row_sum: u32 = rows[0].weights.iter().sum();
        let col_sum: u32 = cols[0].weights.iter().sum();
        Some(AreaResize {
            in_h,
            in_w,
            out_h,
            out_w,
            rows,
            cols,
            norm: row_sum * col_sum,
            tmp: vec![0; out_h * in_w],
        })
    }

    /// Resizes `input` (`[in_h, in_w]`, row-major) into `out` (`[out_h, out_w]`).
    pub(crate) fn apply(&mut self, input: &[u8], out: &mut [u8]) {
        assert_eq!(input.len(), self.in_h * self.in_w, "resize input size");
        assert_eq!(out.len(), self.out_h * self.out_w, "resize output size");
        let w = self.in_w;
        // Vertical pass first: it runs along contiguous rows, which vectorises.
        for (tmp_row, taps) in self.tmp.chunks_exact_mut(w).zip(&self.rows) {
            tmp_row.fill(0);
            for (k, &weight) in taps.weights.iter().enumerate() {
                if weight == 0 {
                    continue;
                }
                let src = &input[(taps.start + k) * w..(taps.start + k + 1) * w];
                for (t, &p) in tmp_row.iter_mut().zip(src) {
                    *t += weight * u32::from(p);
                }
            }
        }
        let half = self.norm / 2;
        for (out_row, tmp_row) in out
            .chunks_exact_mut(self.out_w)
            .zip(self.tmp.chunks_exact(w))
        {
            for (o, taps) in out_row.iter_mut().zip(&self.cols) {
                let src = &tmp_row[taps.start..taps.start + MAX_TAPS];
                let acc: u32 = src.iter().zip(&taps.weights).map(|(&p, &wt)| p * wt).sum();
                // acc <= 255 * norm, so the quotient fits a u8.
                *o = ((acc + half) / self.norm) as u8;
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
        resize.apply(&input, &mut out);
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
    fn constant_image_stays_constant() {
        let input = vec![200u8; 210 * 160];
        let mut resize = AreaResize::new(210, 160, 84, 84).expect("valid sizes");
        let mut out = vec![0u8; 84 * 84];
        resize.apply(&input, &mut out);
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
    fn max_frames_is_elementwise() {
        let (a, b) = ([1u8, 9, 3, 0], [4u8, 2, 3, 255]);
        let mut out = [0u8; 4];
        max_frames(&a, &b, &mut out);
        assert_eq!(out, [4, 9, 3, 255]);
    }
}
