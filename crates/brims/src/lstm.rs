//! The LSTM baseline core.

use candle_core::{DType, Tensor, D};
use candle_nn::rnn::{LSTMState, RNN};
use candle_nn::{Init, VarBuilder};

use crate::config::LstmConfig;
use crate::core::{act_by_stepping, Core, CoreState, StepTrace};
use crate::error::BrimsError;
use crate::kernels::{cpu_slices, gemm_acc_nt, Real};
use crate::lstm_seq::{cell_forward, fused_supported, lstm_seq};
use crate::norm::normalise_rows;
use crate::shape::{check_width, expect_shape, fast_tanh, shape_err};

/// An LSTM cell with PyTorch's gate order `i, f, g, o` and parameter names
/// (`weight_ih [4H, E]`, `weight_hh [4H, H]`, `bias_ih [4H]`, `bias_hh [4H]`), so candle-nn and
/// PyTorch weights load unchanged.
///
/// `seq` transposes each weight once per call into `[in, out]` and projects all `T` inputs with
/// one matmul; on the CPU (f32/f64) the recurrence then runs as one fused candle op with a
/// hand-written BPTT backward, elsewhere as one small op per step ([`Lstm::seq_stepwise`]).
/// `act` on the CPU is one forward-only loop (two gemms reading the weights in place, then the
/// cell), as BRIMs acts; elsewhere it steps with candle ops.
#[derive(Clone, Debug)]
pub struct Lstm {
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
    input_size: usize,
    hidden_size: usize,
    /// `LstmConfig::input_norm`: every input row normalised before the projection.
    input_norm: bool,
}

