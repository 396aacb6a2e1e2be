//! fastconv against candle's own conv2d: forward values and all three gradients.

use candle_core::{DType, Device, Module, Tensor, Var};
use fastconv::{conv2d, conv2d_relu, conv2d_with, Conv2d, ConvOptions, Error};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(rng: &mut StdRng, shape: &[usize], dtype: DType) -> Tensor {
    let n = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .unwrap()
}

/// Largest |a - b| relative to the largest |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
    let diff = diff.max(0).unwrap().to_dtype(DType::F64).unwrap();
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let scale = scale
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    diff.to_scalar::<f64>().unwrap() / scale.max(1e-30)
}

/// Output, d input, d weight, d bias of `sum(conv(x) * probe)`.
fn run(
    conv: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
    x: &Var,
    w: &Var,
    b: &Var,
    probe: &Tensor,
) -> [Tensor; 4] {
    let out = conv(x.as_tensor(), w.as_tensor(), b.as_tensor());
    let grads = (&out * probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = |v: &Var| grads.get(v.as_tensor()).expect("gradient").clone();
    [out, g(x), g(w), g(b)]
}

fn check(input: [usize; 4], weight: [usize; 4], stride: usize, dtype: DType, seed: u64) {
    check_maybe_relu(input, weight, stride, dtype, seed, false)
}

fn check_maybe_relu(
    input: [usize; 4],
    weight: [usize; 4],
    stride: usize,
    dtype: DType,
    seed: u64,
    relu: bool,
) {
    let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
    let mut rng = StdRng::seed_from_u64(seed);
    let x = Var::from_tensor(&random(&mut rng, &input, dtype)).unwrap();
    let w = Var::from_tensor(&random(&mut rng, &weight, dtype)).unwrap();
    let b = Var::from_tensor(&random(&mut rng, &[weight[0]], dtype)).unwrap();
    let (ho, wo) = (
        (input[2] - weight[2]) / stride + 1,
        (input[3] - weight[3]) / stride + 1,
    );
    let probe = random(&mut rng, &[input[0], weight[0], ho, wo], dtype);
    let ours = run(
        |x, w, b| {
            let conv = if relu { conv2d_relu } else { conv2d };
            conv(x, w, Some(b), stride).unwrap()
        },
        &x,
        &w,
        &b,
        &probe,
    );
    let reference = run(
        |x, w, b| {
            // candle's backward mis-sizes d input when the kernel does not reach the last
            // rows/columns; cropping them first gives the same output and zero gradient there.
            let x = x.narrow(2, 0, (ho - 1) * stride + weight[2]).unwrap();
            let x = x.narrow(3, 0, (wo - 1) * stride + weight[3]).unwrap();
            let out = x.conv2d(w, 0, stride, 1, 1).unwrap();
            let out = out
                .broadcast_add(&b.reshape((1, weight[0], 1, 1)).unwrap())
                .unwrap();
            if relu {
                out.relu().unwrap()
            } else {
                out
            }
        },
        &x,
        &w,
        &b,
        &probe,
    );
    for (name, (o, r)) in ["output", "d input", "d weight", "d bias"]
        .iter()
        .zip(ours.iter().zip(&reference))
    {
        let err = rel_err(o, r);
        assert!(
            err < tol,
            "{name} off by {err:e} (input {input:?}, weight {weight:?}, stride {stride}, {dtype:?})"
        );
    }
}

const NATURE: [([usize; 4], [usize; 4], usize); 3] = [
    ([5, 4, 84, 84], [32, 4, 8, 8], 4),
    ([5, 32, 20, 20], [64, 32, 4, 4], 2),
    ([3, 64, 9, 9], [64, 64, 3, 3], 1),
];

#[test]
fn nature_cnn_layers_match_candle_f32() {
    for (i, (input, weight, stride)) in NATURE.into_iter().enumerate() {
        check(input, weight, stride, DType::F32, i as u64);
    }
}

#[test]
fn nature_cnn_layers_match_candle_f64() {
    for (i, (input, weight, stride)) in NATURE.into_iter().enumerate() {
        check(input, weight, stride, DType::F64, 10 + i as u64);
    }
}

#[test]
fn single_frame_first_layer_matches_candle_at_several_batches() {
    // Recurrent training feeds [B, 1, 84, 84]; batches that fill chunks exactly, leave a
    // remainder, or are smaller than one chunk, all gradients, with and without the ReLU.
    for (i, batch) in [1, 3, 13, 24].into_iter().enumerate() {
        let seed = 50 + i as u64;
        check_maybe_relu(
            [batch, 1, 84, 84],
            [32, 1, 8, 8],
            4,
            DType::F32,
            seed,
            i % 2 == 0,
        );
        check_maybe_relu(
            [batch, 1, 84, 84],
            [32, 1, 8, 8],
            4,
            DType::F64,
            seed,
            i % 2 == 1,
        );
    }
}

#[test]
fn nature_cnn_layers_match_candle_at_several_batches() {
    // Different batches through the same threads: the reused scratch of a larger geometry
    // must not leak into a smaller one.
    for batch in [9, 1, 4] {
        for (i, (mut input, weight, stride)) in NATURE.into_iter().enumerate() {
            input[0] = batch;
            check_maybe_relu(input, weight, stride, DType::F32, 60 + i as u64, true);
        }
    }
}

#[test]
fn fused_relu_matches_candle_conv_then_relu() {
    for (i, (input, weight, stride)) in NATURE.into_iter().enumerate() {
        check_maybe_relu(input, weight, stride, DType::F64, 20 + i as u64, true);
    }
    check_maybe_relu([3, 2, 11, 9], [5, 2, 3, 4], 2, DType::F32, 30, true);
    // The layer's fused form equals the plain layer followed by candle's ReLU.
    let vars = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vars, DType::F64, &Device::Cpu);
    let plain = Conv2d::load(3, 4, 3, 1, vb).unwrap();
    let fused = plain.clone().with_relu();
    let x = random(&mut StdRng::seed_from_u64(31), &[2, 3, 6, 6], DType::F64);
    let expected = plain.forward(&x).unwrap().relu().unwrap();
    assert!(rel_err(&fused.forward(&x).unwrap(), &expected) < 1e-12);
}

