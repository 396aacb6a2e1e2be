//! The shard thread: owns some envs of every group, steps them on command, reports up.

use std::any::Any;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use envs_api::{AutoReset, Env, EnvError, EpisodeStats};

use crate::error::EnvFailure;

/// The buffers of one shard's part of one group. Allocated once, they travel down with the
/// actions and back up with the results, so a step allocates nothing big.
pub(crate) struct ShardBuf<T> {
    /// `[n]` actions, filled by the driver.
    pub actions: Vec<usize>,
    /// `[n * obs_size]` observations after the step.
    pub obs: Vec<T>,
    /// `[n]`
    pub rewards: Vec<f32>,
    /// `[n]`
    pub terminated: Vec<bool>,
    /// `[n]`
    pub truncated: Vec<bool>,
    /// `[n]` each env's `info.frame_number` after the step (its reset info after an episode
    /// end).
    pub frame_numbers: Vec<u64>,
    /// `(local env index, last obs)` of the episodes that ended this step.
    pub final_obs: Vec<(usize, Vec<T>)>,
    /// `(global env index, stats)` of the real episodes that ended this step.
    pub episodes: Vec<(usize, EpisodeStats)>,
}

impl<T> ShardBuf<T> {
    pub fn new() -> Self {
        Self {
            actions: Vec::new(),
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

/// Driver → shard.
pub(crate) enum ShardCmd<T> {
    /// Reset every env of the shard (all groups); the first reset seeds env `i` with `seed + i`.
    Reset,
    /// Step the shard's part of `group` with `buf.actions`.
    Step {
        /// Group index.
        group: usize,
        /// Buffers, with the actions filled in.
        buf: ShardBuf<T>,
    },
}

/// Shard → driver, on the channel of the group concerned. Env failures are data.
pub(crate) enum ActorMsg<T> {
    /// The shard's part of a group stepped (or was reset).
    Stepped {
        /// Shard thread index.
        thread: usize,
        /// The results.
        buf: ShardBuf<T>,
    },
    /// An env failed; the shard has stopped. Sent on the channel of the group being stepped.
    Error {
        /// Global env index.
        env: usize,
        /// Error or panic.
        cause: EnvFailure,
    },
}

/// What the driver needs to know of the envs' spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spaces {
    /// The observation space's shape (`[]` for a scalar).
    pub obs_shape: Vec<usize>,
    /// Size of the `Discrete` action space.
    pub num_actions: usize,
}

impl std::fmt::Display for Spaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "observations {:?} and {} actions",
            self.obs_shape, self.num_actions
        )
    }
}

/// Shard → driver once at start-up: the envs exist (or could not be created).
pub(crate) enum InitMsg {
    Ready {
        spaces: Spaces,
        /// The first env of the shard, for error messages.
        env: usize,
    },
    Failed {
        env: usize,
        cause: EnvFailure,
        /// `true`: the factory failed; `false`: a space is unusable (`cause` says which).
        create: bool,
    },
}

/// Everything a shard thread needs; built by `pool::spawn_shards`.
pub(crate) struct ShardSetup<T, F> {
    pub thread: usize,
    /// `parts[g]`: the global env indices of group `g` this shard owns.
    pub parts: Vec<Range<usize>>,
    pub seed: u64,
    pub make_env: Arc<F>,
    pub cmds: Receiver<ShardCmd<T>>,
    /// `results[g]`: group `g`'s result channel.
    pub results: Vec<Sender<ActorMsg<T>>>,
    pub init: Sender<InitMsg>,
    pub stop: Arc<AtomicBool>,
}

/// Why the command loop ended early.
enum Exit {
    Failed {
        group: usize,
        env: usize,
        cause: EnvFailure,
    },
    Stopped,
}

/// The panic payload as text.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `f`, turning an error or a panic into an `EnvFailure`.
fn guarded<R>(f: impl FnOnce() -> Result<R, EnvError>) -> Result<R, EnvFailure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(EnvFailure::Error(e)),
        Err(payload) => Err(EnvFailure::Panic(panic_message(payload))),
    }
}

