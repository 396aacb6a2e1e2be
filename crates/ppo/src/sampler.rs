//! The sampler: acts in the envs with the policy and fills the [`Rollout`] the learner learns
//! from. As in Sample Factory, sampling and learning are separate parts with one interface
//! between them, here the rollout: [`Sampler::collect`] writes a segment,
//! [`crate::Learner::update`] reads it. `brims train`, the sweeps and the learning tests all
//! collect with this sampler; `brims eval` plays with its acting step, [`act_and_sample`].
//!
//! The sampler does not know how the envs run. It talks to them through [`EnvGroups`]: the envs
//! are split into groups (one, or two for double buffering) that take a group's actions and
//! later give back that group's [`GroupOutcome`]. The `brims` binary implements it over the
//! actor threads (`actors::ActorPool`), the tests over a synchronous vector env.
//!
//! One rollout step `t` with two groups, as [`Sampler::collect`] runs it:
//!
//! ```text
//! recv(0): outcome of t−1 | act(0, t), send(0) | recv(1): outcome of t−1 | act(1, t), send(1)
//!                           group 1 steps meanwhile                        group 0 steps meanwhile
//! ```
//!
//! Each env's recurrent state travels with it and is zeroed (by mask, inside the core) at the
//! step after its episode ended. The sampler owns, per group, the observations to act on, the
//! reset flags and the core state; it records what the policy saw and did, the outcomes,
//! V(final observation) of truncated episodes (with the state after the step, no reset), and
//! after the last step V(next observation) to bootstrap from.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use brims::{CoreState, StepTrace};
use candle_core::{DType, Tensor};
use rand::Rng;

use crate::error::{PpoError, Result};
use crate::network::{sample_actions, ActorCritic};
use crate::rollout::{ObsElement, PolicyStep, Rollout};

/// A real episode that ended (its statistics as the env reports them: raw return, length in
/// agent steps).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpisodeEnd {
    /// Global index of its env.
    pub env: usize,
    /// The episode's return.
    pub ret: f64,
    /// The episode's length in agent steps.
    pub len: u64,
}

/// What one group of `k` envs returned for one step. Envs reset on the step an episode ends
/// (same-step auto-reset): there `obs` already starts the next episode, and the ended
/// episode's last observation is in `final_obs`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupOutcome<T> {
    /// `[k · obs_size]` observations to act on next, env by env.
    pub obs: Vec<T>,
    /// `[k]` rewards of the step.
    pub rewards: Vec<f32>,
    /// `[k]` the episode reached a terminal state (do not bootstrap).
    pub terminated: Vec<bool>,
    /// `[k]` the episode was cut by a time limit (bootstrap from `final_obs`).
    pub truncated: Vec<bool>,
    /// `[k]` the ended episode's last observation where an episode ended, else `None`.
    pub final_obs: Vec<Option<Vec<T>>>,
    /// Real episodes that ended on this step.
    pub episodes: Vec<EpisodeEnd>,
}

/// Envs split into groups that step as a unit: what [`Sampler`] needs from whatever runs the
/// envs (actor threads, or a synchronous vector env). With more than one group, a group's
/// envs may step while the sampler runs the policy for another (double buffering).
pub trait EnvGroups {
    /// Observation element: `u8` frames or `f32` vectors.
    type Obs: ObsElement;
    /// Why the envs failed (an env's error or panic, a lost thread).
    type Error: std::error::Error + Send + Sync + 'static;
    /// The global env indices of each group, in order; together `0..N`.
    fn groups(&self) -> Vec<Range<usize>>;
    /// Resets every env; returns `[N · obs_size]` observations, env by env.
    fn reset(&mut self) -> std::result::Result<Vec<Self::Obs>, Self::Error>;
    /// Hands group `group` one action per env; may return before the envs have stepped.
    fn send_actions(
        &mut self,
        group: usize,
        actions: &[usize],
    ) -> std::result::Result<(), Self::Error>;
    /// Waits for group `group`'s outcome of the actions sent last.
    fn recv(&mut self, group: usize) -> std::result::Result<GroupOutcome<Self::Obs>, Self::Error>;
}

