//! BRIMs behaviour: shapes, seq = stepping, inactive modules, resets, gradients, typed errors.

use brims::{
    build_core, AttentionInit, Brims, BrimsConfig, BrimsError, BrimsLayerConfig,
    CommAttentionConfig, Core, CoreConfig, CoreOutput, CoreState, InputAttentionConfig,
    LayerLesion, Lesion, Lstm, LstmConfig, LstmInit, TieBreak, TopDown,
};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

const E: usize = 3;

fn layer(hidden_size: usize, modules: usize, active: usize) -> BrimsLayerConfig {
    BrimsLayerConfig {
        hidden_size,
        modules,
        active,
    }
}

/// Two small layers of different widths (E ≠ N_0 ≠ N_1), non-default attention sizes, and an
/// attention init large enough that selections are far from ties.
fn tiny_cfg() -> BrimsConfig {
    let mut cfg = BrimsConfig::with_layers(vec![layer(8, 4, 2), layer(6, 3, 2)]);
    cfg.input_attention = InputAttentionConfig {
        heads: 2,
        key_size: 4,
        value_size: Some(3),
    };
    cfg.comm_attention = CommAttentionConfig {
        heads: 2,
        key_size: 3,
        value_size: 2,
    };
    cfg.attention_init_std = 0.7;
    cfg
}

/// The Pong ablation's cells (configs/pong_brims_dense.toml, pong_brims_one_module.toml) in
/// small, with the Atari options: every module of both layers active, and one module per layer
/// (same widths, so one module holds the whole layer and communication reads only itself).
fn ablation_cells() -> Vec<BrimsConfig> {
    [
        vec![layer(8, 4, 4), layer(6, 3, 3)],
        vec![layer(8, 1, 1), layer(6, 1, 1)],
    ]
    .into_iter()
    .map(|layers| {
        let mut cfg = tiny_cfg();
        cfg.layers = layers;
        cfg.slot_norm = true;
        cfg.output = CoreOutput::AllLayers;
        cfg.attention_init = AttentionInit::FanIn;
        cfg.lstm_init = LstmInit::Module;
        cfg
    })
    .collect()
}

fn tiny(cfg: &BrimsConfig, dtype: DType) -> (VarMap, Brims) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
    let core = Brims::new(cfg, E, vb).unwrap();
    (vm, core)
}