/// The body of a shard thread. Creates its envs here (ALE handles must be created in the
/// thread that uses them), reports `InitMsg`, then serves commands until the driver drops the
/// command sender, the stop flag is set, or an env fails.
pub(crate) fn shard_main<E, F>(setup: ShardSetup<E::Elem, F>)
where
    E: Env,
    F: Fn(usize) -> Result<E, EnvError> + Send + Sync + 'static,
{
    let ShardSetup {
        thread,
        parts,
        seed,
        make_env,
        cmds,
        results,
        init,
        stop,
    } = setup;
    let mut envs: Vec<Vec<AutoReset<E>>> = Vec::with_capacity(parts.len());
    for part in &parts {
        let mut group_envs = Vec::with_capacity(part.len());
        for i in part.clone() {
            if stop.load(Ordering::Relaxed) {
                return; // the pool is being dropped (another shard failed to start)
            }
            match guarded(|| make_env(i)) {
                Ok(env) => group_envs.push(AutoReset::new(env)),
                Err(cause) => {
                    let _ = init.send(InitMsg::Failed {
                        env: i,
                        cause,
                        create: true,
                    });
                    return;
                }
            }
        }
        envs.push(group_envs);
    }
    drop(make_env);
    let first_env = parts.first().map_or(0, |p| p.start);
    let ready = match guarded(|| Ok(spaces(&parts, &envs))) {
        Ok(Ok(spaces)) => InitMsg::Ready {
            spaces,
            env: first_env,
        },
        Err(cause) => InitMsg::Failed {
            env: first_env,
            cause,
            create: false,
        },
        Ok(Err((env, why))) => InitMsg::Failed {
            env,
            cause: EnvFailure::Error(EnvError::Invalid {
                what: "spaces".into(),
                why,
            }),
            create: false,
        },
    };
    let failed = matches!(ready, InitMsg::Failed { .. });
    if init.send(ready).is_err() || failed {
        return;
    }
    drop(init);

    let mut shard = Shard {
        thread,
        parts,
        seed,
        envs,
        results,
        stop,
        seeded: false,
    };
    // Serve until the driver drops its sender (the normal shutdown) or a send up fails.
    for cmd in cmds.iter() {
        let outcome = match cmd {
            ShardCmd::Reset => shard.on_reset(),
            ShardCmd::Step { group, buf } => shard.on_step(group, buf),
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => return,
            Err(Exit::Stopped) => return,
            Err(Exit::Failed { group, env, cause }) => {
                // On the channel of the group being stepped; a driver waiting on another group
                // sees this thread finish and drains every channel for this message.
                let _ = shard.results[group].send(ActorMsg::Error { env, cause });
                return;
            }
        }
    }
}

/// The observation shape and number of actions shared by all the shard's envs.
fn spaces<E: Env>(
    parts: &[Range<usize>],
    envs: &[Vec<AutoReset<E>>],
) -> Result<Spaces, (usize, String)> {
    let mut found: Option<(usize, Spaces)> = None;
    for (part, group_envs) in parts.iter().zip(envs) {
        for (i, env) in part.clone().zip(group_envs) {
            let action_space = env.inner().action_space();
            let num_actions = action_space.n().ok_or_else(|| {
                (
                    i,
                    format!("action space {action_space:?}, expected Discrete"),
                )
            })?;
            let obs_shape = env.inner().observation_space().shape().to_vec();
            let these = Spaces {
                obs_shape,
                num_actions,
            };
            match &found {
                None => found = Some((i, these)),
                Some((_, first)) if *first == these => {}
                Some((e, first)) => return Err((i, format!("{these}, but env {e} has {first}"))),
            }
        }
    }
    Ok(found.map(|(_, s)| s).unwrap_or(Spaces {
        obs_shape: Vec::new(),
        num_actions: 0,
    }))
}

/// A shard's state inside its thread.
struct Shard<E: Env> {
    thread: usize,
    parts: Vec<Range<usize>>,
    seed: u64,
    envs: Vec<Vec<AutoReset<E>>>,
    results: Vec<Sender<ActorMsg<E::Elem>>>,
    stop: Arc<AtomicBool>,
    seeded: bool,
}

impl<E: Env> Shard<E> {
    /// Resets every env; sends one `Stepped` per group. `Ok(false)`: the driver is gone.
    fn on_reset(&mut self) -> Result<bool, Exit> {
        let seeded = std::mem::replace(&mut self.seeded, true);
        for g in 0..self.parts.len() {
            let part = self.parts[g].clone();
            let mut buf = ShardBuf::new();
            buf.rewards = vec![0.0; part.len()];
            buf.terminated = vec![false; part.len()];
            buf.truncated = vec![false; part.len()];
            for (i, env) in part.zip(self.envs[g].iter_mut()) {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(Exit::Stopped);
                }
                let seed = (!seeded).then(|| self.seed.wrapping_add(i as u64));
                let (obs, info) = guarded(|| env.reset(seed)).map_err(|cause| Exit::Failed {
                    group: g,
                    env: i,
                    cause,
                })?;
                buf.obs.extend_from_slice(&obs);
                buf.frame_numbers.push(info.frame_number);
            }
            let msg = ActorMsg::Stepped {
                thread: self.thread,
                buf,
            };
            if self.results[g].send(msg).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Steps the shard's part of `group` with `buf.actions`; sends the results up.
    fn on_step(&mut self, group: usize, mut buf: ShardBuf<E::Elem>) -> Result<bool, Exit> {
        let part = self.parts[group].clone();
        let n = part.len();
        buf.obs.clear();
        buf.rewards.clear();
        buf.terminated.clear();
        buf.truncated.clear();
        buf.frame_numbers.clear();
        buf.final_obs.clear();
        buf.episodes.clear();
        for (local, (i, env)) in part.zip(self.envs[group].iter_mut()).enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Exit::Stopped);
            }
            let action = buf.actions[local];
            let step = guarded(|| env.step(action)).map_err(|cause| Exit::Failed {
                group,
                env: i,
                cause,
            })?;
            buf.obs.extend_from_slice(&step.obs);
            buf.rewards.push(step.reward);
            buf.terminated.push(step.terminated);
            buf.truncated.push(step.truncated);
            buf.frame_numbers.push(step.info.frame_number);
            if let Some(last) = step.final_obs {
                buf.final_obs.push((local, last));
            }
            if let Some(stats) = step.final_info.and_then(|info| info.episode) {
                buf.episodes.push((i, stats));
            }
        }
        debug_assert_eq!(buf.rewards.len(), n);
        let msg = ActorMsg::Stepped {
            thread: self.thread,
            buf,
        };
        Ok(self.results[group].send(msg).is_ok())
    }
}
