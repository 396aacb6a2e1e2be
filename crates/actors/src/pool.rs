//! The driver's side of the pool: wiring, the step protocol, failure detection and shutdown.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use envs_api::{Env, EnvError, EpisodeStats};

use crate::error::{ActorError, EnvFailure};
use crate::shard::{shard_main, ActorMsg, InitMsg, ShardBuf, ShardCmd, ShardSetup, Spaces};

/// How often a waiting driver wakes to check the stop flag and the shard threads' liveness.
/// Messages wake it at once; this only bounds how late a silent failure is noticed.
const POLL: Duration = Duration::from_millis(50);

/// Configuration of an [`ActorPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Number of envs `N` (at least 1; at least 2 with `double_buffer`).
    pub num_envs: usize,
    /// Shard threads (one per core is right); `0` means one per available core. Capped at the
    /// smallest group's size so that every thread steps part of every group.
    pub num_threads: usize,
    /// Split the envs into two groups that alternate (group 0 = `0..N/2`, group 1 =
    /// `N/2..N`), so the driver can run inference for one while the other steps. `false`:
    /// one group of all envs.
    pub double_buffer: bool,
    /// Env `i` is reset with seed `seed + i` on the pool's first `reset`.
    pub seed: u64,
}

/// The results of one step (or the reset) of one group, `n = envs.len()` envs.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupStep<T> {
    /// The global indices of the group's envs.
    pub envs: Range<usize>,
    /// `[n * obs_size]` observations to act on next. For an env whose episode ended this
    /// step, this is the next episode's first observation (same-step auto-reset).
    pub obs: Vec<T>,
    /// `[n]` rewards of this step (as the env returns them, e.g. clipped).
    pub rewards: Vec<f32>,
    /// `[n]` the episode reached a terminal state: do not bootstrap.
    pub terminated: Vec<bool>,
    /// `[n]` the episode was cut (time limit): bootstrap from `final_obs`.
    pub truncated: Vec<bool>,
    /// `[n]` each env's `info.frame_number` after this step (after the reset where an episode
    /// ended): for Atari, the emulator frames the env has run since it was created, resets
    /// included; 0 for envs that do not count frames.
    pub frame_numbers: Vec<u64>,
    /// `[n]` the ended episode's last observation (`[obs_size]`), for envs whose episode ended
    /// this step; `None` elsewhere.
    pub final_obs: Vec<Option<Vec<T>>>,
    /// `(global env index, stats)` of every real episode that ended this step (raw return).
    pub episodes: Vec<(usize, EpisodeStats)>,
}

impl<T> Default for GroupStep<T> {
    fn default() -> Self {
        Self {
            envs: 0..0,
            obs: Vec::new(),
            rewards: Vec::new(),
            terminated: Vec::new(),
            truncated: Vec::new(),
            frame_numbers: Vec::new(),
            final_obs: Vec::new(),
            episodes: Vec::new(),
        }
    }
}

impl<T> GroupStep<T> {
    /// Whether env `k` of the group (local index) ended its episode this step
    /// (`terminated || truncated`): reset its recurrent state before its next step.
    pub fn done(&self, k: usize) -> bool {
        self.terminated[k] || self.truncated[k]
    }
}

impl<T: Copy + Default> GroupStep<T> {
    /// Clears and sizes the buffers for the group `envs` (keeps their allocations).
    fn start(&mut self, envs: Range<usize>) {
        self.envs = envs;
        self.obs.clear();
        self.rewards.clear();
        self.terminated.clear();
        self.truncated.clear();
        self.frame_numbers.clear();
        self.final_obs.clear();
        self.final_obs.resize_with(self.envs.len(), || None);
        self.episodes.clear();
    }

