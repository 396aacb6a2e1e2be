//! Conv2d as im2col + gemm with a hand-written backward, for fast CPU training.
//!
//! candle's CPU `conv2d` backward goes through a slow transposed convolution; here the
//! forward is one gemm per cache-sized chunk of samples, and the backward one pass that takes
//! all gradients from one copy of the output gradient per chunk, split over candle's thread
//! count. [`conv2d`] is the function, [`Conv2d`] the layer (a drop-in for
//! `candle_nn::Conv2d` without padding). [`conv2d_with`] (and the layer's `with_relu`,
//! `with_input_scale`) also fuse the ReLU that follows and the `/ 255` of u8 frames into the
//! op, which saves candle several passes over the activations. Non-CPU devices and dtypes
//! other than f32/f64 fall back to candle's own ops, with the same results.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//!
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
//! // Nature CNN's first layer: 4 -> 32 channels, 8x8 kernel, stride 4, on u8 frames / 255,
//! // with its ReLU.
//! let conv = fastconv::Conv2d::load(4, 32, 8, 4, vb.pp("conv0"))?
//!     .with_input_scale(1.0 / 255.0)
//!     .with_relu();
//! let frames = Tensor::zeros((2, 4, 84, 84), DType::U8, &Device::Cpu)?;
//! assert_eq!(conv.forward(&frames)?.dims(), [2, 32, 20, 20]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod error;
mod kernels;
mod layer;
mod op;

pub use crate::error::{Error, Result};
pub use crate::layer::Conv2d;
pub use crate::op::{conv2d, conv2d_relu, conv2d_with, ConvOptions};
