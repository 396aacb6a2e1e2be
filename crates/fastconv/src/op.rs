//! The convolution as candle custom ops: a forward op whose `bwd` calls more ops (ReLU mask,
//! weight, input and bias gradients), all running the kernels of `kernels.rs`.

use crate::error::{Error, Result};
use crate::kernels::{self, Element, Geometry};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType,
};

/// How [`conv2d_with`] convolves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvOptions {
    /// Stride in both directions (positive).
    pub stride: usize,
    /// Whether a ReLU follows, fused into the op (no extra pass forward, one backward).
    pub relu: bool,
    /// The input is read as `input_scale * input`, in the weight's dtype; with `1/255` the op
    /// takes u8 frames directly, saving candle's two conversion passes over them.
    pub input_scale: f64,
}

impl Default for ConvOptions {
    fn default() -> Self {
        Self {
            stride: 1,
            relu: false,
            input_scale: 1.0,
        }
    }
}

/// Convolves `input` `[B, Cin, H, W]` with `weight` `[Cout, Cin, Kh, Kw]` (no padding, no
/// dilation, `stride` in both directions) and adds `bias` `[Cout]`; returns
/// `[B, Cout, (H-Kh)/stride+1, (W-Kw)/stride+1]`, differentiable in all three.
///
/// f32 and f64 on the CPU run as im2col + gemm with a hand-written backward; other dtypes
/// and devices fall back to candle's own `conv2d`, with the same result.
pub fn conv2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
) -> Result<Tensor> {
    let opts = ConvOptions {
        stride,
        ..ConvOptions::default()
    };
    conv2d_with(input, weight, bias, opts)
}

/// `relu(conv2d(input, weight, bias, stride))` as one op (see [`conv2d`] for the shapes): the
/// ReLU costs no extra pass forward and one backward, against candle's several.
pub fn conv2d_relu(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
) -> Result<Tensor> {
    let opts = ConvOptions {
        stride,
        relu: true,
        ..ConvOptions::default()
    };
    conv2d_with(input, weight, bias, opts)
}

/// [`conv2d`] with options: `[B, Cin, H, W]` -> `[B, Cout, Ho, Wo]` computing
/// `conv(input_scale * input) + bias`, then ReLU if `opts.relu`. `input` has the weight's
/// dtype or is u8 (converted on the fly); `weight` and `bias` share one dtype.
pub fn conv2d_with(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: ConvOptions,
) -> Result<Tensor> {
    let g = Geometry::new(input.dims(), weight.dims(), opts.stride)?;
    check_same(weight, input, "input", input.dtype() != DType::U8)?;
    if let Some(bias) = bias {
        check_same(weight, bias, "bias", true)?;
        if bias.dims() != [g.c_out] {
            return Err(Error::BiasShape {
                c_out: g.c_out,
                shape: bias.dims().to_vec(),
            });
        }
    }
    let floats = matches!(weight.dtype(), DType::F32 | DType::F64);
    if !(weight.device().is_cpu() && floats) {
        return fallback(input, weight, bias, opts, g.c_out);
    }
    let (input, weight) = (input.contiguous()?, weight.contiguous()?);
    let op = ConvForward(opts);
    Ok(match bias {
        Some(bias) => input.apply_op3(&weight, &bias.contiguous()?, op)?,
        None => input.apply_op2(&weight, op)?,
    })
}

/// The same computation from candle's own ops (other devices and dtypes).
fn fallback(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: ConvOptions,
    c_out: usize,
) -> Result<Tensor> {
    let mut x = input.to_dtype(weight.dtype())?;
    if opts.input_scale != 1.0 {
        x = x.affine(opts.input_scale, 0.0)?;
    }
    let mut out = x.conv2d(weight, 0, opts.stride, 1, 1)?;
    if let Some(bias) = bias {
        out = out.broadcast_add(&bias.reshape((1, c_out, 1, 1))?)?;
    }
    Ok(if opts.relu { out.relu()? } else { out })
}

/// `other` must be on `weight`'s device and, if `same_dtype`, of its dtype.
fn check_same(weight: &Tensor, other: &Tensor, what: &str, same_dtype: bool) -> Result<()> {
    let dtype_ok = !same_dtype || weight.dtype() == other.dtype();
    if !dtype_ok || !weight.device().same_device(other.device()) {
        return Err(Error::Mismatch(format!(
            "weight is {:?} on {:?}, {what} is {:?} on {:?}",
            weight.dtype(),
            weight.device().location(),
            other.dtype(),
            other.device().location()
        )));
    }
    Ok(())
}

/// The contiguous slice of a CPU storage seen through `layout`.
fn slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fastconv: operands must be contiguous")
    };
    Ok(&storage.as_slice::<T>()?[start..end])
}

/// A kernel generic over the input type `I` and the float type `T` (closures cannot be).
/// `input` is the operand read through `load`, `floats` the others, in op order.
trait KernelFn {
    fn run<I: WithDType, T: Element>(
        &self,
        input: &[I],
        load: impl Fn(I) -> T + Copy + Sync,
        floats: &[&[T]],
    ) -> Vec<T>;
}

