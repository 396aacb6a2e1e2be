//! The actor pool against a sequential reference, and its failure behaviour, with fake envs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actors::{ActorError, ActorPool, EnvFailure, GroupStep, PoolConfig};
use crossbeam_channel::{bounded, Receiver, Sender};
use envs_api::{cartpole_v1, Dtype, Env, EnvError, EpisodeStats, Info, Space, Step, VecEnv};

const OBS: usize = 3;
const ACTIONS: usize = 4;

/// What a fake env does at its `at`-th step (counted over its whole life).
#[derive(Clone)]
enum Fault {
    None,
    Panic {
        at: u64,
    },
    Error {
        at: u64,
    },
    /// Blocks at step `at` until the gate's sender is dropped; says so on `entered` first.
    Gate {
        at: u64,
        gate: Receiver<()>,
        entered: Sender<()>,
    },
}

/// A deterministic env: a seeded LCG drives observations, rewards and episode ends.
struct Fake {
    rng: u64,
    t: u64,
    ret: f64,
    steps: u64,
    needs_reset: bool,
    fault: Fault,
    obs_size: usize,
    _live: Arc<()>,
}

impl Fake {
    fn new(fault: Fault, live: &Arc<()>) -> Self {
        let live = Arc::clone(live);
        Self {
            rng: 1,
            t: 0,
            ret: 0.0,
            steps: 0,
            needs_reset: true,
            fault,
            obs_size: OBS,
            _live: live,
        }
    }
    fn next(&mut self) -> u64 {
        self.rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.rng >> 33
    }
    fn obs(&mut self, action: usize) -> Vec<f32> {
        let mut obs = vec![(self.next() % 1000) as f32, self.t as f32, action as f32];
        obs.resize(self.obs_size, 0.5);
        obs
    }
}

impl Env for Fake {
    type Elem = f32;
    fn observation_space(&self) -> Space {
        Space::Box {
            shape: vec![self.obs_size],
            dtype: Dtype::F32,
            low: f32::MIN,
            high: f32::MAX,
        }
    }
    fn action_space(&self) -> Space {
        Space::Discrete(ACTIONS)
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<f32>, Info), EnvError> {
        if let Some(s) = seed {
            self.rng = s.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        }
        self.t = 0;
        self.ret = 0.0;
        self.needs_reset = false;
        Ok((self.obs(ACTIONS), Info::default()))
    }
    fn step(&mut self, action: usize) -> Result<Step<f32>, EnvError> {
        if self.needs_reset {
            return Err(EnvError::NeedsReset);
        }
        match &self.fault {
            Fault::Panic { at } if *at == self.steps => panic!("fake env exploded at step {at}"),
            Fault::Error { at } if *at == self.steps => {
                return Err(EnvError::Backend(format!(
                    "fake backend failure at step {at}"
                )))
            }
            Fault::Gate { at, gate, entered } if *at == self.steps => {
                let _ = entered.send(());
                let _ = gate.recv();
            }
            _ => {}
        }
        self.steps += 1;
        self.t += 1;
        let reward = (self.next() % 7) as f32 - 3.0 + action as f32;
        self.ret += f64::from(reward);
        let terminated = self.next().is_multiple_of(9);
        let truncated = !terminated && self.t >= 12;
        self.needs_reset = terminated || truncated;
        let episode = self.needs_reset.then_some(EpisodeStats {
            ret: self.ret,
            len: self.t,
        });
        let info = Info {
            episode,
            ..Info::default()
        };
        Ok(Step {
            obs: self.obs(action),
            reward,
            terminated,
            truncated,
            info,
        })
    }
}

fn action(env: usize, t: usize) -> usize {
    (env * 7 + t * 3 + t / 5) % ACTIONS
}

/// What the driver sees for one env at one step.
#[derive(Debug, PartialEq)]
struct Seen {
    obs: Vec<f32>,
    reward: f32,
    terminated: bool,
    truncated: bool,
    final_obs: Option<Vec<f32>>,
    episode: Option<EpisodeStats>,
}

