//! The interface every recurrent policy core implements.

use candle_core::{Result, Tensor};

use crate::lesion::Lesion;

/// The recurrent state of a core for a batch of environments.
///
/// A flat list of `[B, width_i]` tensors (LSTM: `[h, c]`; BRIMs: `[h_0, c_0, h_1, c_1, …]`,
/// layer by layer). A flat list lets the learner store, select (by env) and reset state without
/// knowing which core produced it.
#[derive(Clone, Debug)]
pub struct CoreState {
    /// The state tensors, each `[B, width_i]`.
    pub parts: Vec<Tensor>,
}

impl CoreState {
    /// Batch size `B`.
    pub fn batch_size(&self) -> Result<usize> {
        match self.parts.first() {
            Some(t) => t.dim(0),
            None => Ok(0),
        }
    }

    /// Zeroes the rows of the envs whose episode ended: `keep` is `[B]` (1.0 = keep, 0.0 = reset),
    /// in the state's dtype. One broadcast multiply per part, no per-env rebuilding.
    pub fn masked(&self, keep: &Tensor) -> Result<CoreState> {
        let keep = keep.unsqueeze(1)?;
        let parts = self
            .parts
            .iter()
            .map(|p| p.broadcast_mul(&keep))
            .collect::<Result<Vec<_>>>()?;
        Ok(CoreState { parts })
    }

    /// The rows of the given envs (`envs` is a `[b]` u32 index tensor).
    pub fn index_select(&self, envs: &Tensor) -> Result<CoreState> {
        let parts = self
            .parts
            .iter()
            .map(|p| p.index_select(envs, 0))
            .collect::<Result<Vec<_>>>()?;
        Ok(CoreState { parts })
    }

    /// The state with gradients cut (what acting stores).
    pub fn detach(&self) -> CoreState {
        CoreState {
            parts: self.parts.iter().map(|p| p.detach()).collect(),
        }
    }

    /// Concatenates states along the batch dimension.
    pub fn cat(states: &[CoreState]) -> Result<CoreState> {
        let Some(first) = states.first() else {
            return Ok(CoreState { parts: vec![] });
        };
        let parts = (0..first.parts.len())
            .map(|i| {
                let ts: Vec<&Tensor> = states.iter().map(|s| &s.parts[i]).collect();
                Tensor::cat(&ts, 0)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CoreState { parts })
    }
}

/// Per-step telemetry of a BRIMs core: one entry per layer, bottom first.
#[derive(Clone, Debug, PartialEq)]
pub struct StepTrace {
    /// The layers, bottom (0) to top.
    pub layers: Vec<LayerTrace>,
}

/// Which modules of one layer were active at one step, and how much they attended to null.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTrace {
    /// `[B * M]` row-major (env-major): `true` = the module updated its state.
    pub active: Vec<bool>,
    /// `[B * M]` row-major: head-averaged input attention on the null slot (high = ignores input).
    pub null_attention: Vec<f32>,
    /// `[B * M]` row-major: entropy (nats) of each module's input attention over `[null,
    /// slots…]`, averaged over heads. At its maximum, `ln(slots + 1)`, attention has not moved
    /// off uniform.
    pub attention_entropy: Vec<f32>,
    /// `[B * M]` row-major: RMS of each module's attention read (its LSTM's input).
    pub read_rms: Vec<f32>,
    /// `[B * M * S]` row-major: each module's head-averaged attention on each real input slot
    /// (`S` = 1 or 2: bottom-up, then top-down when the layer has one).
    pub slot_attention: Vec<f32>,
    /// Module count `M` of the layer.
    pub num_modules: usize,
}

/// [`Core::act`] by the core's own `step` / `step_traced`: reset mask, step, detach.
pub(crate) fn act_by_stepping<C: Core + ?Sized>(
    core: &C,
    input: &Tensor,
    state: &CoreState,
    reset: &Tensor,
    traced: bool,
) -> Result<(Tensor, CoreState, Option<StepTrace>)> {
    let keep = reset.affine(-1.0, 1.0)?;
    let masked = state.masked(&keep)?;
    let (out, next, trace) = if traced {
        core.step_traced(input, &masked)?
    } else {
        let (out, next) = core.step(input, &masked)?;
        (out, next, None)
    };
    Ok((out.detach(), next.detach(), trace))
}