fn randn(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn rand_state(core: &Brims, b: usize, dtype: DType) -> CoreState {
    let z = core.zero_state(b).unwrap();
    CoreState {
        parts: z.parts.iter().map(|p| randn(p.dims(), dtype)).collect(),
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
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

#[test]
fn shapes_step_seq_trace_and_rnn() {
    use candle_nn::rnn::RNN;
    let (_vm, core) = tiny(&tiny_cfg(), DType::F32);
    assert_eq!((core.input_size(), core.output_size()), (E, 6));
    let s = Core::zero_state(&core, 5).unwrap();
    let dims: Vec<&[usize]> = s.parts.iter().map(|p| p.dims()).collect();
    assert_eq!(dims, [&[5, 8][..], &[5, 8], &[5, 6], &[5, 6]]);
    let (y, next, trace) = core.step_traced(&randn(&[5, E], DType::F32), &s).unwrap();
    assert_eq!(y.dims(), &[5, 6]);
    assert_eq!(next.parts.len(), 4);
    let trace = trace.unwrap();
    assert_eq!(trace.layers.len(), 2);
    for (l, (m, k)) in [(4, 2), (3, 2)].into_iter().enumerate() {
        let lt = &trace.layers[l];
        assert_eq!(lt.num_modules, m);
        assert_eq!(lt.active.len(), 5 * m);
        for row in lt.active.chunks(m) {
            assert_eq!(row.iter().filter(|&&a| a).count(), k);
        }
        assert!(lt.null_attention.iter().all(|&p| (0.0..=1.0).contains(&p)));
    }
    let resets = Tensor::zeros((7, 5), DType::F32, &Device::Cpu).unwrap();
    let (ys, last) = Core::seq(&core, &randn(&[7, 5, E], DType::F32), &resets, &s).unwrap();
    assert_eq!(ys.dims(), &[7, 5, 6]);
    assert_eq!(last.parts[2].dims(), &[5, 6]);
    let states = RNN::seq(&core, &randn(&[5, 4, E], DType::F32)).unwrap();
    assert_eq!(core.states_to_tensor(&states).unwrap().dims(), &[5, 4, 6]);
}

#[test]
fn build_core_builds_both_kinds_with_same_output_width() {
    // An LSTM of 512 and BRIMs of two 512-wide layers (8 modules, 4 active; 4 modules, 2
    // active; 4 heads of 32 in the input attention): the Atari presets before they became the
    // (narrower) cores of the shipped configs.
    let mut brims_512 = BrimsConfig::with_layers(vec![layer(512, 8, 4), layer(512, 4, 2)]);
    brims_512.input_attention.key_size = 32;
    brims_512.input_attention.value_size = Some(32);
    for cfg in [
        CoreConfig::Lstm(LstmConfig::new(512)),
        CoreConfig::Brims(brims_512),
    ] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let core = build_core(&cfg, 32, vb).unwrap();
        assert_eq!(core.output_size(), 512);
        assert_eq!(cfg.output_size(), 512);
        let (y, _) = core
            .step(&randn(&[2, 32], DType::F32), &core.zero_state(2).unwrap())
            .unwrap();
        assert_eq!(y.dims(), &[2, 512]);
    }
}

/// The fused sequence pass equals stepping with `step_with_reset`, under both wirings.
#[test]
fn seq_matches_stepping_with_resets() {
    for top_down in [TopDown::Reference, TopDown::Paper] {
        let mut cfg = tiny_cfg();
        cfg.layers.push(layer(4, 2, 1));
        cfg.top_down = top_down;
        let (_vm, core) = tiny(&cfg, DType::F64);
        let xs = randn(&[6, 3, E], DType::F64);
        let resets = Tensor::new(
            &[
                [0f64, 0., 0.],
                [1., 0., 0.],
                [0., 0., 1.],
                [0., 0., 0.],
                [1., 1., 0.],
                [0., 0., 0.],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let start = rand_state(&core, 3, DType::F64);
        let (ys, last) = core.seq(&xs, &resets, &start).unwrap();
        let mut s = start.clone();
        for t in 0..6 {
            let (y, next) = core
                .step_with_reset(&xs.get(t).unwrap(), &s, &resets.get(t).unwrap())
                .unwrap();
            assert!(max_diff(&y, &ys.get(t).unwrap()) < 1e-12);
            s = next;
        }
        for (a, b) in s.parts.iter().zip(&last.parts) {
            assert!(max_diff(a, b) < 1e-12);
        }
    }
}

/// Inactive modules keep h and c bit for bit; active ones change.
#[test]
fn inactive_modules_copy_state_bit_exactly() {
    let (_vm, core) = tiny(&tiny_cfg(), DType::F32);
    let b = 4;
    let s = rand_state(&core, b, DType::F32);
    let (_, next, trace) = core.step_traced(&randn(&[b, E], DType::F32), &s).unwrap();
    let trace = trace.unwrap();
    for (l, lt) in trace.layers.iter().enumerate() {
        let m = lt.num_modules;
        for part in [2 * l, 2 * l + 1] {
            let before = s.parts[part].to_vec2::<f32>().unwrap();
            let after = next.parts[part].to_vec2::<f32>().unwrap();
            let d = before[0].len() / m;
            for env in 0..b {
                for j in 0..m {
                    let (x, y) = (
                        &before[env][j * d..(j + 1) * d],
                        &after[env][j * d..(j + 1) * d],
                    );
                    let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert_eq!(
                        same,
                        !lt.active[env * m + j],
                        "layer {l} env {env} module {j}"
                    );
                }
            }
        }
    }
}

/// Spec §4.6: a one-step loss gives the LSTM weights of inactive modules exactly zero gradient
/// (their candidates are computed, used as communication keys/values, but get no gradient).
#[test]
fn inactive_candidates_get_no_gradient() {
    let (vm, core) = tiny(&tiny_cfg(), DType::F64);
    let s = rand_state(&core, 1, DType::F64);
    let (y, next, trace) = core.step_traced(&randn(&[1, E], DType::F64), &s).unwrap();
    let trace = trace.unwrap();
    // Reach both layers: the top output plus every state part.
    let mut loss = y.sum_all().unwrap();
    for p in &next.parts {
        loss = (loss + p.sqr().unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    let vars = vm.data().lock().unwrap();
    for (l, lt) in trace.layers.iter().enumerate() {
        for name in ["lstm_ih", "lstm_hh", "lstm_b"] {
            let var = &vars[&format!("layer{l}.{name}")];
            let g = grads.get(var.as_tensor()).unwrap();
            for j in 0..lt.num_modules {
                let norm = g
                    .get(j)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                if lt.active[j] {
                    assert!(
                        norm > 0.0,
                        "layer {l} {name} module {j} active, no gradient"
                    );
                } else {
                    assert_eq!(norm, 0.0, "layer {l} {name} module {j} inactive");
                }
            }
        }
    }
}

#[test]
fn reset_zeroes_exactly_the_chosen_envs() {
    let (_vm, core) = tiny(&tiny_cfg(), DType::F64);
    let s = rand_state(&core, 3, DType::F64);
    let x = randn(&[3, E], DType::F64);
    let reset = Tensor::new(&[0f64, 1., 0.], &Device::Cpu).unwrap();
    let (y, _) = core.step_with_reset(&x, &s, &reset).unwrap();
    let (y_zero, _) = core.step(&x, &core.zero_state(3).unwrap()).unwrap();
    let (y_keep, _) = core.step(&x, &s).unwrap();
    let row = |t: &Tensor, i: usize| t.get(i).unwrap();
    assert!(max_diff(&row(&y, 1), &row(&y_zero, 1)) < 1e-12);
    assert!(max_diff(&row(&y, 0), &row(&y_keep, 0)) < 1e-12);
    assert!(max_diff(&row(&y, 2), &row(&y_keep, 2)) < 1e-12);
    assert!(max_diff(&row(&y, 0), &row(&y_zero, 0)) > 1e-6);
}

#[test]
fn bad_input_gives_typed_errors() {
    let (_vm, core) = tiny(&tiny_cfg(), DType::F32);
    let x = randn(&[2, E + 1], DType::F32);
    assert!(matches!(
        core.check_input(&x),
        Err(BrimsError::InputWidth { expected: E, .. })
    ));
    let err = core.step(&x, &core.zero_state(2).unwrap()).unwrap_err();
    assert!(err.to_string().contains("expects 3 features"), "{err}");
    let err = core
        .step(&randn(&[2, E], DType::F32), &CoreState { parts: vec![] })
        .unwrap_err();
    assert!(err.to_string().contains("state mismatch"), "{err}");
    // The acting path checks the same, and the reset flags' length.
    let zero = core.zero_state(2).unwrap();
    let no_reset = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let err = core.act(&x, &zero, &no_reset, false).unwrap_err();
    assert!(err.to_string().contains("expects 3 features"), "{err}");
    let three = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let err = core
        .act(&randn(&[2, E], DType::F32), &zero, &three, false)
        .unwrap_err();
    assert!(err.to_string().contains("reset"), "{err}");

    let build = |cfg: BrimsConfig| {
        let vm = VarMap::new();
        Brims::new(
            &cfg,
            E,
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )
        .err()
    };
    assert!(matches!(
        build(BrimsConfig::with_layers(vec![layer(9, 4, 2)])),
        Some(BrimsError::ModulesNotDividing { .. })
    ));
    assert!(matches!(
        build(BrimsConfig::with_layers(vec![layer(8, 4, 5)])),
        Some(BrimsError::ActiveOutOfRange { .. })
    ));
    assert!(matches!(
        build(BrimsConfig::with_layers(vec![])),
        Some(BrimsError::NoLayers)
    ));
}

/// Sum over steps of `<output_t, w_t>`: a loss that reaches every parameter.
fn seq_loss(
    core: &dyn Core,
    xs: &Tensor,
    resets: &Tensor,
    start: &CoreState,
    w: &Tensor,
) -> Tensor {
    let (ys, _) = core.seq(xs, resets, start).unwrap();
    ys.mul(w).unwrap().sum_all().unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

/// Central finite differences on a few entries of every parameter, in f64.
/// `masks` replays the same sequence and returns every selection made (empty for the LSTM).
fn check_gradients(
    vm: &VarMap,
    core: &dyn Core,
    t: usize,
    filter: &dyn Fn(&str) -> bool,
    masks: impl Fn(&Tensor, &Tensor, &CoreState) -> Vec<bool>,
) {
    let b = 2;
    let xs = randn(&[t, b, E], DType::F64);
    let resets = Tensor::new(&[[0f64, 0.], [0., 1.], [0., 0.], [1., 0.]], &Device::Cpu)
        .unwrap()
        .narrow(0, 0, t)
        .unwrap();
    let zero = core.zero_state(b).unwrap();
    let start = CoreState {
        parts: zero
            .parts
            .iter()
            .map(|p| randn(p.dims(), DType::F64))
            .collect(),
    };
    let w = randn(&[t, b, core.output_size()], DType::F64);
    let loss = seq_loss(core, &xs, &resets, &start, &w);
    let grads = loss.backward().unwrap();
    let base_masks = masks(&xs, &resets, &start);
    let vars: Vec<(String, Var)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| filter(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(!vars.is_empty());
    let eps = 1e-6;
    let mut checked = 0;
    for (name, var) in &vars {
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let orig = var.as_tensor().copy().unwrap();
        let values: Vec<f64> = orig.flatten_all().unwrap().to_vec1().unwrap();
        let n = values.len();
        for &i in &[0, n / 3, n / 2, n - 1] {
            let at = |delta: f64| {
                let mut v = values.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, orig.dims(), &Device::Cpu).unwrap())
                    .unwrap();
                let l = scalar(&seq_loss(core, &xs, &resets, &start, &w));
                (l, masks(&xs, &resets, &start))
            };
            let (lp, mp) = at(eps);
            let (lm, mm) = at(-eps);
            var.set(&orig).unwrap();
            if mp != base_masks || mm != base_masks {
                continue; // the perturbation flipped a selection: not differentiable here
            }
            let fd = (lp - lm) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() <= 1e-6 + 1e-5 * g[i].abs(),
                "{name}[{i}]: finite difference {fd}, backprop {}",
                g[i]
            );
            checked += 1;
        }
    }
    assert!(checked >= 3 * vars.len(), "only {checked} entries checked");
}

#[test]
fn lstm_gradients_match_finite_differences() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let core = Lstm::new(&LstmConfig::new(5), E, vb).unwrap();
    check_gradients(&vm, &core, 4, &|_| true, |_, _, _| Vec::new());
}

/// With `k < M` backprop is by design not the true derivative: the communication input is an
/// identity whose backward masks inactive modules (spec §4.5; checked exactly by
/// `inactive_candidates_get_no_gradient`). So finite differences run (a) over 4 steps with
/// every module active, every parameter, and (b) with a real selection over one step, on the
/// top layer's communication weights, whose gradient never passes through a candidate.
#[test]
fn brims_gradients_match_finite_differences() {
    let all: &dyn Fn(&str) -> bool = &|_| true;
    let top_comm: &dyn Fn(&str) -> bool = &|n| n.starts_with("layer1.comm");
    for (tie_break, active, steps, filter) in [
        (TieBreak::LowestIndex, [4, 3], 4, all),
        (TieBreak::TorchCpu, [2, 2], 1, top_comm),
    ] {
        let mut cfg = tiny_cfg();
        cfg.tie_break = tie_break;
        cfg.layers[0].active = active[0];
        cfg.layers[1].active = active[1];
        let (vm, core) = tiny(&cfg, DType::F64);
        // Every selection of the replay, to skip perturbations that flip one.
        let masks = |xs: &Tensor, resets: &Tensor, start: &CoreState| {
            let mut s = start.clone();
            let mut all = Vec::new();
            for t in 0..xs.dim(0).unwrap() {
                let keep = resets.get(t).unwrap().affine(-1.0, 1.0).unwrap();
                s = s.masked(&keep).unwrap();
                let (_, next, tr) = core.step_traced(&xs.get(t).unwrap(), &s).unwrap();
                for lt in tr.unwrap().layers {
                    all.extend(lt.active);
                }
                s = next;
            }
            all
        };
        check_gradients(&vm, &core, steps, filter, masks);
    }
}

/// Dropout acts only in training mode (and the reference sites default to 0 for RL).
#[test]
fn dropout_only_in_training() {
    let mut cfg = tiny_cfg();
    cfg.read_dropout = 0.5;
    cfg.comm_dropout = 0.5;
    let (_vm, mut core) = tiny(&cfg, DType::F64);
    let s = rand_state(&core, 4, DType::F64);
    let x = randn(&[4, E], DType::F64);
    let (a, _) = core.step(&x, &s).unwrap();
    let (b, _) = core.step(&x, &s).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
    Core::set_training(&mut core, true);
    let (c, _) = core.step(&x, &s).unwrap();
    let (d, _) = core.step(&x, &s).unwrap();
    assert!(max_diff(&c, &d) > 1e-6);
    Core::set_training(&mut core, false);
    let (e, _) = core.step(&x, &s).unwrap();
    assert_eq!(max_diff(&a, &e), 0.0);
}

/// The fused sequence pass (one autograd node) and the candle step loop agree on outputs and on
/// the gradient to every parameter, the input and the start state: one layer (RIMs, its own `h`
/// as top-down), three layers under every wiring, a layer with every module active, and the
/// Pong ablation's dense and one-module cells. Three
/// threads split the three envs' rows, whatever this machine's core count.
#[test]
fn fused_seq_gradients_match_the_step_loop_in_every_wiring() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap()
        .install(fused_seq_gradients_match_the_step_loop);
}

fn fused_seq_gradients_match_the_step_loop() {
    let mut rims = tiny_cfg();
    rims.layers.truncate(1);
    let mut all_active = tiny_cfg();
    all_active.layers[1] = layer(6, 3, 3);
    let mut configs = vec![rims, all_active];
    for top_down in [TopDown::Reference, TopDown::Paper, TopDown::None] {
        let mut cfg = tiny_cfg();
        cfg.layers.push(layer(4, 2, 1));
        cfg.top_down = top_down;
        configs.push(cfg);
    }
    // The Atari options: normalised slots, every layer to the heads, scaled init.
    for top_down in [TopDown::Reference, TopDown::Paper, TopDown::None] {
        let mut cfg = tiny_cfg();
        cfg.layers.push(layer(4, 2, 1));
        cfg.top_down = top_down;
        cfg.slot_norm = true;
        cfg.output = CoreOutput::AllLayers;
        cfg.attention_init = AttentionInit::FanIn;
        cfg.lstm_init = LstmInit::Module;
        configs.push(cfg);
    }
    let mut rims_norm = tiny_cfg();
    rims_norm.layers.truncate(1);
    rims_norm.slot_norm = true;
    configs.push(rims_norm);
    configs.extend(ablation_cells());
    let (steps, batch) = (5, 3);
    let mut resets = vec![0f64; steps * batch];
    resets[batch + 2] = 1.0;
    resets[3 * batch] = 1.0;
    let resets = Tensor::from_vec(resets, (steps, batch), &Device::Cpu).unwrap();
    for cfg in configs {
        let (vm, core) = tiny(&cfg, DType::F64);
        let xs = Var::from_tensor(&randn(&[steps, batch, E], DType::F64)).unwrap();
        let start_vars: Vec<Var> = rand_state(&core, batch, DType::F64)
            .parts
            .iter()
            .map(|p| Var::from_tensor(p).unwrap())
            .collect();
        let start = CoreState {
            parts: start_vars.iter().map(|v| v.as_tensor().clone()).collect(),
        };
        let w = randn(&[steps, batch, core.output_size()], DType::F64);
        let (ys, last) = core.seq(&xs, &resets, &start).unwrap();
        // The final state enters the loss too, so its gradient path is checked.
        let fused_loss =
            (ys.mul(&w).unwrap().sum_all().unwrap() + last.parts[0].sum_all().unwrap()).unwrap();
        let fused = fused_loss.backward().unwrap();

        let mut state = start.clone();
        let mut outs = Vec::new();
        for t in 0..steps {
            let (y, next) = core
                .step_with_reset(&xs.get(t).unwrap(), &state, &resets.get(t).unwrap())
                .unwrap();
            outs.push(y);
            state = next;
        }
        let loop_ys = Tensor::stack(&outs, 0).unwrap();
        assert!(max_diff(&ys, &loop_ys) < 1e-12, "{cfg:?}");
        let loop_loss = (loop_ys.mul(&w).unwrap().sum_all().unwrap()
            + state.parts[0].sum_all().unwrap())
        .unwrap();
        let looped = loop_loss.backward().unwrap();
        let mut vars = vm.all_vars();
        vars.push(xs.clone());
        vars.extend(start_vars.iter().cloned());
        for v in &vars {
            let (a, b) = (fused.get(v).unwrap(), looped.get(v).unwrap());
            assert!(max_diff(a, b) < 1e-10, "{:?} in {cfg:?}", v.dims());
        }
    }
}

/// `act` (the forward-only fused step acting uses) gives `step_with_reset`'s outputs, state and
/// trace, in f32 and f64, from random states and from the zero state, where every null score
/// ties, under both tie-break rules; for the small two-layer cell and the ablation's cells.
#[test]
fn act_matches_the_reference_step_and_trace() {
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
        let cells = std::iter::once(tiny_cfg()).chain(ablation_cells());
        for (base, tie_break) in
            cells.flat_map(|c| [TieBreak::LowestIndex, TieBreak::TorchCpu].map(|t| (c.clone(), t)))
        {
            let mut cfg = base;
            cfg.tie_break = tie_break;
            let (_vm, core) = tiny(&cfg, dtype);
            let x = randn(&[4, E], dtype);
            let reset = Tensor::new(&[0f64, 1., 0., 0.], &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            for state in [rand_state(&core, 4, dtype), core.zero_state(4).unwrap()] {
                let (y, next, trace) = core.act(&x, &state, &reset, true).unwrap();
                let keep = reset.affine(-1.0, 1.0).unwrap();
                let (want_y, want_next, want_trace) =
                    core.step_traced(&x, &state.masked(&keep).unwrap()).unwrap();
                assert!(max_diff(&y, &want_y) < tol);
                for (a, b) in next.parts.iter().zip(&want_next.parts) {
                    assert!(max_diff(a, b) < tol);
                }
                let (trace, want_trace) = (trace.unwrap(), want_trace.unwrap());
                for (lt, want) in trace.layers.iter().zip(&want_trace.layers) {
                    assert_eq!(lt.active, want.active, "{dtype:?} {tie_break:?}");
                    assert_eq!(lt.num_modules, want.num_modules);
                    for (p, q) in lt.null_attention.iter().zip(&want.null_attention) {
                        assert!((p - q).abs() < 1e-6);
                    }
                    let m = lt.num_modules * 4;
                    assert_eq!(lt.attention_entropy.len(), m);
                    assert_eq!(lt.read_rms.len(), m);
                    for (p, q) in lt.attention_entropy.iter().zip(&want.attention_entropy) {
                        assert!((p - q).abs() < 1e-5, "entropy {p} vs {q}");
                    }
                    assert_eq!(lt.slot_attention.len(), want.slot_attention.len());
                    assert!(lt.slot_attention.len() >= m);
                    for (p, q) in lt.slot_attention.iter().zip(&want.slot_attention) {
                        assert!((p - q).abs() < 1e-5, "slot attention {p} vs {q}");
                    }
                    for (p, q) in lt.read_rms.iter().zip(&want.read_rms) {
                        assert!(
                            (p - q).abs() < 1e-5 * (1.0 + q.abs()),
                            "read rms {p} vs {q}"
                        );
                    }
                }
                let (_, _, no_trace) = core.act(&x, &state, &reset, false).unwrap();
                assert!(no_trace.is_none());
            }
        }
    }
}

/// Test-time lesions (`brims lesion`): the empty lesion is the plain step; a masked module is
/// never active and keeps its state; `active = M` turns every module on; the top-down slot
/// reads what the lesion gives it (the layer above's own `h`: no change; zeros: a change);
/// the LSTM refuses any lesion but the empty one.
#[test]
fn lesions_change_only_what_they_name() {
    let cfg = tiny_cfg();
    let (_vm, core) = tiny(&cfg, DType::F64);
    let x = randn(&[4, E], DType::F64);
    let state = rand_state(&core, 4, DType::F64);
    let (y, next, trace) = core.step_traced(&x, &state).unwrap();
    let (ly, lnext, ltrace) = core.step_lesioned(&x, &state, &Lesion::default()).unwrap();
    assert_eq!(max_diff(&y, &ly), 0.0);
    for (a, b) in next.parts.iter().zip(&lnext.parts) {
        assert_eq!(max_diff(a, b), 0.0);
    }
    assert_eq!(trace, ltrace);

    // Module 1 of layer 0 masked: inactive in every env, its slice of h and c unchanged.
    let masked = Lesion {
        layers: vec![LayerLesion {
            masked_modules: vec![1],
            ..LayerLesion::default()
        }],
    };
    let (_, mnext, mtrace) = core.step_lesioned(&x, &state, &masked).unwrap();
    let l0 = &mtrace.unwrap().layers[0];
    let m = l0.num_modules;
    let d = 8 / m;
    for b in 0..4 {
        assert!(!l0.active[b * m + 1], "env {b}");
        assert_eq!(
            l0.active[b * m..(b + 1) * m].iter().filter(|&&a| a).count(),
            2
        );
    }
    for part in [0, 1] {
        let before = state.parts[part].narrow(1, d, d).unwrap();
        let after = mnext.parts[part].narrow(1, d, d).unwrap();
        assert_eq!(max_diff(&before, &after), 0.0);
    }

    // Every module on in both layers.
    let dense = Lesion {
        layers: vec![
            LayerLesion {
                active: Some(4),
                ..LayerLesion::default()
            },
            LayerLesion {
                active: Some(3),
                ..LayerLesion::default()
            },
        ],
    };
    let (_, _, dtrace) = core.step_lesioned(&x, &state, &dense).unwrap();
    assert!(dtrace
        .unwrap()
        .layers
        .iter()
        .all(|l| l.active.iter().all(|&a| a)));

    // Layer 0's top-down slot reads layer 1's h before the step: given that, nothing changes;
    // given zeros, layer 0's output does.
    let same = Lesion {
        layers: vec![LayerLesion {
            top_down: Some(state.parts[2].clone()),
            ..LayerLesion::default()
        }],
    };
    let (_, snext, _) = core.step_lesioned(&x, &state, &same).unwrap();
    assert_eq!(max_diff(&snext.parts[0], &next.parts[0]), 0.0);
    let zeroed = Lesion {
        layers: vec![LayerLesion {
            top_down: Some(state.parts[2].zeros_like().unwrap()),
            ..LayerLesion::default()
        }],
    };
    let (_, znext, _) = core.step_lesioned(&x, &state, &zeroed).unwrap();
    assert!(max_diff(&znext.parts[0], &next.parts[0]) > 1e-6);
    // A top-down of the wrong width is an error, not a panic.
    let bad = Lesion {
        layers: vec![LayerLesion {
            top_down: Some(Tensor::zeros((4, 5), DType::F64, &Device::Cpu).unwrap()),
            ..LayerLesion::default()
        }],
    };
    assert!(core.step_lesioned(&x, &state, &bad).is_err());

    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let lstm = Lstm::new(&LstmConfig::new(4), E, vb).unwrap();
    let lstm_state = lstm.zero_state(4).unwrap();
    assert!(lstm
        .step_lesioned(&x, &lstm_state, &Lesion::default())
        .is_ok());
    assert!(lstm.step_lesioned(&x, &lstm_state, &masked).is_err());
}
