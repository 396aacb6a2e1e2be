//! Behaviour shared by both cores: shapes, resets, typed errors, gradients.

use brims::{build_core, BrimsError, Core, CoreConfig, CoreState, Lstm, LstmConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

fn lstm_core(e: usize, h: usize, dtype: DType) -> (VarMap, Box<dyn Core>) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
    let core = build_core(&CoreConfig::Lstm(LstmConfig::new(h)), e, vb).unwrap();
    (vm, core)
}

fn randn(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

#[test]
fn lstm_shapes_step_and_seq() {
    let (_vm, core) = lstm_core(5, 7, DType::F32);
    let s = core.zero_state(3).unwrap();
    assert_eq!(s.parts.len(), 2);
    let (y, s1) = core.step(&randn(&[3, 5], DType::F32), &s).unwrap();
    assert_eq!(y.dims(), &[3, 7]);
    assert_eq!(s1.parts[1].dims(), &[3, 7]);
    let resets = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
    let (ys, last) = core
        .seq(&randn(&[4, 3, 5], DType::F32), &resets, &s)
        .unwrap();
    assert_eq!(ys.dims(), &[4, 3, 7]);
    assert_eq!(last.parts[0].dims(), &[3, 7]);
}

/// The fused `seq` equals stepping with `step_with_reset` (the trait's reference semantics).
#[test]
fn lstm_seq_matches_stepping_with_resets() {
    let (_vm, core) = lstm_core(4, 6, DType::F64);
    let xs = randn(&[5, 3, 4], DType::F64);
    let resets = Tensor::new(
        &[
            [0f64, 0., 0.],
            [1., 0., 0.],
            [0., 0., 1.],
            [0., 0., 0.],
            [1., 1., 0.],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let start = CoreState {
        parts: vec![randn(&[3, 6], DType::F64), randn(&[3, 6], DType::F64)],
    };
    let (ys, last) = core.seq(&xs, &resets, &start).unwrap();
    let mut s = start.clone();
    for t in 0..5 {
        let (y, next) = core
            .step_with_reset(&xs.get(t).unwrap(), &s, &resets.get(t).unwrap())
            .unwrap();
        let d = (y - ys.get(t).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
        s = next;
    }
    let d = (&s.parts[1] - &last.parts[1])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
}

#[test]
fn lstm_matches_candle_nn_lstm() {
    use candle_nn::rnn::RNN;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let theirs = candle_nn::lstm(4, 6, Default::default(), vb).unwrap();
    // candle-nn names its LSTM like torch's nn.LSTM (`_l0` suffix); same tensors, same layout.
    let vars = vm.data().lock().unwrap();
    let get = |n: &str| vars[&format!("{n}_l0")].as_tensor().clone();
    let ours = Lstm::from_tensors(
        get("weight_ih"),
        get("weight_hh"),
        get("bias_ih"),
        get("bias_hh"),
    )
    .unwrap();
    let x = randn(&[2, 3, 4], DType::F64);
    let a = ours
        .states_to_tensor(&RNN::seq(&ours, &x).unwrap())
        .unwrap();
    let b = theirs
        .states_to_tensor(&RNN::seq(&theirs, &x).unwrap())
        .unwrap();
    assert_eq!(a.dims(), &[2, 3, 6]);
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
}

#[test]
fn lstm_reset_zeroes_exactly_the_chosen_envs() {
    let (_vm, core) = lstm_core(3, 4, DType::F32);
    let state = CoreState {
        parts: vec![randn(&[3, 4], DType::F32), randn(&[3, 4], DType::F32)],
    };
    let x = randn(&[3, 3], DType::F32);
    let reset = Tensor::new(&[0f32, 1., 0.], &Device::Cpu).unwrap();
    let (y, _) = core.step_with_reset(&x, &state, &reset).unwrap();
    let (y_zero, _) = core.step(&x, &core.zero_state(3).unwrap()).unwrap();
    let (y_keep, _) = core.step(&x, &state).unwrap();
    let rows = |t: &Tensor| t.to_vec2::<f32>().unwrap();
    assert_eq!(rows(&y)[1], rows(&y_zero)[1]);
    assert_eq!(rows(&y)[0], rows(&y_keep)[0]);
    assert_eq!(rows(&y)[2], rows(&y_keep)[2]);
    assert_ne!(rows(&y)[0], rows(&y_zero)[0]);
}

#[test]
fn lstm_wrong_input_width_is_a_typed_error() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let core = Lstm::new(&LstmConfig::new(4), 3, vb).unwrap();
    let x = randn(&[2, 5], DType::F32);
    assert!(matches!(
        core.check_input(&x),
        Err(BrimsError::InputWidth { expected: 3, .. })
    ));
    let err = core.step(&x, &core.zero_state(2).unwrap()).unwrap_err();
    assert!(err.to_string().contains("expects 3 features"), "{err}");
}

/// The LSTM's FLOP count is its two weight matrices applied once per env and step.
#[test]
fn lstm_forward_flops_apply_both_weight_matrices_once() {
    let (vm, core) = lstm_core(7, 5, DType::F32);
    let weights: usize = vm
        .all_vars()
        .iter()
        .filter(|v| v.dims().len() == 2)
        .map(|v| v.elem_count())
        .sum();
    assert_eq!(weights, 4 * 5 * (7 + 5));
    assert_eq!(core.forward_flops(), 2 * weights as u64);
}