/// A recurrent policy core: `[B, E]` features in, `[B, H]` features out, state carried.
///
/// Episode resets are applied by masking the state before a step (CleanRL's `(1 − done)`),
/// inside the core, so a batch never has to be rebuilt per env.
///
/// # Which method is for what
///
/// One cell, three uses: the pure cell, acting, and replay. Every method computes the same
/// step; `act` and `seq` may take faster paths, and tests hold them to `step_with_reset`.
///
/// | method | what it is | used by | resets | gradient |
/// |---|---|---|---|---|
/// | [`step`](Core::step) | the pure cell: one step from the state given | the other methods' definitions, tests | none: mask the state first | yes |
/// | [`step_traced`](Core::step_traced) | `step` plus which modules were active, per layer (BRIMs) | the fixture check, `act` when traced | none | yes |
/// | [`step_with_reset`](Core::step_with_reset) | `step` after zeroing the rows whose `reset` is 1 | the reference `act` and `seq` must equal | mask | yes |
/// | [`act`](Core::act) | **acting**: `step_with_reset`'s values, detached, with the activity trace on request; forward-only fused loops for BRIMs on the CPU | `ppo::ActorCritic::act` (the sampler, `brims eval`) | mask | no (detached) |
/// | [`seq`](Core::seq) | **replay**: `T` steps of `step_with_reset` in one pass (fused loops for both cores on the CPU) | `ppo::ActorCritic::evaluate_sequence` (the learner) | a mask per step | yes |
/// | `candle_nn::rnn::RNN` | candle's trait (`zero_state`, `step` returning the state, `seq`, `states_to_tensor`) | code written for candle's LSTM (drop-in); no resets | none | yes |
pub trait Core: Send + Sync {
    /// Input width `E`.
    fn input_size(&self) -> usize;
    /// Output width `H` (what the policy and value heads read).
    fn output_size(&self) -> usize;
    /// FLOPs of one forward step for one env (2 per multiply-add), counted from the core's
    /// sizes: its matrix products and attention contractions, every module counted (the
    /// computation is dense; inactive modules are masked, not skipped). Elementwise work (gate
    /// nonlinearities, softmax, norms) is left out, as FLOP counts of this kind do.
    fn forward_flops(&self) -> u64;
    /// The all-zero state for `batch` envs.
    fn zero_state(&self, batch: usize) -> Result<CoreState>;
    /// One step: `input` is `[B, E]`; returns the output `[B, H]` and the next state.
    fn step(&self, input: &Tensor, state: &CoreState) -> Result<(Tensor, CoreState)>;

    /// Like [`Core::step`], plus the per-layer module activity when the core has any (BRIMs).
    /// The default (LSTM) returns `None`; plain `step` never pays for a trace.
    fn step_traced(
        &self,
        input: &Tensor,
        state: &CoreState,
    ) -> Result<(Tensor, CoreState, Option<StepTrace>)> {
        let (out, next) = self.step(input, state)?;
        Ok((out, next, None))
    }

    /// [`Core::step_traced`] under a test-time [`Lesion`] (top-down input replaced, modules
    /// masked or forced on), for `brims lesion`. A core without modules (the LSTM) takes only
    /// the empty lesion; BRIMs runs its reference step with the intervention.
    fn step_lesioned(
        &self,
        input: &Tensor,
        state: &CoreState,
        lesion: &Lesion,
    ) -> Result<(Tensor, CoreState, Option<StepTrace>)> {
        if !lesion.is_empty() {
            candle_core::bail!("this core has no modules or top-down input to lesion");
        }
        self.step_traced(input, state)
    }

    /// Switches training-only behaviour (dropout) on or off. Default: no such behaviour.
    fn set_training(&mut self, _training: bool) {}

    /// One step where the envs with `reset[b] = 1` start from the zero state first.
    /// `reset` is `[B]` in the input's dtype (1.0 = episode started, 0.0 = continue).
    fn step_with_reset(
        &self,
        input: &Tensor,
        state: &CoreState,
        reset: &Tensor,
    ) -> Result<(Tensor, CoreState)> {
        let keep = reset.affine(-1.0, 1.0)?;
        self.step(input, &state.masked(&keep)?)
    }

    /// One acting step: the values of [`Core::step_with_reset`] (plus the per-layer module
    /// activity when `traced` and the core has any), every output detached. Acting never
    /// backpropagates, so a core may take a forward-only path here. `reset` is `[B]`.
    fn act(
        &self,
        input: &Tensor,
        state: &CoreState,
        reset: &Tensor,
        traced: bool,
    ) -> Result<(Tensor, CoreState, Option<StepTrace>)> {
        act_by_stepping(self, input, state, reset, traced)
    }

    /// The sequence pass recurrent PPO replays: `inputs` is `[T, B, E]`, `resets` is `[T, B]`
    /// (1.0 where an episode starts at that step, so the state is zeroed before it), from
    /// `start`. Returns the outputs `[T, B, H]` and the final state.
    fn seq(
        &self,
        inputs: &Tensor,
        resets: &Tensor,
        start: &CoreState,
    ) -> Result<(Tensor, CoreState)> {
        let steps = inputs.dim(0)?;
        let mut state = start.clone();
        let mut outputs = Vec::with_capacity(steps);
        for t in 0..steps {
            let (out, next) = self.step_with_reset(&inputs.get(t)?, &state, &resets.get(t)?)?;
            outputs.push(out);
            state = next;
        }
        Ok((Tensor::stack(&outputs, 0)?, state))
    }
}