/// Env `i` alone, seeded `seed + i`, auto-reset by hand: `[step][env]`.
fn sequential_reference(n: usize, seed: u64, steps: usize) -> (Vec<Vec<f32>>, Vec<Vec<Seen>>) {
    let live = Arc::new(());
    let mut first = Vec::new();
    let mut seen: Vec<Vec<Seen>> = (0..steps).map(|_| Vec::new()).collect();
    for i in 0..n {
        let mut env = Fake::new(Fault::None, &live);
        first.push(env.reset(Some(seed + i as u64)).expect("reset").0);
        for (t, row) in seen.iter_mut().enumerate() {
            let s = env.step(action(i, t)).expect("step");
            let ended = s.terminated || s.truncated;
            let (obs, final_obs) = if ended {
                (env.reset(None).expect("reset").0, Some(s.obs))
            } else {
                (s.obs, None)
            };
            row.push(Seen {
                obs,
                reward: s.reward,
                terminated: s.terminated,
                truncated: s.truncated,
                final_obs,
                episode: s.info.episode,
            });
        }
    }
    (first, seen)
}

fn config(num_envs: usize, num_threads: usize, double_buffer: bool) -> PoolConfig {
    PoolConfig {
        num_envs,
        num_threads,
        double_buffer,
        seed: 100,
    }
}

fn seen_of(step: &GroupStep<f32>, n_obs: usize) -> Vec<Seen> {
    (0..step.envs.len())
        .map(|k| Seen {
            obs: step.obs[k * n_obs..(k + 1) * n_obs].to_vec(),
            reward: step.rewards[k],
            terminated: step.terminated[k],
            truncated: step.truncated[k],
            final_obs: step.final_obs[k].clone(),
            episode: step
                .episodes
                .iter()
                .find(|(e, _)| *e == step.envs.start + k)
                .map(|(_, s)| *s),
        })
        .collect()
}

/// Drives the pool as a double-buffered trainer would; returns `[step][env]`.
fn run_pool<E: Env<Elem = f32>>(
    pool: &mut ActorPool<E>,
    steps: usize,
) -> Result<Vec<Vec<Seen>>, ActorError> {
    let n = pool.num_envs();
    let mut seen: Vec<Vec<Option<Seen>>> =
        (0..steps).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut t_of = vec![0usize; pool.num_groups()];
    for g in 0..pool.num_groups() {
        let actions: Vec<usize> = pool.group_envs(g).map(|i| action(i, 0)).collect();
        pool.send_actions(g, &actions)?;
    }
    let mut step = GroupStep::default();
    while t_of.iter().any(|&t| t < steps) {
        for g in 0..pool.num_groups() {
            if t_of[g] == steps {
                continue;
            }
            pool.recv_into(g, &mut step)?;
            assert_eq!(step.envs, pool.group_envs(g));
            for k in 0..step.envs.len() {
                assert_eq!(
                    step.done(k),
                    step.final_obs[k].is_some(),
                    "final_obs exactly where done"
                );
            }
            for (k, s) in seen_of(&step, pool.obs_size()).into_iter().enumerate() {
                seen[t_of[g]][step.envs.start + k] = Some(s);
            }
            t_of[g] += 1;
            if t_of[g] < steps {
                let actions: Vec<usize> = pool.group_envs(g).map(|i| action(i, t_of[g])).collect();
                pool.send_actions(g, &actions)?;
            }
        }
    }
    Ok(seen
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|s| s.expect("every env stepped"))
                .collect()
        })
        .collect())
}

