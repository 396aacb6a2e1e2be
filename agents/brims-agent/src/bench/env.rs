//! `brims bench env` (see ../shared/ARCHITECTURE.md, "Commands"): raw ALE frames/s on one
//! thread, then the actor pool over preprocessed Atari envs driven with random actions.
//!
//! Preprocessed envs' frames are counted two ways: agent steps × frame skip (`frames_per_sec`)
//! and the frames the emulator ran by ALE's counter (`emulated_frames_per_sec`), which adds
//! the frames of resets (no-op starts, FIRE, the no-op step after a lost life; ~10% more on
//! random Breakout). Raw ALE's frames are emulated frames, so the emulated figure is the one
//! to compare with it (`ratio_emulated_to_threads_x_raw`); both are reported.
//!
//! The anchor is EnvPool, measured in the same rounds when a Python with `envpool` is given
//! (see [`super::anchor`]): the same game, number of envs and threads and the same Atari settings
//! as our pool, in EnvPool's async mode with batches of half the envs (its best configuration
//! here, issue 2). Its frames are counted as ours are: agent steps × frame skip.

use std::time::{Duration, Instant};

use actors::{ActorPool, GroupStep, PoolConfig};
use anyhow::Context;
use clap::Args;
use envs_api::{Env, EnvError};
use envs_atari::{make_atari, AtariConfig, AtariEnv, RawAle};
use serde_json::json;

use super::anchor::{self, Anchor, AnchorArgs, Worker};

/// Source of the EnvPool worker (see its docstring).
const ENVPOOL_WORKER: &str = include_str!("anchors/envpool_worker.py");

/// Arguments of `brims bench env`.
#[derive(Args, Debug, Clone)]
pub(crate) struct EnvArgs {
    /// Game (a bundled name such as `Breakout` or `ALE/Breakout-v5`).
    #[arg(long, default_value = "Breakout")]
    game: String,
    /// Number of preprocessed envs in the pool.
    #[arg(long, default_value_t = 16)]
    envs: usize,
    /// Shard threads (one per core); 0 = one per available core.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds for each measurement (raw ALE, one preprocessed env, the pool), interleaved.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Step all envs as one group instead of two alternating groups.
    #[arg(long)]
    no_double_buffer: bool,
    /// Also measure the other buffering mode (adds one more measurement of `seconds`).
    #[arg(long)]
    compare_buffering: bool,
    /// Env `i` is seeded with `seed + i`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    anchor: AnchorArgs,
}

/// Measurements are interleaved in this many rounds, so that load from other processes
/// drifting during the run affects every figure alike.
const ROUNDS: u32 = 5;

/// Time and work accumulated by one kind of measurement.
#[derive(Default)]
struct Tally {
    /// Agent steps × frame skip: the frames the agent acted on.
    frames: f64,
    /// Frames the emulator ran, by ALE's counter: `frames` plus every reset's frames (no-op
    /// starts, FIRE, the no-op step after a lost life). Raw ALE's frames are of this kind.
    emulated: f64,
    secs: f64,
    /// CPU seconds of the whole process (all threads) while measuring.
    cpu_secs: f64,
    episodes: usize,
}

impl Tally {
    fn frames_per_sec(&self) -> f64 {
        self.frames / self.secs.max(1e-9)
    }
    fn emulated_per_sec(&self) -> f64 {
        self.emulated / self.secs.max(1e-9)
    }
    /// Frames per CPU-second: the cost of a frame, independent of other processes' load.
    fn frames_per_cpu_sec(&self) -> f64 {
        self.frames / self.cpu_secs.max(1e-9)
    }
    fn emulated_per_cpu_sec(&self) -> f64 {
        self.emulated / self.cpu_secs.max(1e-9)
    }
}

/// User + system CPU seconds used by this process so far (Linux `/proc/self/stat`, 10 ms
/// resolution); 0 where unavailable.
fn process_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name start at field 3; utime and stime are 14
    // and 15, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// Runs `f`, adding the process CPU time it used to `tally`.
