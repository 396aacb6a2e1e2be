//! The crate's one error type.

/// What can go wrong when building or running a convolution.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor did not have the rank the convolution needs.
    #[error("conv2d: {what} must have rank {expected}, got shape {shape:?}")]
    Rank {
        /// Which argument (`input`, `weight`, `bias`).
        what: &'static str,
        /// The rank accepted.
        expected: usize,
        /// The shape received.
        shape: Vec<usize>,
    },
    /// The input's channel count differs from the weight's.
    #[error(
        "conv2d: input has {input} channels but the weight [Cout, Cin, Kh, Kw] expects {weight}"
    )]
    ChannelMismatch {
        /// Channels of the input `[B, Cin, H, W]`.
        input: usize,
        /// `Cin` of the weight `[Cout, Cin, Kh, Kw]`.
        weight: usize,
    },
    /// The kernel does not fit inside the (unpadded) input.
    #[error("conv2d: kernel {kernel:?} is larger than the input's spatial size {input:?}")]
    KernelLargerThanInput {
        /// `(Kh, Kw)`.
        kernel: (usize, usize),
        /// `(H, W)`.
        input: (usize, usize),
    },
    /// A dimension that must be positive was zero.
    #[error("conv2d: {what} must be positive, got 0")]
    Zero {
        /// Which quantity (`stride`, `kernel`, `input channels`).
        what: &'static str,
    },
    /// The bias is not `[Cout]`.
    #[error("conv2d: bias must have shape [{c_out}], got {shape:?}")]
    BiasShape {
        /// `Cout` of the weight.
        c_out: usize,
        /// The shape received.
        shape: Vec<usize>,
    },
    /// Input, weight and bias differ in dtype or device.
    #[error("conv2d: input, weight and bias must share dtype and device ({0})")]
    Mismatch(String),
    /// An error from candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
