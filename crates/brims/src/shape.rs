//! Input and weight shape checks and the fast tanh, shared by both cores ([`crate::lstm`],
//! [`crate::brims`]).

use candle_core::Tensor;

use crate::error::BrimsError;

/// `tanh(x) = 2σ(2x) − 1`: candle's sigmoid runs on `exp`, about twice as fast as libm's
/// `tanhf` here, and the cores spend a tenth of a step in tanh. Differentiable as composed.
pub(crate) fn fast_tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::sigmoid(&x.affine(2.0, 0.0)?)?.affine(2.0, -1.0)
}

/// `input`'s last dimension is the core's input width `expected`.
pub(crate) fn check_width(input: &Tensor, expected: usize) -> Result<(), BrimsError> {
    if input.dims().last() != Some(&expected) {
        return Err(BrimsError::InputWidth {
            expected,
            got: input.dims().to_vec(),
        });
    }
    Ok(())
}

/// `t` (the weight `name`) has exactly the shape `expected`.
pub(crate) fn expect_shape(name: &str, t: &Tensor, expected: &[usize]) -> Result<(), BrimsError> {
    if t.dims() != expected {
        return Err(shape_err(name, expected, t));
    }
    Ok(())
}

/// The error for the weight `name` of shape `t` where `expected` was wanted.
pub(crate) fn shape_err(name: &str, expected: &[usize], t: &Tensor) -> BrimsError {
    BrimsError::WeightShape {
        name: name.into(),
        expected: expected.to_vec(),
        got: t.dims().to_vec(),
    }
}