#[test]
fn u8_frames_with_input_scale_match_candle_on_scaled_floats() {
    let mut rng = StdRng::seed_from_u64(40);
    for dtype in [DType::F32, DType::F64] {
        let pixels: Vec<u8> = (0..3 * 4 * 84 * 84).map(|_| rng.gen()).collect();
        let frames = Tensor::from_vec(pixels, (3, 4, 84, 84), &Device::Cpu).unwrap();
        let w = Var::from_tensor(&random(&mut rng, &[32, 4, 8, 8], dtype)).unwrap();
        let b = Var::from_tensor(&random(&mut rng, &[32], dtype)).unwrap();
        let probe = random(&mut rng, &[3, 32, 20, 20], dtype);
        let opts = ConvOptions {
            stride: 4,
            relu: true,
            input_scale: 1.0 / 255.0,
        };
        let ours = conv2d_with(&frames, &w, Some(&b), opts).unwrap();
        let x = (frames.to_dtype(dtype).unwrap() / 255.0).unwrap();
        let reference = x.conv2d(&w, 0, 4, 1, 1).unwrap();
        let reference = reference.broadcast_add(&b.reshape((1, 32, 1, 1)).unwrap());
        let reference = reference.unwrap().relu().unwrap();
        let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
        assert!(rel_err(&ours, &reference) < tol);
        let g1 = (&ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (&reference * &probe).unwrap().sum_all().unwrap();
        let g2 = g2.backward().unwrap();
        for v in [&w, &b] {
            let err = rel_err(g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(err < tol, "{dtype:?} gradient off by {err:e}");
        }
    }
}

#[test]
fn input_scale_scales_the_input_gradient_too() {
    let mut rng = StdRng::seed_from_u64(41);
    let x = Var::from_tensor(&random(&mut rng, &[2, 3, 9, 9], DType::F64)).unwrap();
    let w = random(&mut rng, &[5, 3, 3, 3], DType::F64);
    let opts = ConvOptions {
        stride: 2,
        relu: false,
        input_scale: 0.25,
    };
    let ours = conv2d_with(&x, &w, None, opts).unwrap();
    let reference = (x.as_tensor() * 0.25)
        .unwrap()
        .conv2d(&w, 0, 2, 1, 1)
        .unwrap();
    assert!(rel_err(&ours, &reference) < 1e-12);
    let g1 = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = reference
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let err = rel_err(g1.get(&x).unwrap(), g2.get(&x).unwrap());
    assert!(err < 1e-10, "d input off by {err:e}");
}

#[test]
fn random_shapes_match_candle() {
    let mut rng = StdRng::seed_from_u64(7);
    for case in 0..12 {
        let (kh, kw) = (rng.gen_range(1..=5), rng.gen_range(1..=5));
        let input = [
            rng.gen_range(1..=9),
            rng.gen_range(1..=5),
            kh + rng.gen_range(0..=9),
            kw + rng.gen_range(0..=9),
        ];
        let weight = [rng.gen_range(1..=7), input[1], kh, kw];
        let stride = rng.gen_range(1..=4);
        let dtype = if case % 2 == 0 {
            DType::F64
        } else {
            DType::F32
        };
        check(input, weight, stride, dtype, 100 + case);
    }
}

#[test]
fn untracked_input_gets_no_gradient_but_weights_do() {
    let mut rng = StdRng::seed_from_u64(3);
    let x = random(&mut rng, &[2, 3, 10, 10], DType::F64);
    let w = Var::from_tensor(&random(&mut rng, &[4, 3, 3, 3], DType::F64)).unwrap();
    let ours = conv2d(&x, &w, None, 2).unwrap();
    let grads = ours.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    let reference = x.conv2d(&w, 0, 2, 1, 1).unwrap();
    let expected = reference.sum_all().unwrap().backward().unwrap();
    let err = rel_err(grads.get(&w).unwrap(), expected.get(&w).unwrap());
    assert!(err < 1e-10, "d weight off by {err:e}");
}

#[test]
fn non_contiguous_input_matches_candle() {
    let mut rng = StdRng::seed_from_u64(5);
    let x = random(&mut rng, &[2, 3, 9, 11], DType::F32)
        .transpose(2, 3)
        .unwrap();
    let w = random(&mut rng, &[5, 3, 3, 2], DType::F32);
    let ours = conv2d(&x, &w, None, 1).unwrap();
    let reference = x.conv2d(&w, 0, 1, 1, 1).unwrap();
    assert!(rel_err(&ours, &reference) < 1e-5);
}

#[test]
fn layer_is_a_drop_in_for_candle_nn() {
    let vars = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let ours = Conv2d::load(4, 8, 3, 2, vb.pp("c")).unwrap();
    let cfg = candle_nn::Conv2dConfig {
        stride: 2,
        ..Default::default()
    };
    // Same names under the same prefix: candle_nn reads the variables ours created.
    let theirs = candle_nn::conv2d(4, 8, 3, cfg, vb.pp("c")).unwrap();
    assert_eq!(vars.all_vars().len(), 2);
    let x = random(&mut StdRng::seed_from_u64(9), &[2, 4, 12, 12], DType::F32);
    let err = rel_err(&ours.forward(&x).unwrap(), &theirs.forward(&x).unwrap());
    assert!(err < 1e-5, "layer output off by {err:e}");
}

#[test]
fn other_dtypes_fall_back_to_candle() {
    let mut rng = StdRng::seed_from_u64(11);
    let x = random(&mut rng, &[2, 3, 7, 7], DType::F16);
    let w = random(&mut rng, &[4, 3, 3, 3], DType::F16);
    let b = random(&mut rng, &[4], DType::F16);
    let ours = conv2d_relu(&x, &w, Some(&b), 2).unwrap();
    let reference = x.conv2d(&w, 0, 2, 1, 1).unwrap();
    let reference = reference.broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap());
    let reference = reference.unwrap().relu().unwrap();
    assert_eq!(ours.dtype(), DType::F16);
    let to_f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    assert!(rel_err(&to_f64(&ours), &to_f64(&reference)) < 1e-6);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let t = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
    let x = t(&[2, 3, 8, 8]);
    assert!(matches!(
        conv2d(&x, &t(&[4, 2, 3, 3]), None, 1),
        Err(Error::ChannelMismatch {
            input: 3,
            weight: 2
        })
    ));
    assert!(matches!(
        conv2d(&x, &t(&[4, 3, 9, 3]), None, 1),
        Err(Error::KernelLargerThanInput { .. })
    ));
    assert!(matches!(
        conv2d(&x, &t(&[4, 3, 3, 3]), None, 0),
        Err(Error::Zero { what: "stride" })
    ));
    assert!(matches!(
        conv2d(&t(&[3, 8, 8]), &t(&[4, 3, 3, 3]), None, 1),
        Err(Error::Rank { what: "input", .. })
    ));
    assert!(matches!(
        conv2d(&x, &t(&[4, 3, 3, 3]), Some(&t(&[5])), 1),
        Err(Error::BiasShape { c_out: 4, .. })
    ));
    let x64 = x.to_dtype(DType::F64).unwrap();
    assert!(matches!(
        conv2d(&x64, &t(&[4, 3, 3, 3]), None, 1),
        Err(Error::Mismatch(_))
    ));
    assert!(matches!(
        Conv2d::new(t(&[4, 3, 3, 3]), None, 0),
        Err(Error::Zero { what: "stride" })
    ));
}