/// Runs `kernel` with `input` as u8, f32 or f64 and the `floats` all f32 or all f64;
/// `input` is read as `scale * input` in the float type.
fn dispatch(
    input: (&CpuStorage, &Layout),
    floats: &[(&CpuStorage, &Layout)],
    scale: f64,
    kernel: impl KernelFn,
) -> candle_core::Result<CpuStorage> {
    fn typed<I: WithDType, T: Element>(
        (s, l): (&CpuStorage, &Layout),
        floats: &[(&CpuStorage, &Layout)],
        scale: f64,
        kernel: impl KernelFn,
    ) -> candle_core::Result<Vec<T>> {
        let floats: Vec<&[T]> = floats
            .iter()
            .map(|(s, l)| slice::<T>(s, l))
            .collect::<candle_core::Result<_>>()?;
        let scale = T::from_f64(scale);
        let load = move |x: I| T::from_f64(x.to_f64()) * scale;
        Ok(kernel.run(slice::<I>(s, l)?, load, &floats))
    }
    let float_dtype = floats.first().map(|(s, _)| s);
    match (input.0, float_dtype) {
        (CpuStorage::U8(_), Some(CpuStorage::F32(_))) => Ok(CpuStorage::F32(typed::<u8, f32>(
            input, floats, scale, kernel,
        )?)),
        (CpuStorage::U8(_), Some(CpuStorage::F64(_))) => Ok(CpuStorage::F64(typed::<u8, f64>(
            input, floats, scale, kernel,
        )?)),
        (CpuStorage::F32(_), Some(CpuStorage::F32(_)) | None) => {
            Ok(CpuStorage::F32(typed::<f32, f32>(
                input, floats, scale, kernel,
            )?))
        }
        (CpuStorage::F64(_), Some(CpuStorage::F64(_)) | None) => {
            Ok(CpuStorage::F64(typed::<f64, f64>(
                input, floats, scale, kernel,
            )?))
        }
        _ => candle_core::bail!("fastconv: u8, f32 or f64 input with f32 or f64 weights expected"),
    }
}

/// `(input, weight[, bias]) -> output`.
struct ConvForward(ConvOptions);

struct Forward(Geometry, bool);
impl KernelFn for Forward {
    fn run<I: WithDType, T: Element>(
        &self,
        input: &[I],
        load: impl Fn(I) -> T + Copy + Sync,
        floats: &[&[T]],
    ) -> Vec<T> {
        let bias = floats.get(1).copied();
        kernels::forward(&self.0, input, load, floats[0], (bias, self.1))
    }
}

impl ConvForward {
    fn run_forward(
        &self,
        input: (&CpuStorage, &Layout),
        floats: &[(&CpuStorage, &Layout)],
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geometry::new(input.1.dims(), floats[0].1.dims(), self.0.stride)
            .map_err(candle_core::Error::wrap)?;
        let out = dispatch(input, floats, self.0.input_scale, Forward(g, self.0.relu))?;
        Ok((out, Shape::from((g.batch, g.c_out, g.ho, g.wo))))
    }

    /// The gradient at the convolution's output (before the ReLU), contiguous.
    fn pre_relu_grad(&self, output: &Tensor, grad_out: &Tensor) -> candle_core::Result<Tensor> {
        let grad_out = grad_out.contiguous()?;
        if self.0.relu {
            grad_out.apply_op2_no_bwd(output, &ReluGrad)
        } else {
            Ok(grad_out)
        }
    }

    fn input_grad(
        &self,
        input: &Tensor,
        weight: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // Frames fed to the first layer track no gradient: skip their (costly) gradient.
        if !input.track_op() {
            return Ok(None);
        }
        let op = ConvInputGrad {
            opts: self.0,
            input_shape: input.dims4()?,
        };
        let grad = weight.apply_op2_no_bwd(grad_out, &op)?;
        Ok(Some(grad.to_dtype(input.dtype())?))
    }

    fn weight_grad(
        &self,
        input: &Tensor,
        weight: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        if !weight.track_op() {
            return Ok(None);
        }
        let op = ConvWeightGrad {
            opts: self.0,
            weight_shape: weight.dims4()?,
        };
        Ok(Some(input.apply_op2_no_bwd(grad_out, &op)?))
    }
}

impl CustomOp2 for ConvForward {
    fn name(&self) -> &'static str {
        "fastconv-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run_forward((s1, l1), &[(s2, l2)])
    }

    fn bwd(
        &self,
        input: &Tensor,
        weight: &Tensor,
        output: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_out = self.pre_relu_grad(output, grad_out)?;
        Ok((
            self.input_grad(input, weight, &grad_out)?,
            self.weight_grad(input, weight, &grad_out)?,
        ))
    }
}

