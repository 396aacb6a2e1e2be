//! Conv2d as im2col + gemm with a hand-written backward, for fast CPU training.
//!
//! candle's CPU `conv2d` backward goes through a slow transposed convolution; here the
//! forward and both gradients are one gemm per cache-sized chunk of samples, split over
//! candle's thread count. [`conv2d`] is the function, [`Conv2d`] the layer (a drop-in for
//! `candle_nn::Conv2d` without padding). Non-CPU devices and dtypes other than f32/f64 fall
//! back to candle's own convolution.
#![deny(missing_docs)]

mod error;
mod kernels;
mod layer;
mod op;

pub use crate::error::{Error, Result};
pub use crate::layer::Conv2d;
pub use crate::op::{conv2d, conv2d_relu};