impl Lstm {
    /// Builds the LSTM from `vb` with PyTorch's init, `U(±1/√H)` for every parameter, whatever
    /// `cfg.weight_init` says: the orthogonal draw is `ppo::ActorCritic::new`'s, which
    /// overwrites these values.
    pub fn new(cfg: &LstmConfig, input_size: usize, vb: VarBuilder) -> Result<Self, BrimsError> {
        cfg.validate(input_size)?;
        let h = cfg.hidden_size;
        let bound = 1.0 / (h as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let lstm = Self::from_tensors(
            vb.get_with_hints((4 * h, input_size), "weight_ih", init)?,
            vb.get_with_hints((4 * h, h), "weight_hh", init)?,
            vb.get_with_hints(4 * h, "bias_ih", init)?,
            vb.get_with_hints(4 * h, "bias_hh", init)?,
        )?;
        Ok(lstm.with_input_norm(cfg.input_norm))
    }

    /// The same LSTM with `input_norm` on or off (see [`LstmConfig::input_norm`]).
    pub fn with_input_norm(mut self, input_norm: bool) -> Self {
        self.input_norm = input_norm;
        self
    }

    /// `input [.., E]` as the input projection reads it: as it is, or each row normalised.
    fn projected_input(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        if self.input_norm {
            normalise_rows(input)
        } else {
            Ok(input.clone())
        }
    }

    /// Builds the LSTM from PyTorch-layout tensors: `weight_ih [4H, E]`, `weight_hh [4H, H]`,
    /// `bias_ih [4H]`, `bias_hh [4H]` (without `input_norm`).
    pub fn from_tensors(
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor,
        bias_hh: Tensor,
    ) -> Result<Self, BrimsError> {
        let (h4, input_size) = weight_ih.dims2()?;
        let hidden_size = h4 / 4;
        if h4 == 0 || h4 % 4 != 0 {
            return Err(shape_err("weight_ih", &[4, input_size], &weight_ih));
        }
        expect_shape("weight_hh", &weight_hh, &[h4, hidden_size])?;
        expect_shape("bias_ih", &bias_ih, &[h4])?;
        expect_shape("bias_hh", &bias_hh, &[h4])?;
        Ok(Lstm {
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            input_size,
            hidden_size,
            input_norm: false,
        })
    }

    /// Checks that `input` is `[.., E]` with this core's `E`.
    pub fn check_input(&self, input: &Tensor) -> Result<(), BrimsError> {
        check_width(input, self.input_size)
    }

    fn bias(&self) -> candle_core::Result<Tensor> {
        self.bias_ih.add(&self.bias_hh)
    }

    /// Gate pre-activations `[B, 4H]` to the new `(h, c)`.
    fn cell(&self, gates: &Tensor, c: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let n = self.hidden_size;
        let sig = candle_nn::ops::sigmoid(&gates.narrow(1, 0, 2 * n)?)?;
        let i = sig.narrow(1, 0, n)?;
        let f = sig.narrow(1, n, n)?;
        let g = fast_tanh(&gates.narrow(1, 2 * n, n)?)?;
        let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * n, n)?)?;
        let c = f.mul(c)?.add(&i.mul(&g)?)?;
        let h = o.mul(&fast_tanh(&c)?)?;
        Ok((h, c))
    }

    /// The acting step in plain loops: reset mask, both projections, the cell. `input [B, E]`,
    /// `state` `(h, c)` each `[B, H]`, `keep [B]` (0 = reset); returns `(h, c)`, detached.
    fn act_fused<T: Real>(
        &self,
        input: &Tensor,
        state: &CoreState,
        keep: &[f64],
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (batch, n, e) = (keep.len(), self.hidden_size, self.input_size);
        let input = input.detach().contiguous()?;
        let mut h_prev = state.parts[0].flatten_all()?.to_vec1::<T>()?;
        let mut c_prev = state.parts[1].flatten_all()?.to_vec1::<T>()?;
        let tensors = [
            &input,
            &self.weight_ih,
            &self.weight_hh,
            &self.bias_ih,
            &self.bias_hh,
        ];
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let slices = cpu_slices::<T, _>(&guards, "lstm")?;
        let [x, w_ih, w_hh, b_ih, b_hh] = slices[..] else {
            candle_core::bail!("lstm: five tensors expected");
        };
        for (b, &k) in keep.iter().enumerate() {
            let k = T::from_f64(k);
            h_prev[b * n..(b + 1) * n].iter_mut().for_each(|v| *v *= k);
            c_prev[b * n..(b + 1) * n].iter_mut().for_each(|v| *v *= k);
        }
        let bias: Vec<T> = b_ih.iter().zip(b_hh).map(|(&p, &q)| p + q).collect();
        let mut gates: Vec<T> = (0..batch).flat_map(|_| bias.iter().copied()).collect();
        // The input projection is most of the step's work: over the threads, as candle would.
        gemm_acc_nt(&mut gates, x, w_ih, (batch, e, 4 * n), true);
        gemm_acc_nt(&mut gates, &h_prev, w_hh, (batch, n, 4 * n), false);
        let mut h_next = vec![T::zero(); batch * n];
        let mut c_next = vec![T::zero(); batch * n];
        for b in 0..batch {
            let rows = b * n..(b + 1) * n;
            cell_forward(
                &gates[b * 4 * n..(b + 1) * 4 * n],
                &c_prev[rows.clone()],
                &mut h_next[rows.clone()],
                &mut c_next[rows],
            );
        }
        let dev = input.device();
        Ok((
            Tensor::from_vec(h_next, (batch, n), dev)?,
            Tensor::from_vec(c_next, (batch, n), dev)?,
        ))
    }

    fn check_state(&self, state: &CoreState) -> candle_core::Result<()> {
        if state.parts.len() != 2 {
            return Err(BrimsError::State {
                expected: "2 tensors [h, c]".into(),
                got: format!("{} tensors", state.parts.len()),
            }
            .into_candle());
        }
        Ok(())
    }

    /// The sequence pass as one candle op per step (the reference for the fused op, and the
    /// path on devices without it): same arguments and results as [`Core::seq`].
    pub fn seq_stepwise(
        &self,
        inputs: &Tensor,
        resets: &Tensor,
        start: &CoreState,
    ) -> candle_core::Result<(Tensor, CoreState)> {
        self.check_input(inputs).map_err(BrimsError::into_candle)?;
        self.check_state(start)?;
        let (x_proj, w_hh) = self.project(inputs)?;
        self.recur_stepwise(&x_proj, &w_hh, &resets.affine(-1.0, 1.0)?, start)
    }

    /// `inputs [T, B, E]` to `(x_proj [T, B, 4H], w_hh [H, 4H])`: all inputs (normalised with
    /// `input_norm`) projected by one matmul (bias included), and `weight_hh` transposed once.
    fn project(&self, inputs: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (steps, batch, e) = inputs.dims3()?;
        let w_ih = self.weight_ih.t()?.contiguous()?;
        let w_hh = self.weight_hh.t()?.contiguous()?;
        let x_proj = self
            .projected_input(&inputs.reshape((steps * batch, e))?)?
            .matmul(&w_ih)?
            .broadcast_add(&self.bias()?)?
            .reshape((steps, batch, 4 * self.hidden_size))?;
        Ok((x_proj, w_hh))
    }

    /// The recurrence over `x_proj [T, B, 4H]` step by step; `keep [T, B]` (0 = reset).
    fn recur_stepwise(
        &self,
        x_proj: &Tensor,
        w_hh: &Tensor,
        keep: &Tensor,
        start: &CoreState,
    ) -> candle_core::Result<(Tensor, CoreState)> {
        let steps = x_proj.dim(0)?;
        let keep = keep.unsqueeze(D::Minus1)?;
        let (mut h, mut c) = (start.parts[0].clone(), start.parts[1].clone());
        let mut outputs = Vec::with_capacity(steps);
        for t in 0..steps {
            let k = keep.get(t)?;
            h = h.broadcast_mul(&k)?;
            c = c.broadcast_mul(&k)?;
            let gates = x_proj.get(t)?.add(&h.matmul(w_hh)?)?;
            (h, c) = self.cell(&gates, &c)?;
            outputs.push(h.clone());
        }
        Ok((Tensor::stack(&outputs, 0)?, CoreState { parts: vec![h, c] }))
    }
}

