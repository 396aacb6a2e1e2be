//! Actor threads that own shards of environments, wired to the driver by crossbeam channels.
//!
//! An [`ActorPool`] runs `N` envs of one type on `T` shard threads (one per core). The envs
//! are split into one group, or two with double buffering; each thread owns a contiguous part
//! of every group. The driver sends a group's actions ([`ActorPool::send_actions`]), each
//! shard steps its part of that group and sends the results up, and the driver gathers them
//! ([`ActorPool::recv`]) as one [`GroupStep`]. With two groups the driver runs inference for
//! one group while the other steps:
//!
//! ```text
//! send(0) send(1) | recv(0) infer(0) send(0) | recv(1) infer(1) send(1) | recv(0) ...
//!                   shards step group 1 .......  shards step group 0 .....
//! ```
//!
//! Envs are created inside their shard thread by the factory `make_env(global_index)` (ALE
//! handles must be created and used on one thread) and are dropped there too. Every env is
//! wrapped in [`envs_api::AutoReset`] (same-step convention): when a step ends an episode, the observation returned is
//! the next episode's first one, the ended episode's last observation is in
//! [`GroupStep::final_obs`], and its statistics (from the env's `info.episode`) are in
//! [`GroupStep::episodes`]. Env `i` is seeded with `seed + i` on the first reset, so results
//! do not depend on the number of threads or on double buffering.
//!
//! # Messages and buffers
//!
//! Down, per shard: `ShardCmd::{Reset, Step { group, buf }}`. Up, per group: `ActorMsg::
//! {Stepped { thread, buf }, Error { env, cause }}`: env errors and panics (caught with
//! `catch_unwind` around every env call) travel as data, naming the env. Each shard's buffers
//! for each group are allocated once and circulate: down with the actions, up with the
//! observations, rewards and flags, kept by the driver until the next `send_actions`.
//!
//! # Failure
//!
//! An env error or panic ends its shard, and the driver's current or next `recv` returns
//! [`ActorError::Env`] with the env index and the cause. A driver waiting on another group
//! wakes every 50 ms, sees the shard's thread has finished, and finds the report on the other
//! channel, so it never waits on a dead shard. After a failure the pool only returns
//! [`ActorError::Failed`]; drop it.
//!
//! # Shutdown protocol
//!
//! 1. The driver drops the pool (after an error, `Stopped`, or normally).
//! 2. `Drop` raises the shared stop flag. A shard checks it before every env step and exits
//!    after at most the env call in progress.
//! 3. `Drop` drops the command senders: a shard idle in `recv` sees `Disconnected` and exits.
//! 4. `Drop` drops the result receivers: a shard's `send` fails (it cannot block, the channels
//!    are sized for one round) and it exits.
//! 5. `Drop` joins every shard thread; each drops its envs on its own thread as it exits.
//!
//! Ctrl-C: the driver's handler sets [`ActorPool::stop_handle`]; shards exit at their next
//! env step and `recv` returns [`ActorError::Stopped`] within 50 ms, so the driver can write
//! its checkpoint and drop the pool. A stopped pool cannot be restarted (create a new one).
//! An env stuck forever inside one call cannot be
//! interrupted; dropping the pool then waits for it.
#![deny(missing_docs)]

mod error;
mod pool;
mod shard;

pub use error::{ActorError, EnvFailure};
pub use pool::{ActorPool, GroupStep, PoolConfig};