/// One acting step of one group, as [`SamplerEvents::on_act`] hears it.
#[derive(Clone, Copy, Debug)]
pub struct ActEvent<'a> {
    /// The rollout step `t`.
    pub t: usize,
    /// The group that acted.
    pub group: usize,
    /// Its envs' global indices.
    pub envs: &'a Range<usize>,
    /// The reset flags the policy acted with (1.0 = an episode started at this step).
    pub resets: &'a [f32],
    /// The group's core state after the step.
    pub next_state: &'a CoreState,
    /// The core's module activity, when the sampler traces (BRIMs).
    pub trace: Option<&'a StepTrace>,
}

/// What the sampler's user hears while it collects (telemetry). `()` hears nothing.
pub trait SamplerEvents {
    /// The policy acted for one group at one rollout step.
    fn on_act(&mut self, event: &ActEvent<'_>) -> Result<()>;
}

impl SamplerEvents for () {
    fn on_act(&mut self, _event: &ActEvent<'_>) -> Result<()> {
        Ok(())
    }
}

/// What one collected rollout produced besides the rollout itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    /// `(t, episode)`: the real episodes that ended, with the rollout step whose env step ended
    /// each, in the order they ended.
    pub episodes: Vec<(usize, EpisodeEnd)>,
}

/// One acting step for `k` envs ([`act_and_sample`]).
#[derive(Clone, Debug)]
pub struct Acted {
    /// `[k]` sampled actions.
    pub actions: Vec<u32>,
    /// `[k]` their log-probabilities.
    pub logprobs: Vec<f32>,
    /// `[k]` value estimates.
    pub values: Vec<f32>,
    /// The core state after the step (detached).
    pub next_state: CoreState,
    /// The core's module activity, when `traced` and the core has any.
    pub trace: Option<StepTrace>,
}

/// `k` flat observations as `[k, …obs_shape]` on the network's device (u8 frames stay u8).
fn obs_tensor<T: ObsElement>(net: &ActorCritic, obs: &[T], k: usize) -> Result<Tensor> {
    let mut shape = Vec::with_capacity(1 + net.obs_shape().len());
    shape.push(k);
    shape.extend_from_slice(net.obs_shape());
    Ok(Tensor::from_slice(obs, shape, net.device())?)
}

/// The sampler's acting step, for `k = resets.len()` envs: runs [`ActorCritic::act`] on the
/// flat observations `obs` (`k · obs_size`) from `state` with the reset flags `resets` (1.0 =
/// this step starts an episode), and samples one action per env from `rng`.
pub fn act_and_sample<T: ObsElement, R: Rng>(
    net: &ActorCritic,
    obs: &[T],
    state: &CoreState,
    resets: &[f32],
    rng: &mut R,
    traced: bool,
) -> Result<Acted> {
    let k = resets.len();
    let out = net.act(
        &obs_tensor(net, obs, k)?,
        state,
        &Tensor::from_slice(resets, k, net.device())?,
        traced,
    )?;
    let (actions, logprobs) = sample_actions(&out.logits, rng)?;
    Ok(Acted {
        actions,
        logprobs,
        values: out.values.to_vec1::<f32>()?,
        next_state: out.next_state,
        trace: out.trace,
    })
}

/// `V(obs)` of `k = resets.len()` envs from `state`, with the reset flags `resets`.
fn values_of<T: ObsElement>(
    net: &ActorCritic,
    obs: &[T],
    state: &CoreState,
    resets: &Tensor,
) -> Result<Vec<f32>> {
    let k = resets.dim(0)?;
    let out = net.act(&obs_tensor(net, obs, k)?, state, resets, false)?;
    Ok(out.values.to_vec1::<f32>()?)
}

/// Per group: its envs, the observations to act on next, the reset flags they go with (1.0 =
/// an episode starts at the next step) and the core state.
struct Group<T> {
    envs: Range<usize>,
    obs: Vec<T>,
    resets: Vec<f32>,
    state: CoreState,
}