impl Core for Lstm {
    fn input_size(&self) -> usize {
        self.input_size
    }

    fn output_size(&self) -> usize {
        self.hidden_size
    }

    fn forward_flops(&self) -> u64 {
        // Four gates, each reading the input and the previous h.
        let (i, h) = (self.input_size as u64, self.hidden_size as u64);
        2 * 4 * h * (i + h)
    }

    fn zero_state(&self, batch: usize) -> candle_core::Result<CoreState> {
        let z = Tensor::zeros(
            (batch, self.hidden_size),
            self.weight_ih.dtype(),
            self.weight_ih.device(),
        )?;
        Ok(CoreState {
            parts: vec![z.clone(), z],
        })
    }

    fn step(&self, input: &Tensor, state: &CoreState) -> candle_core::Result<(Tensor, CoreState)> {
        self.check_input(input).map_err(BrimsError::into_candle)?;
        self.check_state(state)?;
        // Forward-only use (acting): gemm reads the transposed weight views without a copy.
        let gates = self
            .projected_input(input)?
            .matmul(&self.weight_ih.t()?)?
            .add(&state.parts[0].matmul(&self.weight_hh.t()?)?)?
            .broadcast_add(&self.bias()?)?;
        let (h, c) = self.cell(&gates, &state.parts[1])?;
        Ok((h.clone(), CoreState { parts: vec![h, c] }))
    }

    fn act(
        &self,
        input: &Tensor,
        state: &CoreState,
        reset: &Tensor,
        traced: bool,
    ) -> candle_core::Result<(Tensor, CoreState, Option<StepTrace>)> {
        self.check_input(input).map_err(BrimsError::into_candle)?;
        self.check_state(state)?;
        let batch = input.dim(0)?;
        expect_shape("reset", reset, &[batch]).map_err(BrimsError::into_candle)?;
        for part in &state.parts {
            expect_shape("state", part, &[batch, self.hidden_size])
                .map_err(BrimsError::into_candle)?;
        }
        let dtype = input.dtype();
        let same_dtype = [&self.weight_ih, &state.parts[0], &state.parts[1]]
            .iter()
            .all(|t| t.dtype() == dtype);
        if !(same_dtype && fused_supported(input.device(), dtype)) {
            // `step` normalises the input itself.
            return act_by_stepping(self, input, state, reset, traced);
        }
        let input = &self.projected_input(input)?;
        let keep: Vec<f64> = reset
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .iter()
            .map(|r| 1.0 - r)
            .collect();
        let (h, c) = match dtype {
            DType::F64 => self.act_fused::<f64>(input, state, &keep)?,
            _ => self.act_fused::<f32>(input, state, &keep)?,
        };
        Ok((h.clone(), CoreState { parts: vec![h, c] }, None))
    }

    fn seq(
        &self,
        inputs: &Tensor,
        resets: &Tensor,
        start: &CoreState,
    ) -> candle_core::Result<(Tensor, CoreState)> {
        self.check_input(inputs).map_err(BrimsError::into_candle)?;
        self.check_state(start)?;
        let (x_proj, w_hh) = self.project(inputs)?;
        let steps = x_proj.dim(0)?;
        let keep = resets.affine(-1.0, 1.0)?;
        if steps > 0 && fused_supported(x_proj.device(), x_proj.dtype()) {
            let (hs, h, c) = lstm_seq(&x_proj, &w_hh, &start.parts[0], &start.parts[1], &keep)?;
            return Ok((hs, CoreState { parts: vec![h, c] }));
        }
        self.recur_stepwise(&x_proj, &w_hh, &keep, start)
    }
}

impl RNN for Lstm {
    type State = LSTMState;

    fn zero_state(&self, batch_dim: usize) -> candle_core::Result<LSTMState> {
        let s = Core::zero_state(self, batch_dim)?;
        Ok(LSTMState::new(s.parts[0].clone(), s.parts[1].clone()))
    }

    fn step(&self, input: &Tensor, state: &LSTMState) -> candle_core::Result<LSTMState> {
        let s = CoreState {
            parts: vec![state.h.clone(), state.c.clone()],
        };
        let (_, next) = Core::step(self, input, &s)?;
        Ok(LSTMState::new(next.parts[0].clone(), next.parts[1].clone()))
    }

    /// `[B, T, H]`, as candle's LSTM.
    fn states_to_tensor(&self, states: &[LSTMState]) -> candle_core::Result<Tensor> {
        let hs: Vec<Tensor> = states.iter().map(|s| s.h.clone()).collect();
        Tensor::stack(&hs, 1)
    }
}