#[test]
fn matches_a_sequential_reference_for_any_threads_and_buffering() {
    let (n, steps) = (7, 40);
    let (first, reference) = sequential_reference(n, 100, steps);
    let ends = reference
        .iter()
        .flatten()
        .filter(|s| s.final_obs.is_some())
        .count();
    let truncations = reference.iter().flatten().filter(|s| s.truncated).count();
    assert!(
        ends > 5 && truncations > 0,
        "the reference must cover episode ends ({ends}, {truncations})"
    );
    for (threads, double_buffer) in [
        (1, false),
        (2, false),
        (1, true),
        (2, true),
        (3, true),
        (8, false),
    ] {
        let live = Arc::new(());
        let l = Arc::clone(&live);
        let mut pool = ActorPool::new(config(n, threads, double_buffer), move |_| {
            Ok(Fake::new(Fault::None, &l))
        })
        .expect("pool");
        assert_eq!(
            (pool.obs_size(), pool.obs_shape(), pool.num_actions()),
            (OBS, &[OBS][..], ACTIONS)
        );
        assert_eq!(pool.num_groups(), if double_buffer { 2 } else { 1 });
        let obs = pool.reset().expect("reset");
        assert_eq!(
            obs,
            first.concat(),
            "reset obs, threads {threads}, double buffer {double_buffer}"
        );
        let seen = run_pool(&mut pool, steps).expect("run");
        assert_eq!(
            seen, reference,
            "threads {threads}, double buffer {double_buffer}"
        );
        drop(pool);
        assert_eq!(
            Arc::strong_count(&live),
            1,
            "every env dropped, every thread joined"
        );
    }
}

#[test]
fn cartpole_matches_the_sequential_vec_env() {
    let (n, steps, seed) = (5, 120, 100);
    let mut reference = VecEnv::new((0..n).map(|_| cartpole_v1()).collect()).expect("vec env");
    let first = reference.reset(Some(seed)).expect("reset");
    let expected: Vec<Vec<Seen>> = (0..steps)
        .map(|t| {
            let actions: Vec<usize> = (0..n).map(|i| action(i, t) % 2).collect();
            let s = reference.step(&actions).expect("step");
            (0..n)
                .map(|i| Seen {
                    obs: s.obs[i * 4..(i + 1) * 4].to_vec(),
                    reward: s.rewards[i],
                    terminated: s.terminated[i],
                    truncated: s.truncated[i],
                    final_obs: s.final_obs[i].clone(),
                    episode: s.episodes[i],
                })
                .collect()
        })
        .collect();
    let episodes = expected
        .iter()
        .flatten()
        .filter(|s| s.episode.is_some())
        .count();
    assert!(
        episodes >= n,
        "episodes must end in the reference ({episodes})"
    );
    for (threads, double_buffer) in [(1, false), (2, true), (2, false)] {
        let mut pool = ActorPool::new(config(n, threads, double_buffer), |_| {
            Ok(CartPole2(cartpole_v1()))
        })
        .expect("pool");
        assert_eq!(pool.reset().expect("reset"), first);
        let seen = run_pool(&mut pool, steps).expect("run");
        assert_eq!(
            seen, expected,
            "threads {threads}, double buffer {double_buffer}"
        );
    }
}

/// CartPole with the actions of `action()` folded into its two.
struct CartPole2(envs_api::CartPoleV1);

impl Env for CartPole2 {
    type Elem = f32;
    fn observation_space(&self) -> Space {
        self.0.observation_space()
    }
    fn action_space(&self) -> Space {
        Space::Discrete(ACTIONS)
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<f32>, Info), EnvError> {
        self.0.reset(seed)
    }
    fn step(&mut self, action: usize) -> Result<Step<f32>, EnvError> {
        self.0.step(action % 2)
    }
}

#[test]
fn groups_partition_the_envs() {
    let live = Arc::new(());
    let pool = ActorPool::new(config(9, 2, true), move |_| {
        Ok(Fake::new(Fault::None, &live))
    })
    .expect("pool");
    assert_eq!((pool.group_envs(0), pool.group_envs(1)), (0..4, 4..9));
    assert_eq!(pool.num_threads(), 2);
}

/// Runs `f` on another thread and waits for it at most 20 s, so that a deadlock fails the test
/// instead of hanging it.
fn with_deadline<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the pool deadlocked")
}

fn faulty(
    n: usize,
    faults: Vec<(usize, Fault)>,
    live: &Arc<()>,
) -> impl Fn(usize) -> Result<Fake, EnvError> {
    let live = Arc::clone(live);
    move |i| {
        let fault = faults
            .iter()
            .find(|(e, _)| *e == i)
            .map_or(Fault::None, |(_, f)| f.clone());
        assert!(i < n);
        Ok(Fake::new(fault, &live))
    }
}

