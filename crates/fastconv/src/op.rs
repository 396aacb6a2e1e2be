//! The convolution as candle custom ops: a forward op whose `bwd` calls two more ops
//! (weight gradient, input gradient), all running the kernels of `kernels.rs`.

use crate::error::{Error, Result};
use crate::kernels::{self, Element, Geometry};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

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
    conv2d_maybe_relu(input, weight, bias, stride, false)
}

/// `relu(conv2d(input, weight, bias, stride))` as one op (see [`conv2d`] for the shapes): the
/// ReLU costs no extra pass forward and one backward, against candle's several.
pub fn conv2d_relu(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
) -> Result<Tensor> {
    conv2d_maybe_relu(input, weight, bias, stride, true)
}

fn conv2d_maybe_relu(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    relu: bool,
) -> Result<Tensor> {
    let g = Geometry::new(input.dims(), weight.dims(), stride)?;
    check_same(input, weight, "weight")?;
    if let Some(bias) = bias {
        check_same(input, bias, "bias")?;
        if bias.dims() != [g.c_out] {
            return Err(Error::BiasShape {
                c_out: g.c_out,
                shape: bias.dims().to_vec(),
            });
        }
    }
    let fast = input.device().is_cpu() && matches!(input.dtype(), DType::F32 | DType::F64);
    if !fast {
        let out = input.conv2d(weight, 0, stride, 1, 1)?;
        let out = match bias {
            Some(bias) => out.broadcast_add(&bias.reshape((1, g.c_out, 1, 1))?)?,
            None => out,
        };
        return Ok(if relu { out.relu()? } else { out });
    }
    let (input, weight) = (input.contiguous()?, weight.contiguous()?);
    let op = ConvForward { stride, relu };
    Ok(match bias {
        Some(bias) => input.apply_op3(&weight, &bias.contiguous()?, op)?,
        None => input.apply_op2(&weight, op)?,
    })
}

fn check_same(input: &Tensor, other: &Tensor, what: &str) -> Result<()> {
    if input.dtype() != other.dtype() || !input.device().same_device(other.device()) {
        return Err(Error::Mismatch(format!(
            "input is {:?} on {:?}, {what} is {:?} on {:?}",
            input.dtype(),
            input.device().location(),
            other.dtype(),
            other.device().location()
        )));
    }
    Ok(())
}

/// The contiguous slice of a CPU storage seen through `layout`.
fn slice<'a, T: Element>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fastconv: operands must be contiguous")
    };
    Ok(&storage.as_slice::<T>()?[start..end])
}

fn geometry(input: &Layout, weight: &Layout, stride: usize) -> candle_core::Result<Geometry> {
    Geometry::new(input.dims(), weight.dims(), stride).map_err(candle_core::Error::wrap)
}

/// Runs `kernel` on the operands as f32 or f64, whichever they all are.
fn dispatch(
    operands: &[(&CpuStorage, &Layout)],
    kernel: impl KernelFn,
) -> candle_core::Result<CpuStorage> {
    fn slices<'a, T: Element>(
        operands: &[(&'a CpuStorage, &Layout)],
    ) -> candle_core::Result<Vec<&'a [T]>> {
        operands.iter().map(|(s, l)| slice::<T>(s, l)).collect()
    }
    match operands.first() {
        Some((CpuStorage::F32(_), _)) => Ok(CpuStorage::F32(kernel.run(&slices(operands)?))),
        Some((CpuStorage::F64(_), _)) => Ok(CpuStorage::F64(kernel.run(&slices(operands)?))),
        _ => candle_core::bail!("fastconv: operands must all be f32 or all f64"),
    }
}

/// A kernel generic over the element type (closures cannot be); `operands` are in the
/// order the op received them.
trait KernelFn {
    fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T>;
}

/// `(input, weight[, bias]) -> output`, through a ReLU if `relu`.
struct ConvForward {
    stride: usize,
    relu: bool,
}

struct Forward(Geometry, bool);
impl KernelFn for Forward {
    fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T> {
        let bias = operands.get(2).copied();
        kernels::forward(&self.0, operands[0], operands[1], bias, self.1)
    }
}

impl ConvForward {
    /// The gradient at the convolution's output (before the ReLU), contiguous.
    fn pre_relu_grad(&self, output: &Tensor, grad_out: &Tensor) -> candle_core::Result<Tensor> {
        let grad_out = grad_out.contiguous()?;
        if self.relu {
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
            stride: self.stride,
            input_shape: input.dims4()?,
        };
        Ok(Some(weight.apply_op2_no_bwd(grad_out, &op)?))
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
            stride: self.stride,
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
        let g = geometry(l1, l2, self.stride)?;
        let out = dispatch(&[(s1, l1), (s2, l2)], Forward(g, self.relu))?;
        Ok((out, Shape::from((g.batch, g.c_out, g.ho, g.wo))))
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
        let g = geometry(l1, l2, self.stride)?;
        if l3.dims() != [g.c_out] {
            candle_core::bail!(
                "fastconv: bias of shape {:?}, expected [{}]",
                l3.dims(),
                g.c_out
            )
        }
        let out = dispatch(&[(s1, l1), (s2, l2), (s3, l3)], Forward(g, self.relu))?;
        Ok((out, Shape::from((g.batch, g.c_out, g.ho, g.wo))))
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
            fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T> {
                kernels::relu_grad(operands[0], operands[1])
            }
        }
        let out = dispatch(&[(s1, l1), (s2, l2)], Mask)?;
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
            fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T> {
                kernels::bias_grad(&self.0, operands[0])
            }
        }
        let out = dispatch(&[(s, l)], BiasGrad(g))?;
        Ok((out, Shape::from(c_out)))
    }
}

/// `(input, grad_out) -> grad_weight`.
struct ConvWeightGrad {
    stride: usize,
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
        let g = Geometry::new(l1.dims(), &[w.0, w.1, w.2, w.3], self.stride)
            .map_err(candle_core::Error::wrap)?;
        check_grad_shape(&g, l2)?;
        struct WeightGrad(Geometry);
        impl KernelFn for WeightGrad {
            fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T> {
                kernels::weight_grad(&self.0, operands[0], operands[1])
            }
        }
        let out = dispatch(&[(s1, l1), (s2, l2)], WeightGrad(g))?;
        Ok((out, Shape::from(w)))
    }
}

/// `(weight, grad_out) -> grad_input`.
struct ConvInputGrad {
    stride: usize,
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
        let g = Geometry::new(&[i.0, i.1, i.2, i.3], l1.dims(), self.stride)
            .map_err(candle_core::Error::wrap)?;
        check_grad_shape(&g, l2)?;
        struct InputGrad(Geometry);
        impl KernelFn for InputGrad {
            fn run<T: Element>(&self, operands: &[&[T]]) -> Vec<T> {
                kernels::input_grad(&self.0, operands[0], operands[1])
            }
        }
        let out = dispatch(&[(s1, l1), (s2, l2)], InputGrad(g))?;
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
