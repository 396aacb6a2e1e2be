//! The shard thread: creates some envs of every group, steps whichever envs of a group it
//! claims first, reports up.

use std::any::Any;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender};
use envs_api::{AutoReset, Env, EnvError, EpisodeStats};

use crate::error::EnvFailure;

/// Every env of the pool, shared by the shard threads. Within a round of a group, each shard
/// claims the group's envs one at a time until none is left, so a shard that is behind
/// (a costly reset, or descheduled by the OS) leaves its share to the others instead of
/// making them wait for it. A claim gives exclusive use of the env for that step; the
/// mutex makes that checkable by the compiler and is never contended.
pub(crate) struct EnvTable<E: Env> {
    /// `slots[i]`: env `i`, once its shard has created it.
    slots: Vec<Mutex<Option<AutoReset<E>>>>,
    /// `claims[g]`: group `g`'s open round (high 32 bits) and the local index of its next
    /// unclaimed env (low 32 bits).
    claims: Vec<AtomicU64>,
}

impl<E: Env> EnvTable<E> {
    pub fn new(num_envs: usize, num_groups: usize) -> Self {
        Self {
            slots: (0..num_envs).map(|_| Mutex::new(None)).collect(),
            claims: (0..num_groups).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Opens round `round` of group `g` with all its envs unclaimed. Only the driver calls
    /// this, while no env of `g` is being stepped (every claim of the last round reported);
    /// claims for earlier rounds fail from now on.
    pub fn open_round(&self, g: usize, round: u32) {
        self.claims[g].store(u64::from(round) << 32, Ordering::Release);
    }

    /// Claims the next env of round `round` of group `g` (`len` envs): its local index, or
    /// `None` when all are claimed or the round is over.
    fn claim(&self, g: usize, round: u32, len: usize) -> Option<usize> {
        let claims = &self.claims[g];
        let mut current = claims.load(Ordering::Acquire);
        loop {
            let next = (current & u64::from(u32::MAX)) as usize;
            if (current >> 32) as u32 != round || next >= len {
                return None;
            }
            match claims.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(next),
                Err(actual) => current = actual,
            }
        }
    }

    /// Env `i`'s slot. Env panics are caught inside the lock, so it is never poisoned by
    /// them; a poisoned lock (a bug here) still holds a usable env.
    fn slot(&self, i: usize) -> MutexGuard<'_, Option<AutoReset<E>>> {
        self.slots[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A shard's results for one round of one group. Allocated once, buffers travel down with
/// the actions and back up with the results, so a step allocates nothing big.
pub(crate) struct ShardBuf<T> {
    /// `[group size]` actions of the whole group, filled by the driver.
    pub actions: Vec<usize>,
    /// Global indices of the envs this shard stepped, in the order of the results below.
    pub envs: Vec<usize>,
    /// `[envs.len() * obs_size]` observations after the step.
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
    /// `(global env index, last obs)` of the episodes that ended this step.
    pub final_obs: Vec<(usize, Vec<T>)>,
    /// `(global env index, stats)` of the real episodes that ended this step.
    pub episodes: Vec<(usize, EpisodeStats)>,
}

impl<T> ShardBuf<T> {
    pub fn new() -> Self {
        Self {
            actions: Vec::new(),
            envs: Vec::new(),
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
// `Step` moves its buffers' handles (~200 bytes) once per step; boxing them would allocate.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ShardCmd<T> {
    /// Reset the envs this shard created (all groups), reporting group `g` as round
    /// `rounds[g]`; the first reset seeds env `i` with `seed + i`.
    Reset {
        /// The round opened for the reset, per group.
        rounds: Vec<u32>,
    },
    /// Step the envs of round `round` of `group` that this shard claims, with `buf.actions`.
    Step {
        /// Group index.
        group: usize,
        /// The round (see [`EnvTable::open_round`]); a shard that comes to the command after
        /// the round is over claims nothing.
        round: u32,
        /// Buffers, with the actions filled in.
        buf: ShardBuf<T>,
    },
}

/// Shard → driver, on the channel of the group concerned. Env failures are data.
pub(crate) enum ActorMsg<T> {
    /// The envs this shard claimed in a round of a group stepped (or were reset); possibly
    /// none. Every command gets one, so the buffers come back.
    Stepped {
        /// The round the results belong to.
        round: u32,
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
pub(crate) struct ShardSetup<E: Env, F> {
    /// `parts[g]`: the global env indices of group `g` this shard creates and resets.
    pub parts: Vec<Range<usize>>,
    /// `groups[g]`: the global env indices of group `g`.
    pub groups: Vec<Range<usize>>,
    pub seed: u64,
    pub make_env: Arc<F>,
    pub table: Arc<EnvTable<E>>,
    pub cmds: Receiver<ShardCmd<E::Elem>>,
    /// `results[g]`: group `g`'s result channel.
    pub results: Vec<Sender<ActorMsg<E::Elem>>>,
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

/// An env missing from its slot (its creation failed, which ends the pool before any step,
/// so this is a bug here).
fn not_created() -> EnvFailure {
    EnvFailure::Error(EnvError::Invalid {
        what: "env".into(),
        why: "it was not created".into(),
    })
}

/// Runs `f`, turning an error or a panic into an `EnvFailure`.
fn guarded<R>(f: impl FnOnce() -> Result<R, EnvError>) -> Result<R, EnvFailure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(EnvFailure::Error(e)),
        Err(payload) => Err(EnvFailure::Panic(panic_message(payload))),
    }
}

/// The body of a shard thread. Creates its part of the envs here (so that creation runs in
/// parallel), reports `InitMsg`, then serves commands until the driver drops the command
/// sender, the stop flag is set, or an env fails.
pub(crate) fn shard_main<E, F>(setup: ShardSetup<E, F>)
where
    E: Env,
    F: Fn(usize) -> Result<E, EnvError> + Send + Sync + 'static,
{
    let ShardSetup {
        parts,
        groups,
        seed,
        make_env,
        table,
        cmds,
        results,
        init,
        stop,
    } = setup;
    for part in &parts {
        for i in part.clone() {
            if stop.load(Ordering::Relaxed) {
                return; // the pool is being dropped (another shard failed to start)
            }
            match guarded(|| make_env(i)) {
                Ok(env) => *table.slot(i) = Some(AutoReset::new(env)),
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
    }
    drop(make_env);
    let first_env = parts.first().map_or(0, |p| p.start);
    let ready = match guarded(|| Ok(spaces(&parts, &table))) {
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
        parts,
        groups,
        seed,
        table,
        results,
        stop,
        seeded: false,
    };
    // Serve until the driver drops its sender (the normal shutdown) or a send up fails.
    for cmd in cmds.iter() {
        let outcome = match cmd {
            ShardCmd::Reset { rounds } => shard.on_reset(&rounds),
            ShardCmd::Step { group, round, buf } => shard.on_step(group, round, buf),
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

/// The observation shape and number of actions shared by all the envs the shard created.
fn spaces<E: Env>(parts: &[Range<usize>], table: &EnvTable<E>) -> Result<Spaces, (usize, String)> {
    let mut found: Option<(usize, Spaces)> = None;
    for part in parts {
        for i in part.clone() {
            let slot = table.slot(i);
            let Some(env) = slot.as_ref() else {
                return Err((i, "the env was not created".into()));
            };
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
    parts: Vec<Range<usize>>,
    groups: Vec<Range<usize>>,
    seed: u64,
    table: Arc<EnvTable<E>>,
    results: Vec<Sender<ActorMsg<E::Elem>>>,
    stop: Arc<AtomicBool>,
    seeded: bool,
}

impl<E: Env> Shard<E> {
    /// Resets the envs this shard created; sends one `Stepped` per group. `Ok(false)`: the
    /// driver is gone.
    fn on_reset(&mut self, rounds: &[u32]) -> Result<bool, Exit> {
        let seeded = std::mem::replace(&mut self.seeded, true);
        for (g, &round) in rounds.iter().enumerate() {
            let part = self.parts[g].clone();
            let mut buf = ShardBuf::new();
            for i in part {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(Exit::Stopped);
                }
                let seed = (!seeded).then(|| self.seed.wrapping_add(i as u64));
                let mut slot = self.table.slot(i);
                let result = match slot.as_mut() {
                    Some(env) => guarded(|| env.reset(seed)),
                    None => Err(not_created()),
                };
                let (obs, info) = result.map_err(|cause| Exit::Failed {
                    group: g,
                    env: i,
                    cause,
                })?;
                buf.envs.push(i);
                buf.obs.extend_from_slice(&obs);
                buf.rewards.push(0.0);
                buf.terminated.push(false);
                buf.truncated.push(false);
                buf.frame_numbers.push(info.frame_number);
            }
            let msg = ActorMsg::Stepped { round, buf };
            if self.results[g].send(msg).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Steps the envs of round `round` of `group` this shard claims, with `buf.actions`;
    /// sends the results (possibly none) up.
    fn on_step(
        &mut self,
        group: usize,
        round: u32,
        mut buf: ShardBuf<E::Elem>,
    ) -> Result<bool, Exit> {
        let envs = self.groups[group].clone();
        buf.envs.clear();
        buf.obs.clear();
        buf.rewards.clear();
        buf.terminated.clear();
        buf.truncated.clear();
        buf.frame_numbers.clear();
        buf.final_obs.clear();
        buf.episodes.clear();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Exit::Stopped);
            }
            let Some(local) = self.table.claim(group, round, envs.len()) else {
                break;
            };
            let i = envs.start + local;
            let action = buf.actions[local];
            let mut slot = self.table.slot(i);
            let result = match slot.as_mut() {
                Some(env) => guarded(|| env.step(action)),
                None => Err(not_created()),
            };
            drop(slot);
            let step = result.map_err(|cause| Exit::Failed {
                group,
                env: i,
                cause,
            })?;
            buf.envs.push(i);
            buf.obs.extend_from_slice(&step.obs);
            buf.rewards.push(step.reward);
            buf.terminated.push(step.terminated);
            buf.truncated.push(step.truncated);
            buf.frame_numbers.push(step.info.frame_number);
            if let Some(last) = step.final_obs {
                buf.final_obs.push((i, last));
            }
            if let Some(stats) = step.final_info.and_then(|info| info.episode) {
                buf.episodes.push((i, stats));
            }
        }
        let msg = ActorMsg::Stepped { round, buf };
        Ok(self.results[group].send(msg).is_ok())
    }
}
