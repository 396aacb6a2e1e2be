//! The fused LSTM sequence op against the step-by-step loop: values and gradients.

use brims::{Core, CoreState, Lstm, LstmConfig};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

const E: usize = 5;
const T: usize = 9;
const B: usize = 3;

fn randn(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Resets at several steps, including the first and two envs at once.
fn resets(dtype: DType) -> Tensor {
    let mut r = vec![0f32; T * B];
    for (t, b) in [(0, 1), (2, 0), (4, 2), (4, 1), (7, 0), (8, 2)] {
        r[t * B + b] = 1.0;
    }
    Tensor::from_vec(r, (T, B), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

struct Setup {
    vm: VarMap,
    lstm: Lstm,
    xs: Var,
    h0: Var,
    c0: Var,
    resets: Tensor,
}

fn setup(dtype: DType, hidden: usize) -> Setup {
    setup_with(dtype, LstmConfig::new(hidden))
}

fn setup_with(dtype: DType, cfg: LstmConfig) -> Setup {
    let hidden = cfg.hidden_size;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
    let lstm = Lstm::new(&cfg, E, vb).unwrap();
    Setup {
        vm,
        lstm,
        xs: Var::from_tensor(&randn(&[T, B, E], dtype)).unwrap(),
        h0: Var::from_tensor(&randn(&[B, hidden], dtype)).unwrap(),
        c0: Var::from_tensor(&randn(&[B, hidden], dtype)).unwrap(),
        resets: resets(dtype),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Runs `fused` or the step loop, and differentiates a loss that reads every output and the
/// final state (with distinct random weights, so no gradient cancels by symmetry).
/// Returns the outputs, final state, and gradients for inputs, h0, c0 and every parameter.
fn run(s: &Setup, fused: bool) -> (Tensor, CoreState, Vec<(String, Tensor)>) {
    let start = CoreState {
        parts: vec![s.h0.as_tensor().clone(), s.c0.as_tensor().clone()],
    };
    let (ys, last) = if fused {
        s.lstm.seq(s.xs.as_tensor(), &s.resets, &start).unwrap()
    } else {
        s.lstm
            .seq_stepwise(s.xs.as_tensor(), &s.resets, &start)
            .unwrap()
    };
    let dtype = ys.dtype();
    let loss = ys
        .mul(&weights(ys.dims(), 1, dtype))
        .unwrap()
        .sum_all()
        .unwrap()
        .add(
            &last.parts[0]
                .mul(&weights(last.parts[0].dims(), 2, dtype))
                .unwrap()
                .sum_all()
                .unwrap(),
        )
        .unwrap()
        .add(
            &last.parts[1]
                .mul(&weights(last.parts[0].dims(), 3, dtype))
                .unwrap()
                .sum_all()
                .unwrap(),
        )
        .unwrap();
    let grads = loss.backward().unwrap();
    let mut named = vec![
        ("inputs".to_string(), s.xs.as_tensor()),
        ("h0".to_string(), s.h0.as_tensor()),
        ("c0".to_string(), s.c0.as_tensor()),
    ];
    let data = s.vm.data().lock().unwrap();
    let mut params: Vec<(String, Tensor)> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(params.len(), 4);
    named.extend(params.iter().map(|(k, v)| (k.clone(), v)));
    let gs = named
        .into_iter()
        .map(|(k, v)| {
            let g = grads
                .get(v)
                .unwrap_or_else(|| panic!("no gradient for {k}"));
            (k, g.clone())
        })
        .collect();
    (ys, last, gs)
}

/// Deterministic, distinct loss weights in `[-1, 1)`.
fn weights(shape: &[usize], salt: usize, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|i| (((i * 7919 + salt * 104_729) % 2000) as f64) / 1000.0 - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn check(dtype: DType, hidden: usize, value_tol: f64, grad_tol: f64) {
    check_with(dtype, LstmConfig::new(hidden), value_tol, grad_tol)
}

fn check_with(dtype: DType, cfg: LstmConfig, value_tol: f64, grad_tol: f64) {
    let s = setup_with(dtype, cfg);
    let (ys_f, last_f, g_f) = run(&s, true);
    let (ys_s, last_s, g_s) = run(&s, false);
    assert!(max_abs_diff(&ys_f, &ys_s) < value_tol);
    for i in 0..2 {
        assert!(max_abs_diff(&last_f.parts[i], &last_s.parts[i]) < value_tol);
    }
    // The outputs are not trivially equal (e.g. all zero).
    assert!(
        ys_s.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            > 1.0
    );
    for ((name, gf), (_, gs)) in g_f.iter().zip(&g_s) {
        let d = max_abs_diff(gf, gs);
        assert!(d < grad_tol, "{name}: max |Δgrad| = {d:e}");
        let norm = gs
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(norm > 1e-3, "{name}: gradient is (near) zero");
    }
}

#[test]
fn fused_seq_matches_step_loop_f64() {
    check(DType::F64, 6, 1e-12, 1e-10);
}

/// A width past the kernel's column block (4H = 280 > 256) and not a multiple of its row group.
#[test]
fn fused_seq_matches_step_loop_wide_f64() {
    check(DType::F64, 70, 1e-12, 1e-10);
}

#[test]
fn fused_seq_matches_step_loop_f32() {
    check(DType::F32, 6, 1e-5, 1e-4);
}

/// A reset zeroes the start state's influence: with a reset at t = 0 for every env, the start
/// state gets no gradient (zeros) and the outputs do not depend on it.
#[test]
fn reset_at_first_step_cuts_the_start_state() {
    let s = setup(DType::F64, 6);
    let resets = Tensor::ones((T, B), DType::F64, &Device::Cpu).unwrap();
    let start = CoreState {
        parts: vec![s.h0.as_tensor().clone(), s.c0.as_tensor().clone()],
    };
    let (ys, _) = s.lstm.seq(s.xs.as_tensor(), &resets, &start).unwrap();
    let zero = s.lstm.zero_state(B).unwrap();
    let (ys0, _) = s.lstm.seq(s.xs.as_tensor(), &resets, &zero).unwrap();
    assert!(max_abs_diff(&ys, &ys0) < 1e-15);
    let grads = ys.sum_all().unwrap().backward().unwrap();
    let gh = grads.get(s.h0.as_tensor()).unwrap();
    assert_eq!(
        gh.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap(),
        0.0
    );
}

/// A start state of the wrong batch size is an error, not a panic.
#[test]
fn wrong_start_batch_is_an_error() {
    let s = setup(DType::F32, 6);
    let bad = s.lstm.zero_state(B + 1).unwrap();
    assert!(s.lstm.seq(s.xs.as_tensor(), &s.resets, &bad).is_err());
}

/// The batch's rows split over 1, 2 and 3 threads (3 envs: a part of one row each) give the
/// step loop's values and gradients.
#[test]
fn fused_seq_matches_step_loop_with_rows_over_threads() {
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| check(DType::F64, 6, 1e-12, 1e-10));
    }
}

/// `act` (the forward-only loop on the CPU) gives `step_with_reset`'s values, with the reset
/// rows starting from zero, in f64 and f32, and under a thread pool of any size.
#[test]
fn act_matches_step_with_reset() {
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        let s = setup(dtype, 7);
        let x = randn(&[B, E], dtype);
        let state = CoreState {
            parts: vec![randn(&[B, 7], dtype), randn(&[B, 7], dtype)],
        };
        let reset = Tensor::new(&[0f32, 1.0, 0.0], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let (y, next, trace) = s.lstm.act(&x, &state, &reset, true).unwrap();
        assert!(trace.is_none(), "the LSTM has no module activity to trace");
        let (y_ref, next_ref) = s.lstm.step_with_reset(&x, &state, &reset).unwrap();
        assert!(max_abs_diff(&y, &y_ref) < tol, "{dtype:?}: output");
        for i in 0..2 {
            assert!(
                max_abs_diff(&next.parts[i], &next_ref.parts[i]) < tol,
                "{dtype:?}: state part {i}"
            );
        }
        // The reset row equals a step from the zero state; the others do not.
        let zero = s.lstm.zero_state(B).unwrap();
        let (y_zero, _) = s.lstm.step(&x, &zero).unwrap();
        let row = |t: &Tensor, b: usize| t.get(b).unwrap();
        assert!(max_abs_diff(&row(&y, 1), &row(&y_zero, 1)) < tol);
        assert!(max_abs_diff(&row(&y, 0), &row(&y_zero, 0)) > 1e-3);
    }
}

/// `act` refuses a reset mask of the wrong length and a state of the wrong shape.
#[test]
fn act_checks_its_shapes() {
    let s = setup(DType::F32, 4);
    let x = randn(&[B, E], DType::F32);
    let state = s.lstm.zero_state(B).unwrap();
    let short_reset = Tensor::zeros(B - 1, DType::F32, &Device::Cpu).unwrap();
    assert!(s.lstm.act(&x, &state, &short_reset, false).is_err());
    let reset = Tensor::zeros(B, DType::F32, &Device::Cpu).unwrap();
    let small = s.lstm.zero_state(B - 1).unwrap();
    assert!(s.lstm.act(&x, &small, &reset, false).is_err());
}

fn normed(hidden: usize) -> LstmConfig {
    LstmConfig {
        input_norm: true,
        ..LstmConfig::new(hidden)
    }
}

/// With `input_norm`, the fused op and the step loop still agree, values and gradients
/// (the inputs' gradient now passes through the normalisation).
#[test]
fn fused_seq_matches_step_loop_with_input_norm() {
    check_with(DType::F64, normed(6), 1e-12, 1e-10);
    check_with(DType::F32, normed(6), 1e-5, 1e-4);
}

/// `input_norm` is LayerNorm without affine, computed here by hand: the normalised LSTM on
/// `x` gives the plain LSTM (same weights) on `(x − mean) / √(var + 1e-5)`; and so it cannot
/// see an input's offset or scale, which the plain LSTM does.
#[test]
fn input_norm_normalises_each_input_row() {
    let s = setup_with(DType::F64, normed(6));
    let plain = {
        let data = s.vm.data().lock().unwrap();
        let get = |name: &str| data.get(name).unwrap().as_tensor().clone();
        Lstm::from_tensors(
            get("weight_ih"),
            get("weight_hh"),
            get("bias_ih"),
            get("bias_hh"),
        )
        .unwrap()
    };
    let xs: Vec<f64> = s.xs.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let by_hand: Vec<f64> = xs
        .chunks(E)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / E as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / E as f64;
            row.iter()
                .map(move |v| (v - mean) / (var + 1e-5).sqrt())
                .collect::<Vec<_>>()
        })
        .collect();
    let by_hand = Tensor::from_vec(by_hand, (T, B, E), &Device::Cpu).unwrap();
    let start = CoreState {
        parts: vec![s.h0.as_tensor().clone(), s.c0.as_tensor().clone()],
    };
    let (ys, _) = s.lstm.seq(s.xs.as_tensor(), &s.resets, &start).unwrap();
    let (ys_hand, _) = plain.seq(&by_hand, &s.resets, &start).unwrap();
    assert!(max_abs_diff(&ys, &ys_hand) < 1e-12);

    let shifted = s.xs.as_tensor().affine(3.0, 2.0).unwrap();
    let (ys_shifted, _) = s.lstm.seq(&shifted, &s.resets, &start).unwrap();
    // Equal up to ε's share of the variance (1e-5 against a variance of ~1 and ~9).
    assert!(max_abs_diff(&ys, &ys_shifted) < 1e-4);
    let (plain_ys, _) = plain.seq(s.xs.as_tensor(), &s.resets, &start).unwrap();
    let (plain_shifted, _) = plain.seq(&shifted, &s.resets, &start).unwrap();
    assert!(max_abs_diff(&plain_ys, &plain_shifted) > 1e-2);
}

/// Acting normalises as replay does: `act` (fused loop) equals `step_with_reset`, and a
/// rollout of `act` steps equals `seq` over the same inputs and resets.
#[test]
fn act_and_seq_agree_with_input_norm() {
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        let s = setup_with(dtype, normed(7));
        let start = CoreState {
            parts: vec![s.h0.as_tensor().clone(), s.c0.as_tensor().clone()],
        };
        let (ys, _) = s.lstm.seq(s.xs.as_tensor(), &s.resets, &start).unwrap();
        let mut state = start.clone();
        for t in 0..T {
            let x = s.xs.as_tensor().get(t).unwrap();
            let reset = s.resets.get(t).unwrap();
            let (y, next, _) = s.lstm.act(&x, &state, &reset, false).unwrap();
            let (y_ref, _) = s.lstm.step_with_reset(&x, &state, &reset).unwrap();
            assert!(
                max_abs_diff(&y, &y_ref) < tol,
                "{dtype:?} t={t}: act vs step"
            );
            assert!(
                max_abs_diff(&y, &ys.get(t).unwrap()) < tol,
                "{dtype:?} t={t}: act vs seq"
            );
            state = next;
        }
    }
}
