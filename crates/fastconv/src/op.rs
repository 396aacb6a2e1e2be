//! The convolution as candle custom ops: a forward op whose `bwd` calls two more ops
//! (weight gradient, input gradient), all running the kernels of `kernels.rs`.

use crate::error::{Error, Result};
use crate::kernels::{self, Element, Geometry};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

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
    let out = if fast {
        input
            .contiguous()?
            .apply_op2(&weight.contiguous()?, ConvForward { stride })?
    } else {
        input.conv2d(weight, 0, stride, 1, 1)?
    };
    Ok(match bias {
        Some(bias) => out.broadcast_add(&bias.reshape((1, g.c_out, 1, 1))?)?,
        None => out,
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

/// Runs `kernel` on the two operands as f32 or f64, whichever they are.
fn dispatch(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    kernel: impl KernelFn,
) -> candle_core::Result<CpuStorage> {
    match (s1, s2) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => Ok(CpuStorage::F32(
            kernel.run(slice::<f32>(s1, l1)?, slice::<f32>(s2, l2)?),
        )),
        (CpuStorage::F64(_), CpuStorage::F64(_)) => Ok(CpuStorage::F64(
            kernel.run(slice::<f64>(s1, l1)?, slice::<f64>(s2, l2)?),
        )),
        _ => candle_core::bail!("fastconv: operands must both be f32 or both f64"),
    }
}

/// A kernel generic over the element type (closures cannot be).
trait KernelFn {
    fn run<T: Element>(&self, a: &[T], b: &[T]) -> Vec<T>;
}

/// `(input, weight) -> output`.
struct ConvForward {
    stride: usize,
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
        struct Fwd(Geometry);
        impl KernelFn for Fwd {
            fn run<T: Element>(&self, input: &[T], weight: &[T]) -> Vec<T> {
                kernels::forward(&self.0, input, weight)
            }
        }
        let out = dispatch((s1, l1), (s2, l2), Fwd(g))?;
        Ok((out, Shape::from((g.batch, g.c_out, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        input: &Tensor,
        weight: &Tensor,
        _output: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_out = grad_out.contiguous()?;
        // Frames fed to the first layer track no gradient: skip their (costly) gradient.
        let grad_in = if input.track_op() {
            let op = ConvInputGrad {
                stride: self.stride,
                input_shape: input.dims4()?,
            };
            Some(weight.apply_op2_no_bwd(&grad_out, &op)?)
        } else {
            None
        };
        let grad_w = if weight.track_op() {
            let op = ConvWeightGrad {
                stride: self.stride,
                weight_shape: weight.dims4()?,
            };
            Some(input.apply_op2_no_bwd(&grad_out, &op)?)
        } else {
            None
        };
        Ok((grad_in, grad_w))
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
            fn run<T: Element>(&self, input: &[T], grad_out: &[T]) -> Vec<T> {
                kernels::weight_grad(&self.0, input, grad_out)
            }
        }
        let out = dispatch((s1, l1), (s2, l2), WeightGrad(g))?;
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
            fn run<T: Element>(&self, weight: &[T], grad_out: &[T]) -> Vec<T> {
                kernels::input_grad(&self.0, weight, grad_out)
            }
        }
        let out = dispatch((s1, l1), (s2, l2), InputGrad(g))?;
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