    /// Copies a shard's part (envs `part`, inside `self.envs`) into place.
    fn fill(&mut self, part: &Range<usize>, obs_size: usize, buf: &mut ShardBuf<T>) {
        let n = self.envs.len();
        if self.rewards.len() != n {
            // The first part of this round: size everything (values are overwritten below).
            self.obs.resize(n * obs_size, T::default());
            self.rewards.resize(n, 0.0);
            self.terminated.resize(n, false);
            self.truncated.resize(n, false);
            self.frame_numbers.resize(n, 0);
        }
        let off = part.start - self.envs.start;
        self.obs[off * obs_size..(off + part.len()) * obs_size].copy_from_slice(&buf.obs);
        self.rewards[off..off + part.len()].copy_from_slice(&buf.rewards);
        self.terminated[off..off + part.len()].copy_from_slice(&buf.terminated);
        self.truncated[off..off + part.len()].copy_from_slice(&buf.truncated);
        self.frame_numbers[off..off + part.len()].copy_from_slice(&buf.frame_numbers);
        for (local, last) in buf.final_obs.drain(..) {
            self.final_obs[off + local] = Some(last);
        }
        self.episodes.append(&mut buf.episodes);
    }
}

/// A pool of shard threads stepping `N` envs of type `E`, split into one or two groups.
///
/// Typical double-buffered loop (see the crate docs for the protocol):
/// ```ignore
/// let mut pool = ActorPool::new(cfg, |i| make_env(i))?;
/// let obs = pool.reset()?;                       // [N * obs_size]
/// for g in 0..pool.num_groups() { pool.send_actions(g, &policy(&obs[..]))?; }
/// loop {
///     for g in 0..pool.num_groups() {
///         let step = pool.recv(g)?;              // group g's results
///         let actions = policy(&step.obs);       // the other group steps meanwhile
///         pool.send_actions(g, &actions)?;
///     }
/// }
/// ```
pub struct ActorPool<E: Env> {
    groups: Vec<Range<usize>>,
    /// `parts[g][t]`: the envs of group `g` that thread `t` steps.
    parts: Vec<Vec<Range<usize>>>,
    obs_size: usize,
    obs_shape: Vec<usize>,
    num_actions: usize,
    cmd_txs: Vec<Sender<ShardCmd<E::Elem>>>,
    result_rxs: Vec<Receiver<ActorMsg<E::Elem>>>,
    /// `spare[g][t]`: thread `t`'s buffers for group `g`, while they are with the driver.
    spare: Vec<Vec<Option<ShardBuf<E::Elem>>>>,
    in_flight: Vec<bool>,
    was_reset: bool,
    failed: Option<String>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _env: PhantomData<fn() -> E>,
}

/// Splits `range` into `k` contiguous parts whose sizes differ by at most one.
fn split(range: &Range<usize>, k: usize) -> Vec<Range<usize>> {
    let len = range.len();
    (0..k)
        .map(|t| range.start + t * len / k..range.start + (t + 1) * len / k)
        .collect()
}