fn with_cpu<R>(tally: &mut Tally, f: impl FnOnce(&mut Tally) -> R) -> R {
    let before = process_cpu_secs();
    let r = f(tally);
    tally.cpu_secs += process_cpu_secs() - before;
    r
}

/// A pool under test, with its measurements.
struct PoolUnderTest {
    pool: ActorPool<AtariEnv>,
    double_buffer: bool,
    tally: Tally,
    /// Each env's emulator frame count as last received.
    frame_numbers: Vec<u64>,
}

/// Runs the benchmark; returns the JSON object printed as the last line.
pub(crate) fn run(args: &EnvArgs) -> anyhow::Result<serde_json::Value> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        anyhow::bail!("--seconds must be a positive number, got {}", args.seconds);
    }
    let cfg = AtariConfig::default();
    let frame_skip = f64::from(cfg.frame_skip);
    let chunk = args.seconds / f64::from(ROUNDS);

    let double_buffer = !args.no_double_buffer;
    let mut modes = vec![double_buffer];
    if args.compare_buffering {
        modes.push(!double_buffer);
    }
    let mut pools = Vec::new();
    for &db in &modes {
        let mut pool = start_pool(args, &cfg, db)?;
        pool.reset()?;
        // Warm-up: fill caches, let every env leave its reset, learn the frame counts.
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D ^ args.seed);
        let mut frame_numbers = vec![0; pool.num_envs()];
        let warm_up = Duration::from_secs_f64(chunk.min(0.5));
        drive(&mut pool, &mut rng, warm_up, &mut frame_numbers)?;
        pools.push(PoolUnderTest {
            pool,
            double_buffer: db,
            tally: Tally::default(),
            frame_numbers,
        });
    }
    // Created once: loading a ROM costs tens of milliseconds, which the CPU figures would
    // otherwise count.
    let mut raw_ale =
        RawAle::new(&args.game).with_context(|| format!("raw ALE on {}", args.game))?;
    let mut single = make_atari(&args.game, &cfg, args.seed)
        .with_context(|| format!("creating {}", args.game))?;
    single.reset(Some(args.seed))?;
    let threads = pools[0].pool.num_threads();
    let mut envpool = start_envpool(args, &cfg, single.game(), threads, chunk);
    let mut envpool_tally = Tally::default();

    println!(
        "{}: raw ALE (1 thread), preprocessed env (1 thread), actor pool ({} envs){}; \
         {ROUNDS} interleaved rounds of {chunk:.1} s each",
        args.game,
        args.envs,
        if matches!(envpool, EnvPoolRun::Running(..)) {
            ", EnvPool"
        } else {
            ""
        },
    );
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ args.seed);
    let (mut raw, mut pre, mut free) = (Tally::default(), Tally::default(), Tally::default());
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let free_runners = spawn_free_runners(scope, args, &cfg, threads)?;
        for _ in 0..ROUNDS {
            let rate = with_cpu(&mut raw, |_| raw_ale.frames_per_sec(chunk))
                .with_context(|| format!("raw ALE benchmark on {}", args.game))?;
            // Raw ALE has no resets of its own to hide: every frame is an acted frame.
            raw.frames += rate * chunk;
            raw.emulated += rate * chunk;
            raw.secs += chunk;
            with_cpu(&mut pre, |t| {
                step_single(&mut single, &mut rng, chunk, frame_skip, t)
            })?;
            with_cpu(&mut free, |t| free_runners.run(chunk, t))?;
            for p in &mut pools {
                let budget = Duration::from_secs_f64(chunk);
                let frame_numbers = &mut p.frame_numbers;
                let run = with_cpu(&mut p.tally, |_| {
                    drive(&mut p.pool, &mut rng, budget, frame_numbers)
                })?;
                p.tally.frames += run.steps as f64 * frame_skip;
                p.tally.emulated += run.emulated as f64;
                p.tally.secs += run.secs;
                p.tally.episodes += run.episodes;
            }
            if let EnvPoolRun::Running(worker, info) = &mut envpool {
                match worker.request(&chunk.to_string()) {
                    Ok(r) => {
                        let num = |k: &str| r[k].as_f64().unwrap_or(0.0);
                        envpool_tally.frames += num("steps") * frame_skip;
                        envpool_tally.secs += num("secs");
                        envpool_tally.cpu_secs += num("cpu_secs");
                    }
                    Err(e) => {
                        let info = info.clone();
                        envpool = EnvPoolRun::Failed(Anchor::skipped(
                            "envpool",
                            format!("failed while measuring ({e}); started as {info}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    })?;
    let raw_fps = raw.frames_per_sec();
    println!(
        "Frames are counted two ways: \"steps x {frame_skip}\" (agent steps times the frame skip) \
         and \"emulated\" (ALE's frame counter: also the frames of resets, which the \
         emulator runs as well). Raw ALE's frames are emulated frames."
    );
    println!(
        "raw ALE: {raw_fps:.0} frames/s (1 thread), {:.0} frames per CPU-second",
        raw.frames_per_cpu_sec()
    );
    println!(
        "preprocessed env (1 thread): steps x {frame_skip}: {:.0} frames/s ({:.1}% of raw); \
         emulated: {:.0} frames/s ({:.1}% of raw), {:.0} per CPU-second",
        pre.frames_per_sec(),
        100.0 * pre.frames_per_sec() / raw_fps,
        pre.emulated_per_sec(),
        100.0 * pre.emulated_per_sec() / raw_fps,
        pre.emulated_per_cpu_sec(),
    );
    println!(
        "{threads} unsynchronised threads, one preprocessed env each: steps x {frame_skip}: \
         {:.0} frames/s; emulated: {:.0} frames/s (what this machine gives {threads} threads \
         now; the pool's ceiling)",
        free.frames_per_sec(),
        free.emulated_per_sec()
    );
    for p in &pools {
        report(args, p, raw_fps, frame_skip);
        println!(
            "  {:.1}% of the {threads} unsynchronised threads (emulated frames; target >= 95%)",
            100.0 * p.tally.emulated_per_sec() / free.emulated_per_sec()
        );
        println!(
            "  {:.0} emulated frames per CPU-second ({:.1}% of one preprocessed env on one thread)",
            p.tally.emulated_per_cpu_sec(),
            100.0 * p.tally.emulated_per_cpu_sec() / pre.emulated_per_cpu_sec()
        );
    }
    let main = &pools[0];
    let fps = main.tally.frames_per_sec();
    let envpool_anchor = match envpool {
        EnvPoolRun::Running(worker, info) => {
            drop(worker);
            Anchor::Measured {
                info,
                python: args.anchor.interpreter().unwrap_or_default(),
            }
        }
        EnvPoolRun::Failed(skipped) => skipped,
    };
    let envpool_fps =
        matches!(envpool_anchor, Anchor::Measured { .. }).then(|| envpool_tally.frames_per_sec());
    let ratio_to_envpool = envpool_fps.and_then(|e| anchor::ratio(fps, e));
    if let (Some(e), Some(r)) = (envpool_fps, ratio_to_envpool) {
        println!(
            "{} (async, {} envs, batch {}, {threads} threads, same rounds): steps x {frame_skip}: \
             {e:.0} frames/s, {:.0} per CPU-second; ours / EnvPool = {r:.2}x (target >= 1.4x)",
            envpool_anchor.label(),
            args.envs,
            envpool_batch(args.envs),
            envpool_tally.frames_per_cpu_sec(),
        );
    }
    let mut json = json!({
        "raw_frames_per_sec_1thread": raw_fps,
        "frames_per_sec": fps,
        "steps_per_sec": fps / frame_skip,
        "envs": args.envs,
        "threads": threads,
        "double_buffer": main.double_buffer,
        "ratio_to_threads_x_raw": fps / (raw_fps * threads as f64),
        "envpool_frames_per_sec": envpool_fps,
        "envpool_frames_per_cpu_sec": envpool_fps.map(|_| envpool_tally.frames_per_cpu_sec()),
        "ratio_to_envpool": ratio_to_envpool,
        "anchor": envpool_anchor.to_json(),
        "preprocessed_frames_per_sec_1thread": pre.frames_per_sec(),
        "raw_frames_per_cpu_sec": raw.frames_per_cpu_sec(),
        "preprocessed_frames_per_cpu_sec": pre.frames_per_cpu_sec(),
        "pool_frames_per_cpu_sec": main.tally.frames_per_cpu_sec(),
        "unsynchronised_threads_frames_per_sec": free.frames_per_sec(),
        "ratio_to_unsynchronised_threads": fps / free.frames_per_sec(),
        "emulated_frames_per_sec": main.tally.emulated_per_sec(),
        "ratio_emulated_to_threads_x_raw":
            main.tally.emulated_per_sec() / (raw_fps * threads as f64),
        "preprocessed_emulated_frames_per_sec_1thread": pre.emulated_per_sec(),
        "unsynchronised_threads_emulated_frames_per_sec": free.emulated_per_sec(),
        "ratio_emulated_to_unsynchronised_threads":
            main.tally.emulated_per_sec() / free.emulated_per_sec(),
        "pool_emulated_frames_per_cpu_sec": main.tally.emulated_per_cpu_sec(),
        "preprocessed_emulated_frames_per_cpu_sec": pre.emulated_per_cpu_sec(),
        "episodes": main.tally.episodes,
        "game": args.game,
    });
    if let Some(other) = pools.get(1) {
        let (on, off) = if main.double_buffer {
            (main, other)
        } else {
            (other, main)
        };
        let (on, off) = (on.tally.frames_per_sec(), off.tally.frames_per_sec());
        println!(
            "double buffering: {:.2}x the frames/s of one group",
            on / off
        );
        json["frames_per_sec_double_buffer"] = json!(on);
        json["frames_per_sec_single_group"] = json!(off);
    }
    Ok(json)
}

fn report(args: &EnvArgs, p: &PoolUnderTest, raw_fps: f64, frame_skip: f64) {
    let threads = p.pool.num_threads();
    let (fps, emulated) = (p.tally.frames_per_sec(), p.tally.emulated_per_sec());
    let limit = raw_fps * threads as f64;
    println!(
        "actor pool: {} envs, {threads} threads, {}: {:.0} steps/s, {} episodes",
        args.envs,
        if p.double_buffer {
            "double buffered"
        } else {
            "one group"
        },
        fps / frame_skip,
        p.tally.episodes,
    );
    println!(
        "  steps x {frame_skip}: {fps:.0} frames/s = {:.1}% of {threads}x raw ({limit:.0} \
         frames/s, this run)",
        100.0 * fps / limit,
    );
    println!(
        "  emulated: {emulated:.0} frames/s = {:.1}% of {threads}x raw (target >= 85%: \
         like with like, raw ALE's frames are emulated frames)",
        100.0 * emulated / limit,
    );
}

/// The EnvPool anchor during the rounds: running (with its hello), or skipped.
enum EnvPoolRun {
    Running(Worker, serde_json::Value),
    Failed(Anchor),
}

/// EnvPool's batch in async mode: half the envs (its best setting here, issue 2).
fn envpool_batch(envs: usize) -> usize {
    (envs / 2).max(1)
}

/// Starts EnvPool with our pool's settings (`game`: the ALE name), reset and warmed up.
fn start_envpool(
    args: &EnvArgs,
    cfg: &AtariConfig,
    game: &str,
    threads: usize,
    chunk: f64,
) -> EnvPoolRun {
    let python = match args.anchor.interpreter() {
        Ok(p) => p,
        Err(why) => return EnvPoolRun::Failed(Anchor::skipped("envpool", why)),
    };
    let frame_skip = u64::from(cfg.frame_skip.max(1));
    let config = json!({
        "game": game,
        "envs": args.envs,
        "batch": envpool_batch(args.envs),
        "threads": threads,
        "seed": args.seed,
        "repeat_action_probability": cfg.repeat_action_probability,
        "episodic_life": cfg.episodic_life,
        "noop_max": cfg.noop_max,
        "frame_skip": cfg.frame_skip,
        "frame_stack": cfg.frame_stack,
        "clip_rewards": cfg.clip_rewards,
        "fire_reset": cfg.fire_reset,
        "full_action_space": cfg.full_action_space,
        // EnvPool counts agent steps; ours, emulator frames (0: no limit).
        "max_episode_steps": if cfg.max_episode_frames == 0 {
            u64::from(u32::MAX)
        } else {
            cfg.max_episode_frames / frame_skip
        },
        "warm_up_secs": chunk,
    });
    match Worker::start(&python, ENVPOOL_WORKER, &config) {
        Ok((worker, hello)) => EnvPoolRun::Running(worker, hello),
        Err(why) => EnvPoolRun::Failed(Anchor::skipped(
            "envpool",
            format!("{}: {why}", python.display()),
        )),
    }
}

/// Starts a pool of `args.envs` preprocessed envs; env `i` is created with seed `seed + i`.
fn start_pool(
    args: &EnvArgs,
    cfg: &AtariConfig,
    double_buffer: bool,
) -> anyhow::Result<ActorPool<AtariEnv>> {
    let pool_cfg = PoolConfig {
        num_envs: args.envs,
        num_threads: args.threads,
        double_buffer,
        seed: args.seed,
    };
    let (game, atari_cfg, seed) = (args.game.clone(), cfg.clone(), args.seed);
    ActorPool::new(pool_cfg, move |i| {
        make_atari(&game, &atari_cfg, seed.wrapping_add(i as u64)).map_err(EnvError::from)
    })
    .context("starting the actor pool")
}

/// `T` threads that each step their own preprocessed env with no synchronisation at all:
/// the most `T` threads can do on this machine at the moment, which the pool approaches.
struct FreeRunners {
    go: Vec<crossbeam_channel::Sender<f64>>,
    /// Per round and thread: `(frames, emulated frames, seconds)`.
    done: crossbeam_channel::Receiver<anyhow::Result<(f64, f64, f64)>>,
}

fn spawn_free_runners<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    args: &EnvArgs,
    cfg: &AtariConfig,
    threads: usize,
) -> anyhow::Result<FreeRunners> {
    let (done_tx, done) = crossbeam_channel::unbounded();
    let mut go = Vec::new();
    for t in 0..threads {
        let (go_tx, go_rx) = crossbeam_channel::bounded::<f64>(1);
        let (done_tx, game, cfg) = (done_tx.clone(), args.game.clone(), cfg.clone());
        let seed = args.seed.wrapping_add(1000 + t as u64);
        scope.spawn(move || {
            let frame_skip = f64::from(cfg.frame_skip);
            // Created in its thread, as the pool does.
            let mut env = match make_atari(&game, &cfg, seed)
                .map_err(anyhow::Error::from)
                .and_then(|mut env| Ok(env.reset(Some(seed)).map(|_| env)?))
            {
                Ok(env) => env,
                Err(e) => {
                    let _ = done_tx.send(Err(e));
                    return;
                }
            };
            let mut rng = XorShift(seed | 1);
            for secs in go_rx.iter() {
                let mut tally = Tally::default();
                let result = step_single(&mut env, &mut rng, secs, frame_skip, &mut tally)
                    .map(|()| (tally.frames, tally.emulated, tally.secs));
                if done_tx.send(result).is_err() {
                    return;
                }
            }
        });
        go.push(go_tx);
    }
    Ok(FreeRunners { go, done })
}

impl FreeRunners {
    /// All threads step for `secs` at once; adds their frames and the round's time.
    fn run(&self, secs: f64, tally: &mut Tally) -> anyhow::Result<()> {
        for go in &self.go {
            go.send(secs).context("a free-running thread ended")?;
        }
        let (mut rate, mut emulated_rate) = (0.0, 0.0);
        for _ in 0..self.go.len() {
            let (frames, emulated, took) =
                self.done.recv().context("a free-running thread ended")??;
            rate += frames / took.max(1e-9);
            emulated_rate += emulated / took.max(1e-9);
        }
        tally.frames += rate * secs;
        tally.emulated += emulated_rate * secs;
        tally.secs += secs;
        Ok(())
    }
}

/// Steps one preprocessed env on this thread for `secs`, with random actions.
fn step_single(
    env: &mut AtariEnv,
    rng: &mut XorShift,
    secs: f64,
    frame_skip: f64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let n = env.action_space().n().unwrap_or(1);
    let budget = Duration::from_secs_f64(secs);
    let first_frame = env.frame_number();
    let start = Instant::now();
    let mut steps = 0u64;
    while start.elapsed() < budget {
        for _ in 0..16 {
            let s = env.step(rng.below(n))?;
            if s.terminated || s.truncated {
                env.reset(None)?;
            }
            steps += 1;
        }
    }
    tally.frames += steps as f64 * frame_skip;
    tally.emulated += (env.frame_number() - first_frame) as f64;
    tally.secs += start.elapsed().as_secs_f64();
    Ok(())
}

/// What one [`drive`] did.
struct DriveRun {
    /// Env steps received.
    steps: u64,
    /// Emulator frames those steps ran (resets included).
    emulated: u64,
    /// Seconds from the first send to the last receive.
    secs: f64,
    /// Episodes that ended.
    episodes: usize,
}

/// Keeps every group of a reset pool busy for `budget`, then drains it (`budget` plus one
/// round). `frame_numbers[i]`: env `i`'s frame count as last received, updated here.
fn drive<E: Env>(
    pool: &mut ActorPool<E>,
    rng: &mut XorShift,
    budget: Duration,
    frame_numbers: &mut [u64],
) -> anyhow::Result<DriveRun> {
    let n_actions = pool.num_actions();
    let mut actions = Vec::with_capacity(pool.num_envs());
    let mut send = |pool: &mut ActorPool<E>, g: usize, actions: &mut Vec<usize>| {
        actions.clear();
        actions.extend(pool.group_envs(g).map(|_| rng.below(n_actions)));
        pool.send_actions(g, actions)
    };
    let mut step = GroupStep::default();
    let mut run = DriveRun {
        steps: 0,
        emulated: 0,
        secs: 0.0,
        episodes: 0,
    };
    let mut count = |step: &GroupStep<E::Elem>| {
        run.steps += step.envs.len() as u64;
        run.episodes += step.episodes.len();
        for (i, &now) in step.envs.clone().zip(&step.frame_numbers) {
            run.emulated += now.saturating_sub(frame_numbers[i]);
            frame_numbers[i] = now;
        }
    };
    // Timed from the first send to the last receive: every step counted ran inside it.
    let start = Instant::now();
    for g in 0..pool.num_groups() {
        send(pool, g, &mut actions)?;
    }
    while start.elapsed() < budget {
        for g in 0..pool.num_groups() {
            pool.recv_into(g, &mut step)?;
            count(&step);
            send(pool, g, &mut actions)?;
        }
    }
    for g in 0..pool.num_groups() {
        pool.recv_into(g, &mut step)?;
        count(&step);
    }
    run.secs = start.elapsed().as_secs_f64();
    Ok(run)
}

/// A tiny random generator for actions (xorshift64*).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}
