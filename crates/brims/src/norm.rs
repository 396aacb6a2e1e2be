//! Row normalisation shared by BRIMs' `slot_norm` and the LSTM's `input_norm`.

use candle_core::{Result, Tensor, D};

/// ε added to the variance before the square root (as torch's `LayerNorm`).
pub(crate) const NORM_EPS: f64 = 1e-5;

/// `x [.., D]` normalised over its last dimension to zero mean and unit variance, with no
/// learned scale or shift (torch's `LayerNorm(D, elementwise_affine=False)`). Differentiable as
/// composed.
pub(crate) fn normalise_rows(x: &Tensor) -> Result<Tensor> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred.broadcast_div(&(var + NORM_EPS)?.sqrt()?)
}