impl CustomOp3 for ConvForward {
    fn name(&self) -> &'static str {
        "fastconv-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let c_out = l2.dims().first().copied().unwrap_or(0);
        if l3.dims() != [c_out] {
            candle_core::bail!(
                "fastconv: bias of shape {:?}, expected [{c_out}]",
                l3.dims()
            )
        }
        self.run_forward((s1, l1), &[(s2, l2), (s3, l3)])
    }

    fn bwd(
        &self,
        input: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        output: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad_out = self.pre_relu_grad(output, grad_out)?;
        let grad_b = if bias.track_op() {
            Some(grad_out.apply_op1_no_bwd(&ConvBiasGrad)?)
        } else {
            None
        };
        Ok((
            self.input_grad(input, weight, &grad_out)?,
            self.weight_grad(input, weight, &grad_out)?,
            grad_b,
        ))
    }
}

/// `(grad, relu output) -> grad where the output is positive`.
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "fastconv-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "fastconv: relu grad {:?} vs output {:?}",
                l1.dims(),
                l2.dims()
            )
        }
        struct Mask;
        impl KernelFn for Mask {
            fn run<I: WithDType, T: Element>(
                &self,
                _: &[I],
                _: impl Fn(I) -> T + Copy + Sync,
                floats: &[&[T]],
            ) -> Vec<T> {
                kernels::relu_grad(floats[0], floats[1])
            }
        }
        let out = dispatch((s1, l1), &[(s1, l1), (s2, l2)], 1.0, Mask)?;
        Ok((out, l1.shape().clone()))
    }
}

/// `grad_out -> grad_bias`.
struct ConvBiasGrad;

impl CustomOp1 for ConvBiasGrad {
    fn name(&self) -> &'static str {
        "fastconv-conv2d-bias-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c_out, ho, wo) = l.shape().dims4()?;
        // Any geometry with this output shape sums the same way.
        let g = Geometry::new(&[b, 1, ho, wo], &[c_out, 1, 1, 1], 1)
            .map_err(candle_core::Error::wrap)?;
        struct BiasGrad(Geometry);
        impl KernelFn for BiasGrad {
            fn run<I: WithDType, T: Element>(
                &self,
                _: &[I],
                _: impl Fn(I) -> T + Copy + Sync,
                floats: &[&[T]],
            ) -> Vec<T> {
                kernels::bias_grad(&self.0, floats[0])
            }
        }
        let out = dispatch((s, l), &[(s, l)], 1.0, BiasGrad(g))?;
        Ok((out, Shape::from(c_out)))
    }
}

/// `(input, grad_out) -> grad_weight`.
struct ConvWeightGrad {
    opts: ConvOptions,
    weight_shape: (usize, usize, usize, usize),
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "fastconv-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = self.weight_shape;
        let g = Geometry::new(l1.dims(), &[w.0, w.1, w.2, w.3], self.opts.stride)
            .map_err(candle_core::Error::wrap)?;
        check_grad_shape(&g, l2)?;
        struct WeightGrad(Geometry);
        impl KernelFn for WeightGrad {
            fn run<I: WithDType, T: Element>(
                &self,
                input: &[I],
                load: impl Fn(I) -> T + Copy + Sync,
                floats: &[&[T]],
            ) -> Vec<T> {
                kernels::weight_grad(&self.0, input, load, floats[0])
            }
        }
        let out = dispatch((s1, l1), &[(s2, l2)], self.opts.input_scale, WeightGrad(g))?;
        Ok((out, Shape::from(w)))
    }
}

/// `(weight, grad_out) -> grad_input` (in the weight's dtype).
struct ConvInputGrad {
    opts: ConvOptions,
    input_shape: (usize, usize, usize, usize),
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "fastconv-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let i = self.input_shape;
        let g = Geometry::new(&[i.0, i.1, i.2, i.3], l1.dims(), self.opts.stride)
            .map_err(candle_core::Error::wrap)?;
        check_grad_shape(&g, l2)?;
        struct InputGrad(Geometry, f64);
        impl KernelFn for InputGrad {
            fn run<I: WithDType, T: Element>(
                &self,
                _: &[I],
                _: impl Fn(I) -> T + Copy + Sync,
                floats: &[&[T]],
            ) -> Vec<T> {
                let scale = T::from_f64(self.1);
                kernels::input_grad(&self.0, floats[0], floats[1], scale)
            }
        }
        let kernel = InputGrad(g, self.opts.input_scale);
        let out = dispatch((s1, l1), &[(s1, l1), (s2, l2)], 1.0, kernel)?;
        Ok((out, Shape::from(i)))
    }
}

fn check_grad_shape(g: &Geometry, grad_out: &Layout) -> candle_core::Result<()> {
    let expected = [g.batch, g.c_out, g.ho, g.wo];
    if grad_out.dims() != expected {
        candle_core::bail!(
            "fastconv: gradient of shape {:?}, expected {expected:?}",
            grad_out.dims()
        )
    }
    Ok(())
}