impl<E: Env> ActorPool<E> {
    /// Starts the shard threads; each creates its envs with `make_env(global_index)` inside
    /// the thread. Returns once every env exists, or the first creation failure.
    pub fn new<F>(cfg: PoolConfig, make_env: F) -> Result<Self, ActorError>
    where
        F: Fn(usize) -> Result<E, EnvError> + Send + Sync + 'static,
    {
        let n = cfg.num_envs;
        if n == 0 || (cfg.double_buffer && n < 2) {
            let why = format!("{n}; need at least 1, or 2 with double_buffer");
            return Err(ActorError::InvalidConfig {
                what: "num_envs",
                why,
            });
        }
        let groups: Vec<Range<usize>> = if cfg.double_buffer {
            vec![0..n / 2, n / 2..n]
        } else {
            std::iter::once(0..n).collect()
        };
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let wanted = if cfg.num_threads == 0 {
            cores
        } else {
            cfg.num_threads
        };
        let smallest = groups.iter().map(|g| g.len()).min().unwrap_or(1);
        let num_threads = wanted.clamp(1, smallest);
        let parts: Vec<Vec<Range<usize>>> = groups.iter().map(|g| split(g, num_threads)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (cmd_txs, result_rxs, init_rx, threads) =
            spawn_shards::<E, F>(&parts, cfg.seed, Arc::new(make_env), &stop)?;
        let mut pool = Self {
            spare: groups
                .iter()
                .map(|_| (0..num_threads).map(|_| None).collect())
                .collect(),
            in_flight: vec![false; groups.len()],
            groups,
            parts,
            obs_size: 0,
            obs_shape: Vec::new(),
            num_actions: 0,
            cmd_txs,
            result_rxs,
            was_reset: false,
            failed: None,
            stop,
            threads,
            _env: PhantomData,
        };
        // On error `pool` drops here, which stops and joins the threads already started.
        pool.on_init(init_rx)?;
        Ok(pool)
    }

    /// Waits for every shard's `InitMsg` and checks that all envs share their spaces.
    fn on_init(&mut self, init_rx: Receiver<InitMsg>) -> Result<(), ActorError> {
        let mut first: Option<(Spaces, usize)> = None;
        for _ in 0..self.threads.len() {
            let msg = loop {
                match init_rx.recv_timeout(POLL) {
                    Ok(msg) => break msg,
                    Err(RecvTimeoutError::Timeout) if self.stop.load(Ordering::Relaxed) => {
                        return Err(ActorError::Stopped)
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    // Every shard reports before it exits, so this is a shard's own bug.
                    Err(RecvTimeoutError::Disconnected) => {
                        let thread = self.finished_thread().unwrap_or(0);
                        return Err(ActorError::ThreadDied { thread });
                    }
                }
            };
            match msg {
                InitMsg::Failed {
                    env,
                    cause,
                    create: true,
                } => return Err(ActorError::Create { env, cause }),
                InitMsg::Failed {
                    env,
                    cause,
                    create: false,
                } => {
                    let what = cause.to_string();
                    let expected = "the same spaces as the other envs, Discrete actions".into();
                    return Err(ActorError::Space {
                        env,
                        what,
                        expected,
                    });
                }
                InitMsg::Ready { spaces, env } => match &first {
                    None => first = Some((spaces, env)),
                    Some((s, _)) if *s == spaces => {}
                    Some((s, e)) => {
                        return Err(ActorError::Space {
                            env,
                            what: spaces.to_string(),
                            expected: format!("{s}, as env {e}"),
                        })
                    }
                },
            }
        }
        if let Some((spaces, _)) = first {
            self.obs_size = spaces.obs_shape.iter().product();
            self.obs_shape = spaces.obs_shape;
            self.num_actions = spaces.num_actions;
        }
        Ok(())
    }

    /// Number of groups: 2 with double buffering, else 1.
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    /// The global env indices of group `g` (panics if `g >= num_groups()`).
    pub fn group_envs(&self, g: usize) -> Range<usize> {
        self.groups[g].clone()
    }

    /// Number of envs `N`.
    pub fn num_envs(&self) -> usize {
        self.groups.last().map_or(0, |g| g.end)
    }

    /// Number of shard threads actually started.
    pub fn num_threads(&self) -> usize {
        self.threads.len()
    }

    /// Scalars in one observation (the observation space's flat size).
    pub fn obs_size(&self) -> usize {
        self.obs_size
    }

    /// The shape of one observation, e.g. `[k, 84, 84]` for Atari (`obs_size` is its product).
    pub fn obs_shape(&self) -> &[usize] {
        &self.obs_shape
    }

    /// Size of the (shared) `Discrete` action space.
    pub fn num_actions(&self) -> usize {
        self.num_actions
    }

    /// The stop flag. Setting it (e.g. from a Ctrl-C handler) makes the shards exit at their
    /// next env step and every waiting or later call return [`ActorError::Stopped`].
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    fn check_usable(&self) -> Result<(), ActorError> {
        if let Some(why) = &self.failed {
            return Err(ActorError::Failed(why.clone()));
        }
        if self.stop.load(Ordering::Relaxed) {
            return Err(ActorError::Stopped);
        }
        Ok(())
    }

    /// Records a failure so that later calls report it, and returns it.
    fn fail(&mut self, err: ActorError) -> ActorError {
        if !matches!(err, ActorError::Stopped) {
            self.failed = Some(err.to_string());
        }
        err
    }

    /// Resets every env and returns `[N * obs_size]` observations, env by env. The first
    /// call seeds env `i` with `seed + i`; later calls continue the envs' random streams.
    /// No group may have actions in flight.
    pub fn reset(&mut self) -> Result<Vec<E::Elem>, ActorError> {
        self.check_usable()?;
        if self.in_flight.iter().any(|&f| f) {
            let why = "reset called while a group has actions in flight (recv it first)";
            return Err(ActorError::Protocol(why.into()));
        }
        for t in 0..self.cmd_txs.len() {
            if self.cmd_txs[t].send(ShardCmd::Reset).is_err() {
                return Err(self.on_thread_gone());
            }
        }
        let mut all = Vec::with_capacity(self.num_envs() * self.obs_size);
        let mut step = GroupStep::default();
        for g in 0..self.groups.len() {
            self.collect(g, &mut step)?;
            all.extend_from_slice(&step.obs);
        }
        self.was_reset = true;
        Ok(all)
    }

    /// Sends group `group`'s actions (`[n]`, one per env of `group_envs(group)`); its shards
    /// start stepping at once. Returns without waiting.
    pub fn send_actions(&mut self, group: usize, actions: &[usize]) -> Result<(), ActorError> {
        self.check_usable()?;
        let envs = self.groups.get(group).cloned().ok_or_else(|| {
            ActorError::Protocol(format!(
                "group {group} does not exist ({} groups)",
                self.groups.len()
            ))
        })?;
        if !self.was_reset {
            return Err(ActorError::Protocol(
                "send_actions before the first reset".into(),
            ));
        }
        if self.in_flight[group] {
            let why = format!("group {group} already has actions in flight (recv it first)");
            return Err(ActorError::Protocol(why));
        }
        if actions.len() != envs.len() {
            let why = format!(
                "group {group} has {} envs but got {} actions",
                envs.len(),
                actions.len()
            );
            return Err(ActorError::Protocol(why));
        }
        if let Some(k) = actions.iter().position(|&a| a >= self.num_actions) {
            let (env, action, n) = (envs.start + k, actions[k], self.num_actions);
            return Err(ActorError::InvalidAction { env, action, n });
        }
        for t in 0..self.cmd_txs.len() {
            let part = &self.parts[group][t];
            let mut buf = self.spare[group][t].take().unwrap_or_else(ShardBuf::new);
            buf.actions.clear();
            buf.actions
                .extend_from_slice(&actions[part.start - envs.start..part.end - envs.start]);
            if self.cmd_txs[t].send(ShardCmd::Step { group, buf }).is_err() {
                return Err(self.on_thread_gone());
            }
        }
        self.in_flight[group] = true;
        Ok(())
    }

    /// Waits for group `group`'s results (the group must have actions in flight).
    pub fn recv(&mut self, group: usize) -> Result<GroupStep<E::Elem>, ActorError> {
        let mut step = GroupStep::default();
        self.recv_into(group, &mut step)?;
        Ok(step)
    }

    /// As [`recv`](Self::recv), writing into `step` and reusing its allocations.
    pub fn recv_into(
        &mut self,
        group: usize,
        step: &mut GroupStep<E::Elem>,
    ) -> Result<(), ActorError> {
        self.check_usable()?;
        if !self.in_flight.get(group).copied().unwrap_or(false) {
            let why = format!("recv on group {group}, which has no actions in flight");
            return Err(ActorError::Protocol(why));
        }
        self.collect(group, step)?;
        self.in_flight[group] = false;
        Ok(())
    }

    /// Gathers one message per shard from group `g`'s channel into `step`. Wakes every
    /// `POLL` to check the stop flag and that no shard died silently.
    fn collect(&mut self, g: usize, step: &mut GroupStep<E::Elem>) -> Result<(), ActorError> {
        step.start(self.groups[g].clone());
        let mut pending = self.cmd_txs.len();
        while pending > 0 {
            match self.result_rxs[g].recv_timeout(POLL) {
                Ok(ActorMsg::Stepped { thread, mut buf }) => {
                    step.fill(&self.parts[g][thread], self.obs_size, &mut buf);
                    self.spare[g][thread] = Some(buf);
                    pending -= 1;
                }
                Ok(ActorMsg::Error { env, cause }) => {
                    return Err(self.fail(ActorError::Env { env, cause }));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Err(ActorError::Stopped);
                    }
                    if self.finished_thread().is_some() {
                        return Err(self.on_thread_gone());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.on_thread_gone()),
            }
        }
        Ok(())
    }

    /// The first shard thread that has ended, if any.
    fn finished_thread(&self) -> Option<usize> {
        self.threads.iter().position(|t| t.is_finished())
    }

    /// A shard thread has ended: find the failure it reported (on any group's channel),
    /// else report the thread itself. Marks the pool failed.
    fn on_thread_gone(&mut self) -> ActorError {
        if self.stop.load(Ordering::Relaxed) {
            return ActorError::Stopped;
        }
        let reported = self
            .result_rxs
            .iter()
            .flat_map(|rx| rx.try_iter())
            .find_map(|msg| match msg {
                ActorMsg::Error { env, cause } => Some((env, cause)),
                ActorMsg::Stepped { .. } => None,
            });
        let err = match reported {
            Some((env, cause)) => ActorError::Env { env, cause },
            None => ActorError::ThreadDied {
                thread: self.finished_thread().unwrap_or(0),
            },
        };
        self.fail(err)
    }
}

/// Creates every channel and starts every shard thread: the pool's whole wiring.
///
/// - one command channel per shard, `bounded(num_groups)`: the driver has at most one command
///   per group in flight, so its sends never block;
/// - one result channel per group, `bounded(num_threads)`, shared by all shards: each shard
///   sends one message per round of that group, so shards never block either;
/// - one init channel, for the shards' start-up reports.
///
/// Backpressure is the step protocol itself (a group is not sent new actions until its
/// results are received), so no queue grows.
#[allow(clippy::type_complexity)]
fn spawn_shards<E, F>(
    parts: &[Vec<Range<usize>>],
    seed: u64,
    make_env: Arc<F>,
    stop: &Arc<AtomicBool>,
) -> Result<
    (
        Vec<Sender<ShardCmd<E::Elem>>>,
        Vec<Receiver<ActorMsg<E::Elem>>>,
        Receiver<InitMsg>,
        Vec<JoinHandle<()>>,
    ),
    ActorError,
>
where
    E: Env,
    F: Fn(usize) -> Result<E, EnvError> + Send + Sync + 'static,
{
    let num_groups = parts.len();
    let num_threads = parts.first().map_or(0, |p| p.len());
    let (result_txs, result_rxs): (Vec<_>, Vec<_>) = (0..num_groups)
        .map(|_| bounded::<ActorMsg<E::Elem>>(num_threads))
        .unzip();
    let (init_tx, init_rx) = unbounded();
    let mut cmd_txs = Vec::with_capacity(num_threads);
    let mut threads = Vec::with_capacity(num_threads);
    for t in 0..num_threads {
        let (cmd_tx, cmd_rx) = bounded(num_groups);
        let setup = ShardSetup {
            thread: t,
            parts: parts.iter().map(|p| p[t].clone()).collect(),
            seed,
            make_env: Arc::clone(&make_env),
            cmds: cmd_rx,
            results: result_txs.clone(),
            init: init_tx.clone(),
            stop: Arc::clone(stop),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("actor-shard-{t}"))
            .spawn(move || shard_main::<E, F>(setup));
        match spawned {
            Ok(handle) => {
                cmd_txs.push(cmd_tx);
                threads.push(handle);
            }
            Err(e) => {
                // Stop the shards already started: they see the dropped senders and exit.
                stop.store(true, Ordering::Relaxed);
                drop(cmd_txs);
                for h in threads {
                    let _ = h.join();
                }
                let cause =
                    EnvFailure::Error(EnvError::Backend(format!("spawning a shard thread: {e}")));
                return Err(ActorError::Create {
                    env: parts[0][t].start,
                    cause,
                });
            }
        }
    }
    Ok((cmd_txs, result_rxs, init_rx, threads))
}

impl<E: Env> Drop for ActorPool<E> {
    /// The shutdown protocol (crate docs): raise the stop flag, drop the command senders and
    /// result receivers so no shard can block on a channel, then join every shard thread.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cmd_txs.clear();
        self.result_rxs.clear();
        for handle in self.threads.drain(..) {
            // A shard's env panics are caught and reported; a panic here is a bug in this
            // crate, already reported as `ThreadDied`, and a destructor must not panic.
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_covers_the_range_in_near_equal_contiguous_parts() {
        for (range, k) in [(0..16, 2), (8..16, 3), (3..10, 4), (0..5, 5)] {
            let parts = split(&range, k);
            assert_eq!(parts.len(), k);
            assert_eq!(parts[0].start, range.start);
            assert_eq!(parts[k - 1].end, range.end);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            let (min, max) = (
                parts.iter().map(|p| p.len()).min().unwrap(),
                parts.iter().map(|p| p.len()).max().unwrap(),
            );
            assert!(max - min <= 1, "{parts:?}");
        }
    }
}
