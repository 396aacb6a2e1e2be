//! Orthogonal initialisation (candle has none built in), as `torch.nn.init.orthogonal_`.

use candle_core::{Device, Tensor};
use rand::Rng;

/// A standard normal sample (Box–Muller), so we need no extra distribution crate.
fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // in (0, 1]: ln is finite
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An orthogonal matrix scaled by `gain`, for a weight of `shape` (`[out, in, …]`, flattened to
/// `[out, in·…]` as torch does). Rows (if `out ≤ in·…`) or columns are orthonormal.
///
/// Modified Gram–Schmidt on a Gaussian matrix equals QR with `R`'s diagonal made positive,
/// which is what torch computes, so the result is Haar-distributed.
pub fn orthogonal(
    shape: &[usize],
    gain: f64,
    rng: &mut impl Rng,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let rows = shape.first().copied().unwrap_or(1);
    let cols: usize = shape.iter().skip(1).product();
    // Orthonormalise `small` vectors of length `big`.
    let (big, small) = if rows >= cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    let mut q: Vec<Vec<f64>> = (0..small)
        .map(|_| (0..big).map(|_| gaussian(rng)).collect())
        .collect();
    for i in 0..small {
        let (done, rest) = q.split_at_mut(i);
        let v = &mut rest[0];
        for u in done.iter() {
            let dot: f64 = u.iter().zip(v.iter()).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(x, a)| *x -= dot * a);
        }
        let norm = v
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        v.iter_mut().for_each(|x| *x /= norm);
    }
    // q[k] is the k-th orthonormal vector; lay them out as rows or columns of [rows, cols].
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let x = if rows >= cols { q[c][r] } else { q[r][c] };
            out[r * cols + c] = (gain * x) as f32;
        }
    }
    Tensor::from_vec(out, shape, device)
}

/// A VarBuilder backend that creates missing variables in a [`VarMap`] from a seeded RNG, with
/// the distribution each layer asks for (candle's own init draws from an unseeded thread RNG,
/// which would make runs, and the resume test, irreproducible).
pub(crate) struct SeededInit<'a> {
    pub(crate) varmap: &'a candle_nn::VarMap,
    pub(crate) rng: std::sync::Mutex<rand_pcg::Pcg64>,
}

impl SeededInit<'_> {
    fn sample(
        &self,
        shape: &candle_core::Shape,
        init: candle_nn::Init,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        use candle_nn::init::NormalOrUniform;
        use candle_nn::Init;
        let n = shape.elem_count();
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| candle_core::Error::Msg("init rng poisoned".into()))?;
        let uniform = |rng: &mut rand_pcg::Pcg64, lo: f64, up: f64| -> Vec<f32> {
            (0..n)
                .map(|_| (lo + (up - lo) * rng.gen::<f64>()) as f32)
                .collect()
        };
        let normal = |rng: &mut rand_pcg::Pcg64, mean: f64, std: f64| -> Vec<f32> {
            (0..n)
                .map(|_| (mean + std * gaussian(rng)) as f32)
                .collect()
        };
        let data = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        uniform(&mut rng, -(3f64.sqrt()) * std, 3f64.sqrt() * std)
                    }
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                }
            }
        };
        Tensor::from_vec(data, shape.clone(), device)
    }
}

impl candle_nn::var_builder::SimpleBackend for SeededInit<'_> {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: candle_core::DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(var) = data.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "variable {name} exists with shape {:?}, requested {shape:?}",
                    var.shape()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let value = self.sample(&shape, init, device)?.to_dtype(dtype)?;
        let var = candle_core::Var::from_tensor(&value)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: candle_core::DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("variable {name} must be created with a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gram(w: &Tensor, transpose: bool) -> Vec<Vec<f32>> {
        let w = if transpose { w.t().unwrap() } else { w.clone() };
        w.matmul(&w.t().unwrap()).unwrap().to_vec2::<f32>().unwrap()
    }

    #[test]
    fn rows_or_columns_are_orthonormal_times_gain() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(0);
        for (shape, transpose) in [
            (vec![3usize, 7], false),
            (vec![7, 3], true),
            (vec![5, 5], false),
        ] {
            let w = orthogonal(&shape, 2.0, &mut rng, &Device::Cpu).unwrap();
            let g = gram(&w, transpose);
            for (i, row) in g.iter().enumerate() {
                for (j, x) in row.iter().enumerate() {
                    let want = if i == j { 4.0 } else { 0.0 };
                    assert!((x - want).abs() < 1e-4, "{shape:?}: gram[{i}][{j}] = {x}");
                }
            }
        }
    }

    #[test]
    fn conv_weights_flatten_to_out_by_rest() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
        let w = orthogonal(&[4, 2, 3, 3], 1.0, &mut rng, &Device::Cpu).unwrap();
        let flat = w.reshape((4, 18)).unwrap();
        let g = gram(&flat, false);
        for (i, row) in g.iter().enumerate() {
            assert!((row[i] - 1.0).abs() < 1e-4);
        }
    }
}