/// Acts in the envs of an [`EnvGroups`] and fills rollouts (see the module docs).
pub struct Sampler<E: EnvGroups> {
    envs: E,
    /// Empty until the first [`Sampler::collect`] resets the envs.
    groups: Vec<Group<E::Obs>>,
    traced: bool,
    /// A stop abandoned a rollout while envs were stepping.
    abandoned: bool,
}

impl<E: EnvGroups> Sampler<E> {
    /// A sampler over `envs`; the first [`Sampler::collect`] resets them.
    pub fn new(envs: E) -> Self {
        Sampler {
            envs,
            groups: Vec::new(),
            traced: false,
            abandoned: false,
        }
    }

    /// Asks the core for its module activity at every acting step (BRIMs telemetry), handed to
    /// [`SamplerEvents::on_act`]; acting itself is unchanged.
    pub fn traced(mut self, traced: bool) -> Self {
        self.traced = traced;
        self
    }

    /// The envs.
    pub fn envs(&self) -> &E {
        &self.envs
    }

    /// Resets every env and gives each group zero state and "episode starts here" flags.
    fn reset(&mut self, net: &ActorCritic, num_envs: usize) -> Result<()> {
        let groups = self.envs.groups();
        if groups.first().map(|g| g.start) != Some(0)
            || groups.windows(2).any(|w| w[0].end != w[1].start)
            || groups.last().map(|g| g.end) != Some(num_envs)
        {
            return Err(PpoError::Shape {
                op: "Sampler::collect",
                why: format!(
                    "the env groups {groups:?} do not split the rollout's {num_envs} envs in order"
                ),
            });
        }
        let obs_size: usize = net.obs_shape().iter().product();
        let all_obs = self.envs.reset().map_err(PpoError::envs)?;
        if all_obs.len() != num_envs * obs_size {
            return Err(PpoError::Shape {
                op: "Sampler::collect",
                why: format!(
                    "reset gave {} observation values for {num_envs} envs of {obs_size}",
                    all_obs.len()
                ),
            });
        }
        self.groups = groups
            .into_iter()
            .map(|envs| {
                Ok(Group {
                    obs: all_obs[envs.start * obs_size..envs.end * obs_size].to_vec(),
                    resets: vec![1.0; envs.len()],
                    state: net.zero_state(envs.len())?,
                    envs,
                })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Fills `rollout` with `T` steps of every env, acting with `net` and sampling actions from
    /// `rng`; the first call resets the envs, later calls continue where the last one stopped.
    /// Groups alternate: while one group's envs step, the policy runs for the other.
    ///
    /// Returns `None`, with the rollout abandoned, when `stop` is raised meanwhile (so a stop
    /// signal waits for at most an env step, not a whole rollout). The envs may then be in the
    /// middle of a step, and a later call is refused: drop the sampler.
    pub fn collect<R: Rng>(
        &mut self,
        net: &ActorCritic,
        rng: &mut R,
        rollout: &mut Rollout,
        stop: &AtomicBool,
        events: &mut impl SamplerEvents,
    ) -> Result<Option<Collected>> {
        if self.abandoned {
            return Err(PpoError::Sampler(
                "a stopped collect left the envs in the middle of a step; build a new sampler"
                    .into(),
            ));
        }
        if self.groups.is_empty() {
            self.reset(net, rollout.num_envs())?;
        }
        let num_steps = rollout.num_steps();
        let start_state = CoreState::cat(
            &self
                .groups
                .iter()
                .map(|g| g.state.clone())
                .collect::<Vec<_>>(),
        )?;
        rollout.begin(&start_state)?;
        let mut collected = Collected::default();
        for t in 0..num_steps {
            if stop.load(Ordering::SeqCst) {
                self.abandoned = t > 0;
                return Ok(None);
            }
            for g in 0..self.groups.len() {
                if t > 0 {
                    self.on_outcome(net, rollout, t - 1, g, &mut collected)?;
                }
                self.act(net, rng, rollout, t, g, events)?;
            }
        }
        for g in 0..self.groups.len() {
            self.on_outcome(net, rollout, num_steps - 1, g, &mut collected)?;
        }
        // Bootstrap values: V(observation after the last step), with the state it would act from.
        for group in &self.groups {
            let resets = Tensor::from_slice(&group.resets, group.envs.len(), net.device())?;
            let values = values_of(net, &group.obs, &group.state, &resets)?;
            rollout.record_next_values(group.envs.start, &values)?;
        }
        Ok(Some(collected))
    }

    /// Runs the policy for group `g` at step `t`, records it, and sends the actions.
    fn act<R: Rng>(
        &mut self,
        net: &ActorCritic,
        rng: &mut R,
        rollout: &mut Rollout,
        t: usize,
        g: usize,
        events: &mut impl SamplerEvents,
    ) -> Result<()> {
        let group = &mut self.groups[g];
        let acted = act_and_sample(
            net,
            &group.obs,
            &group.state,
            &group.resets,
            rng,
            self.traced,
        )?;
        rollout.record_policy(
            t,
            group.envs.start,
            PolicyStep {
                obs: &group.obs,
                resets: &group.resets,
                actions: &acted.actions,
                logprobs: &acted.logprobs,
                values: &acted.values,
            },
        )?;
        group.state = acted.next_state;
        events.on_act(&ActEvent {
            t,
            group: g,
            envs: &group.envs,
            resets: &group.resets,
            next_state: &group.state,
            trace: acted.trace.as_ref(),
        })?;
        let actions: Vec<usize> = acted.actions.iter().map(|&a| a as usize).collect();
        self.envs
            .send_actions(g, &actions)
            .map_err(PpoError::envs)?;
        Ok(())
    }

    /// Receives group `g`'s outcome of step `t` and records it.
    fn on_outcome(
        &mut self,
        net: &ActorCritic,
        rollout: &mut Rollout,
        t: usize,
        g: usize,
        collected: &mut Collected,
    ) -> Result<()> {
        let outcome = self.envs.recv(g).map_err(PpoError::envs)?;
        let group = &mut self.groups[g];
        let k = group.envs.len();
        let env0 = group.envs.start;
        let lens = [
            outcome.rewards.len(),
            outcome.terminated.len(),
            outcome.truncated.len(),
            outcome.final_obs.len(),
        ];
        if lens.iter().any(|&len| len != k) {
            return Err(PpoError::Shape {
                op: "Sampler::collect",
                why: format!(
                    "group {g} has {k} envs but its outcome has {lens:?} rewards, terminated, \
                     truncated and final observations"
                ),
            });
        }
        rollout.record_outcome(
            t,
            env0,
            &outcome.rewards,
            &outcome.terminated,
            &outcome.truncated,
        )?;
        // A truncated (not terminated) episode bootstraps from V(final observation), computed
        // from the env's state after step t, without a reset.
        let cut: Vec<usize> = (0..k)
            .filter(|&i| {
                outcome.truncated[i] && !outcome.terminated[i] && outcome.final_obs[i].is_some()
            })
            .collect();
        if !cut.is_empty() {
            let rows: Vec<u32> = cut.iter().map(|&i| i as u32).collect();
            let rows = Tensor::from_slice(&rows, cut.len(), net.device())?;
            let final_obs: Vec<E::Obs> = cut
                .iter()
                .flat_map(|&i| outcome.final_obs[i].iter().flatten().copied())
                .collect();
            let no_reset = Tensor::zeros(cut.len(), DType::F32, net.device())?;
            let values = values_of(
                net,
                &final_obs,
                &group.state.index_select(&rows)?,
                &no_reset,
            )?;
            for (&i, value) in cut.iter().zip(values) {
                rollout.record_final_value(t, env0 + i, value)?;
            }
        }
        for (i, reset) in group.resets.iter_mut().enumerate() {
            *reset = if outcome.terminated[i] || outcome.truncated[i] {
                1.0
            } else {
                0.0
            };
        }
        group.obs = outcome.obs;
        collected
            .episodes
            .extend(outcome.episodes.into_iter().map(|e| (t, e)));
        Ok(())
    }
}