#[test]
fn an_env_error_reaches_the_driver_naming_the_env() {
    let live = Arc::new(());
    let make = faulty(6, vec![(4, Fault::Error { at: 3 })], &live);
    let err = with_deadline(move || {
        let mut pool = ActorPool::new(config(6, 2, true), make).expect("pool");
        pool.reset().expect("reset");
        let err = run_pool(&mut pool, 10).expect_err("env 4 fails");
        let later = pool.reset().expect_err("the pool is failed");
        assert!(matches!(later, ActorError::Failed(_)), "{later}");
        err
    });
    match err {
        ActorError::Env {
            env: 4,
            cause: EnvFailure::Error(EnvError::Backend(msg)),
        } => {
            assert!(msg.contains("at step 3"), "{msg}")
        }
        other => panic!("expected env 4's backend error, got {other}"),
    }
    assert_eq!(Arc::strong_count(&live), 1);
}

#[test]
fn an_env_panic_reaches_the_driver_naming_the_env_and_the_cause() {
    let live = Arc::new(());
    for double_buffer in [false, true] {
        let make = faulty(5, vec![(1, Fault::Panic { at: 2 })], &live);
        let err = with_deadline(move || {
            let mut pool = ActorPool::new(config(5, 2, double_buffer), make).expect("pool");
            pool.reset().expect("reset");
            run_pool(&mut pool, 10).expect_err("env 1 panics")
        });
        assert!(
            matches!(
                err,
                ActorError::Env {
                    env: 1,
                    cause: EnvFailure::Panic(_)
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("fake env exploded at step 2"),
            "{err}"
        );
    }
    assert_eq!(Arc::strong_count(&live), 1);
}

#[test]
fn a_failure_is_reported_while_another_shard_is_stuck() {
    // One group, two threads: env 0 (thread 0) panics while env 3 (thread 1) is stuck inside
    // a step. The driver must not wait for the stuck shard.
    let live = Arc::new(());
    let (gate_tx, gate_rx) = bounded::<()>(0);
    let (entered_tx, _entered_rx) = bounded::<()>(1);
    let stuck = Fault::Gate {
        at: 2,
        gate: gate_rx,
        entered: entered_tx,
    };
    let make = faulty(4, vec![(0, Fault::Panic { at: 2 }), (3, stuck)], &live);
    let (result_tx, result_rx) = bounded(1);
    let driver = std::thread::spawn(move || {
        let mut pool = ActorPool::new(config(4, 2, false), make).expect("pool");
        pool.reset().expect("reset");
        let _ = result_tx.send(run_pool(&mut pool, 10).expect_err("env 0 panics"));
        drop(pool); // joins once the gate opens
    });
    let err = result_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the pool waited on the stuck shard");
    assert!(
        matches!(
            err,
            ActorError::Env {
                env: 0,
                cause: EnvFailure::Panic(_)
            }
        ),
        "{err}"
    );
    drop(gate_tx);
    driver.join().expect("driver thread");
    assert_eq!(Arc::strong_count(&live), 1);
}

#[test]
fn a_failure_in_the_other_group_is_found_while_waiting() {
    // Double buffered, two threads: group 0 = {0 (thread 0), 1 (thread 1)}, group 1 = {2 (thread
    // 0), 3 (thread 1)}. Env 1 is stuck, so group 0 never completes; env 2 then panics in group
    // 1. The driver waiting on group 0 must notice thread 0 has ended and report env 2.
    let live = Arc::new(());
    let (gate_tx, gate_rx) = bounded::<()>(0);
    let (entered_tx, _entered_rx) = bounded::<()>(1);
    let stuck = Fault::Gate {
        at: 2,
        gate: gate_rx,
        entered: entered_tx,
    };
    let make = faulty(4, vec![(1, stuck), (2, Fault::Panic { at: 2 })], &live);
    let (result_tx, result_rx) = bounded(1);
    let driver = std::thread::spawn(move || {
        let mut pool = ActorPool::new(config(4, 2, true), make).expect("pool");
        pool.reset().expect("reset");
        let _ = result_tx.send(run_pool(&mut pool, 10).expect_err("env 2 panics"));
        drop(pool);
    });
    let err = result_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the pool deadlocked");
    assert!(
        matches!(
            err,
            ActorError::Env {
                env: 2,
                cause: EnvFailure::Panic(_)
            }
        ),
        "{err}"
    );
    drop(gate_tx);
    driver.join().expect("driver thread");
    assert_eq!(Arc::strong_count(&live), 1);
}

#[test]
fn a_slow_env_only_delays_the_results() {
    let (n, steps) = (4, 8);
    let (_, reference) = sequential_reference(n, 100, steps);
    let live = Arc::new(());
    let (gate_tx, gate_rx) = bounded::<()>(0);
    let (entered_tx, entered_rx) = bounded::<()>(1);
    let slow = Fault::Gate {
        at: 3,
        gate: gate_rx,
        entered: entered_tx,
    };
    let make = faulty(n, vec![(2, slow)], &live);
    // Open the gate only once env 2 is inside its slow step, while the driver waits.
    let opener = std::thread::spawn(move || {
        entered_rx.recv().expect("env 2 reaches its slow step");
        drop(gate_tx);
    });
    let seen = with_deadline(move || {
        let mut pool = ActorPool::new(config(n, 2, true), make).expect("pool");
        pool.reset().expect("reset");
        run_pool(&mut pool, steps).expect("a slow env is not an error")
    });
    opener.join().expect("opener");
    assert_eq!(seen, reference);
    assert_eq!(Arc::strong_count(&live), 1);
}

#[test]
fn dropping_the_pool_joins_every_thread_even_mid_step() {
    let live = Arc::new(());
    let l = Arc::clone(&live);
    let mut pool =
        ActorPool::new(config(6, 3, true), move |_| Ok(Fake::new(Fault::None, &l))).expect("pool");
    pool.reset().expect("reset");
    pool.send_actions(0, &[0, 1, 2]).expect("send");
    pool.send_actions(1, &[3, 2, 1]).expect("send");
    assert_eq!(Arc::strong_count(&live), 7);
    drop(pool);
    assert_eq!(Arc::strong_count(&live), 1);
}

#[test]
fn the_stop_flag_makes_recv_return_stopped() {
    let live = Arc::new(());
    let l = Arc::clone(&live);
    let stopped = with_deadline(move || {
        let mut pool = ActorPool::new(config(4, 2, true), move |_| Ok(Fake::new(Fault::None, &l)))
            .expect("pool");
        pool.reset().expect("reset");
        pool.send_actions(0, &[0, 1]).expect("send");
        pool.stop_handle().store(true, Ordering::Relaxed);
        let recv = pool.recv(0).expect_err("stopped");
        let send = pool.send_actions(1, &[0, 1]).expect_err("stopped");
        (recv, send)
    });
    assert!(
        matches!(stopped, (ActorError::Stopped, ActorError::Stopped)),
        "{stopped:?}"
    );
    assert_eq!(Arc::strong_count(&live), 1);
}

#[test]
fn a_stop_from_another_thread_ends_a_waiting_recv() {
    // As a Ctrl-C handler would: the driver waits on a group whose env 1 is stuck; another
    // thread raises the stop flag; recv returns `Stopped` instead of waiting on.
    let live = Arc::new(());
    let (gate_tx, gate_rx) = bounded::<()>(0);
    let (entered_tx, entered_rx) = bounded::<()>(1);
    let stuck = Fault::Gate {
        at: 0,
        gate: gate_rx,
        entered: entered_tx,
    };
    let make = faulty(4, vec![(1, stuck)], &live);
    let mut pool = ActorPool::new(config(4, 2, true), make).expect("pool");
    let stop = pool.stop_handle();
    pool.reset().expect("reset");
    pool.send_actions(0, &[0, 1]).expect("send");
    let handler = std::thread::spawn(move || {
        entered_rx.recv().expect("env 1 is stuck in its step");
        stop.store(true, Ordering::Relaxed);
    });
    let (result_tx, result_rx) = bounded(1);
    let driver = std::thread::spawn(move || {
        let _ = result_tx.send(pool.recv(0).map(|_| ()));
        drop(pool); // joins once the gate opens
    });
    let result = result_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("recv ignored the stop flag");
    assert!(matches!(result, Err(ActorError::Stopped)), "{result:?}");
    drop(gate_tx);
    handler.join().expect("handler");
    driver.join().expect("driver");
    assert_eq!(Arc::strong_count(&live), 1);
}

#[test]
fn creation_failures_name_the_env_and_leave_no_thread() {
    let live = Arc::new(());
    let l = Arc::clone(&live);
    let err = ActorPool::new(config(6, 2, true), move |i| {
        if i == 4 {
            return Err(EnvError::Invalid {
                what: "game".into(),
                why: "no such game".into(),
            });
        }
        Ok(Fake::new(Fault::None, &l))
    })
    .err()
    .expect("env 4 cannot be created");
    assert!(
        matches!(
            err,
            ActorError::Create {
                env: 4,
                cause: EnvFailure::Error(_)
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no such game"), "{err}");

    let l = Arc::clone(&live);
    let err = ActorPool::new(config(3, 1, false), move |i| {
        assert!(i != 1, "factory bug at {i}");
        Ok(Fake::new(Fault::None, &l))
    })
    .err()
    .expect("env 1's factory panics");
    assert!(
        matches!(
            err,
            ActorError::Create {
                env: 1,
                cause: EnvFailure::Panic(_)
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("factory bug at 1"), "{err}");
    assert_eq!(Arc::strong_count(&live), 1);
}

#[test]
fn envs_with_different_spaces_are_refused() {
    let live = Arc::new(());
    let err = ActorPool::new(config(4, 2, false), move |i| {
        let mut env = Fake::new(Fault::None, &live);
        env.obs_size = if i == 3 { 5 } else { OBS };
        Ok(env)
    })
    .err()
    .expect("mismatched spaces");
    assert!(matches!(err, ActorError::Space { env: 3, .. }), "{err}");
    assert!(err.to_string().contains("[5]"), "{err}");

    // Across shards: each shard is consistent, the driver compares them.
    let live = Arc::new(());
    let err = ActorPool::new(config(2, 2, false), move |i| {
        let mut env = Fake::new(Fault::None, &live);
        env.obs_size = if i == 1 { 5 } else { OBS };
        Ok(env)
    })
    .err()
    .expect("mismatched spaces");
    assert!(matches!(err, ActorError::Space { env: 0 | 1, .. }), "{err}");
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let live = Arc::new(());
    let l = Arc::clone(&live);
    let bad = ActorPool::new(config(1, 1, true), move |_| Ok(Fake::new(Fault::None, &l))).err();
    assert!(
        matches!(
            bad,
            Some(ActorError::InvalidConfig {
                what: "num_envs",
                ..
            })
        ),
        "{bad:?}"
    );

    let l = Arc::clone(&live);
    let mut pool =
        ActorPool::new(config(4, 2, true), move |_| Ok(Fake::new(Fault::None, &l))).expect("pool");
    assert!(
        matches!(pool.send_actions(0, &[0, 0]), Err(ActorError::Protocol(_))),
        "before reset"
    );
    pool.reset().expect("reset");
    assert!(
        matches!(pool.recv(0), Err(ActorError::Protocol(_))),
        "nothing in flight"
    );
    assert!(
        matches!(pool.send_actions(0, &[0]), Err(ActorError::Protocol(_))),
        "wrong length"
    );
    assert!(
        matches!(pool.send_actions(2, &[0, 0]), Err(ActorError::Protocol(_))),
        "no group 2"
    );
    let err = pool
        .send_actions(1, &[0, ACTIONS])
        .expect_err("out of range");
    assert!(
        matches!(
            err,
            ActorError::InvalidAction {
                env: 3,
                action: ACTIONS,
                n: ACTIONS
            }
        ),
        "{err}"
    );
    pool.send_actions(1, &[0, 1]).expect("send");
    assert!(
        matches!(pool.send_actions(1, &[0, 1]), Err(ActorError::Protocol(_))),
        "twice"
    );
    assert!(
        matches!(pool.reset(), Err(ActorError::Protocol(_))),
        "reset while in flight"
    );
    let step = pool.recv(1).expect("the pool still works");
    assert_eq!(step.envs, 2..4);
}
