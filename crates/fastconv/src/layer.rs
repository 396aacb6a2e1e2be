//! `Conv2d`: a drop-in for `candle_nn::Conv2d` (same parameter names, layout and init).

use crate::error::{Error, Result};
use crate::op::{conv2d_with, ConvOptions};
use candle_core::{Module, Tensor};

/// A 2-D convolution layer without padding: input `[B, Cin, H, W]` ->
/// `[B, Cout, (H-K)/stride+1, (W-K)/stride+1]`, with weight `[Cout, Cin, K, K]` and bias `[Cout]`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    opts: ConvOptions,
}

impl Conv2d {
    /// Wraps existing parameters: `weight` `[Cout, Cin, Kh, Kw]`, `bias` `[Cout]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize) -> Result<Self> {
        let dims = weight.dims();
        if dims.len() != 4 {
            return Err(Error::Rank {
                what: "weight",
                expected: 4,
                shape: dims.to_vec(),
            });
        }
        if stride == 0 {
            return Err(Error::Zero { what: "stride" });
        }
        if let Some(b) = &bias {
            if b.dims() != [dims[0]] {
                return Err(Error::BiasShape {
                    c_out: dims[0],
                    shape: b.dims().to_vec(),
                });
            }
        }
        let opts = ConvOptions {
            stride,
            ..ConvOptions::default()
        };
        Ok(Self { weight, bias, opts })
    }

    /// Creates (or loads) `weight` `[out, in, kernel, kernel]` and `bias` `[out]` under `vb`,
    /// initialised exactly as `candle_nn::conv2d` does.
    pub fn load(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        vb: candle_nn::VarBuilder,
    ) -> Result<Self> {
        if stride == 0 {
            return Err(Error::Zero { what: "stride" });
        }
        let cfg = candle_nn::Conv2dConfig {
            stride,
            ..Default::default()
        };
        let inner = candle_nn::conv2d(in_channels, out_channels, kernel, cfg, vb)?;
        Self::new(inner.weight().clone(), inner.bias().cloned(), stride)
    }

    /// The same layer with a ReLU fused into it: `forward` returns `relu(conv(x))`
    /// (see [`crate::conv2d_relu`]).
    pub fn with_relu(mut self) -> Self {
        self.opts.relu = true;
        self
    }

    /// The same layer reading its input as `scale * input`; with `1.0 / 255.0` and u8 frames
    /// `[B, Cin, H, W]` (which `forward` accepts directly) pixels are in [0, 1] without a
    /// conversion pass.
    pub fn with_input_scale(mut self, scale: f64) -> Self {
        self.opts.input_scale = scale;
        self
    }

    /// The weight `[Cout, Cin, Kh, Kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[Cout]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The stride, in both directions.
    pub fn stride(&self) -> usize {
        self.opts.stride
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        conv2d_with(xs, &self.weight, self.bias.as_ref(), self.opts)
            .map_err(candle_core::Error::wrap)
    }
}
