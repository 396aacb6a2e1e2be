//! The convolution as a candle custom op: the forward runs `kernels::forward`, and its `bwd`
//! computes every gradient (through the fused ReLU) in one pass of `kernels::backward`.

use crate::error::{Error, Result};
use crate::kernels::{self, Element, Geometry, Wanted};
use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Storage, Tensor, WithDType,
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
/// `input` is the operand read through `load`, `floats` the others, in op order; the kernel
/// turns its typed result into `Out`.
trait KernelFn {
    type Out;
    fn run<I: WithDType, T: Element>(
        &self,
        input: &[I],
        load: impl Fn(I) -> T + Copy + Sync,
        floats: &[&[T]],
    ) -> candle_core::Result<Self::Out>;
}

/// Runs `kernel` with `input` as u8, f32 or f64 and the `floats` all f32 or all f64;
/// `input` is read as `scale * input` in the float type.
fn dispatch<K: KernelFn>(
    input: (&CpuStorage, &Layout),
    floats: &[(&CpuStorage, &Layout)],
    scale: f64,
    kernel: K,
) -> candle_core::Result<K::Out> {
    fn typed<I: WithDType, T: Element, K: KernelFn>(
        (s, l): (&CpuStorage, &Layout),
        floats: &[(&CpuStorage, &Layout)],
        scale: f64,
        kernel: K,
    ) -> candle_core::Result<K::Out> {
        let floats: Vec<&[T]> = floats
            .iter()
            .map(|(s, l)| slice::<T>(s, l))
            .collect::<candle_core::Result<_>>()?;
        let scale = T::from_f64(scale);
        let load = move |x: I| T::from_f64(x.to_f64()) * scale;
        kernel.run(slice::<I>(s, l)?, load, &floats)
    }
    match (input.0, floats.first().map(|(s, _)| s)) {
        (CpuStorage::U8(_), Some(CpuStorage::F32(_))) => {
            typed::<u8, f32, K>(input, floats, scale, kernel)
        }
        (CpuStorage::U8(_), Some(CpuStorage::F64(_))) => {
            typed::<u8, f64, K>(input, floats, scale, kernel)
        }
        (CpuStorage::F32(_), Some(CpuStorage::F32(_))) => {
            typed::<f32, f32, K>(input, floats, scale, kernel)
        }
        (CpuStorage::F64(_), Some(CpuStorage::F64(_))) => {
            typed::<f64, f64, K>(input, floats, scale, kernel)
        }
        _ => candle_core::bail!("fastconv: u8, f32 or f64 input with f32 or f64 weights expected"),
    }
}

/// `(input, weight[, bias]) -> output`.
struct ConvForward(ConvOptions);

struct Forward(Geometry, bool);
impl KernelFn for Forward {
    type Out = CpuStorage;
    fn run<I: WithDType, T: Element>(
        &self,
        input: &[I],
        load: impl Fn(I) -> T + Copy + Sync,
        floats: &[&[T]],
    ) -> candle_core::Result<CpuStorage> {
        let bias = floats.get(1).copied();
        let out = kernels::forward(&self.0, input, load, floats[0], (bias, self.1));
        Ok(T::to_cpu_storage_owned(out))
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

    /// The gradients of `input`, `weight` and `bias` (those that track one) from `grad_out`
    /// `[B, Cout, Ho, Wo]`, in one pass of `kernels::backward` over the batch.
    fn backward(
        &self,
        input: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        output: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<[Option<Tensor>; 3]> {
        let wanted = Wanted {
            // Frames fed to the first layer track no gradient: skip their (costly) gradient.
            input: input.track_op(),
            weight: weight.track_op(),
            bias: bias.is_some_and(Tensor::track_op),
        };
        if !(wanted.input || wanted.weight || wanted.bias) {
            return Ok([None, None, None]);
        }
        let g = Geometry::new(input.dims(), weight.dims(), self.0.stride)
            .map_err(candle_core::Error::wrap)?;
        let expected = [g.batch, g.c_out, g.ho, g.wo];
        if grad_out.dims() != expected {
            candle_core::bail!(
                "fastconv: gradient of shape {:?}, expected {expected:?}",
                grad_out.dims()
            )
        }
        let grad_out = grad_out.contiguous()?;
        // Read locks, as candle's own ops take them (candle holds none while it calls `bwd`).
        let input = input.storage_and_layout();
        let weight = weight.storage_and_layout();
        let grad_out = grad_out.storage_and_layout();
        let output = self.0.relu.then(|| output.storage_and_layout());
        let mut floats = vec![(cpu(&weight.0)?, weight.1), (cpu(&grad_out.0)?, grad_out.1)];
        if let Some((storage, layout)) = &output {
            floats.push((cpu(storage)?, layout));
        }
        let kernel = Backward {
            g,
            wanted,
            scale: self.0.input_scale,
        };
        let [d_input, d_weight, d_bias] = dispatch(
            (cpu(&input.0)?, input.1),
            &floats,
            self.0.input_scale,
            kernel,
        )?;
        // d input in the input's dtype (u8 frames, which never track, aside).
        let in_dtype = input.0.dtype();
        let d_input = d_input.map(|d| d.to_dtype(in_dtype)).transpose()?;
        Ok([d_input, d_weight, d_bias])
    }
}

/// The CPU storage in `storage` (the op runs on CPU tensors only).
fn cpu(storage: &Storage) -> candle_core::Result<&CpuStorage> {
    match storage {
        Storage::Cpu(s) => Ok(s),
        _ => candle_core::bail!("fastconv: CPU tensors expected"),
    }
}

/// `(input, weight, grad_out[, relu output]) -> [d input, d weight, d bias]`.
struct Backward {
    g: Geometry,
    wanted: Wanted,
    /// The factor the forward read the input with.
    scale: f64,
}

impl KernelFn for Backward {
    type Out = [Option<Tensor>; 3];
    fn run<I: WithDType, T: Element>(
        &self,
        input: &[I],
        load: impl Fn(I) -> T + Copy + Sync,
        floats: &[&[T]],
    ) -> candle_core::Result<[Option<Tensor>; 3]> {
        let g = &self.g;
        let relu_out = floats.get(2).copied();
        let scale = T::from_f64(self.scale);
        let grads = kernels::backward(
            g,
            input,
            load,
            floats[0],
            floats[1],
            relu_out,
            scale,
            self.wanted,
        );
        let tensor = |v: Option<Vec<T>>, shape: &[usize]| {
            v.map(|v| Tensor::from_vec(v, shape, &Device::Cpu))
                .transpose()
        };
        Ok([
            tensor(grads.input, &[g.batch, g.c_in, g.h, g.w])?,
            tensor(grads.weight, &[g.c_out, g.c_in, g.kh, g.kw])?,
            tensor(grads.bias, &[g.c_out])?,
        ])
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
        let [d_input, d_weight, _] = self.backward(input, weight, None, output, grad_out)?;
        Ok((d_input, d_weight))
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
        let [d_input, d_weight, d_bias] =
            self.backward(input, weight, Some(bias), output, grad_out)?;
        Ok((d_input, d_weight, d_bias))
    }
}
