//! Checks before the first step: does the run fit this machine's memory and thread limits?
//!
//! The estimate comes from the config: what the rollout, the envs, the model and the actor
//! threads hold, and what one update's minibatch holds at its peak (the encoder's activations
//! for the minibatch's frames, the core's state at every step, and their gradients). The
//! update's share is calibrated against measured peak RSS (see [`ENCODER_BYTES_PER_ELEM`]), so
//! the estimate is close to what a run uses, not a loose lower bound.

use std::path::Path;

use anyhow::bail;

use crate::config::run::{EnvConfig, RunConfig};

/// Bytes one env holds besides its observations (an ALE instance with its screen buffers; the
/// vector envs are a few numbers). Measured: about 1 MiB per Breakout env in `bench env`.
fn env_bytes(env: &EnvConfig) -> u64 {
    match env {
        EnvConfig::Atari { .. } => 1 << 20,
        _ => 1 << 10,
    }
}

/// Bytes per stored step and env besides the observation: the rollout's flags, actions,
/// log-probs, values, rewards, done flags and final values (33 B), and the update's tensors of
/// them, advantages and returns (about 40 B).
const PER_SAMPLE_BYTES: u64 = 80;
/// Resident bytes per actor thread (stack actually touched, channels, buffers).
const THREAD_BYTES: u64 = 256 << 10;

/// Peak bytes of the update per encoder activation of one minibatch sample (each conv / linear
/// layer's output element): the f32 output kept for the backward, its gradient, and the fused
/// conv kernels' temporaries. Calibrated, with the core's constants below, on peak RSS
/// (`/usr/bin/time -v`) of one-update runs with one minibatch at two sizes each (16 envs × 256
/// and × 512 steps of Breakout; 16 × 4096 and × 8192 of CartPole), from the slope between them:
/// smoke.toml (Nature CNN 256 + BRIMs 128/4 + 64/2) 272 KB a sample, breakout_lstm.toml (Nature
/// CNN 512 + LSTM 128) 216 KB, cartpole_lstm.toml (MLP 64 + LSTM 64) 12 KB, cartpole_brims.toml
/// (MLP 64 + BRIMs 64/4 + 64/4) 78 KB.
const ENCODER_BYTES_PER_ELEM: u64 = 10;
/// Peak bytes of the update per LSTM state element of one minibatch sample and step: the gates,
/// cell and hidden states stored for the backward through time, and their gradients.
const LSTM_BYTES_PER_ELEM: u64 = 180;
/// As [`LSTM_BYTES_PER_ELEM`], per element of a BRIMs layer's `h`.
const BRIMS_BYTES_PER_ELEM: u64 = 260;
/// Peak bytes of the update per BRIMs module, sample and step: each module's attention over the
/// slots (queries, keys, values, scores) and the selection masks, and their gradients.
const BRIMS_BYTES_PER_MODULE: u64 = 5_700;
/// Resident bytes of the process itself: the binary, ALE, the thread pools, the allocator's
/// slack (the intercept of the calibration above, about 110 MiB).
const PROCESS_BYTES: u64 = 128 << 20;

/// What a run needs at least, from its config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Needs {
    /// The rollout (observations stored once in the buffer and once as the update's tensor).
    pub rollout: u64,
    /// The envs.
    pub envs: u64,
    /// Parameters, their gradients and Adam's two moments (f32).
    pub model: u64,
    /// One update's minibatch at its peak: its observations, the encoder's activations, the
    /// core's states and their gradients.
    pub update: u64,
    /// Samples (env steps) in one minibatch.
    pub minibatch: u64,
    /// Actor threads.
    pub threads: u64,
    /// The process itself.
    pub process: u64,
    /// Actor threads started.
    pub thread_count: u64,
}

impl Needs {
    pub(crate) fn total(&self) -> u64 {
        self.rollout + self.envs + self.model + self.update + self.threads + self.process
    }
}

/// Activation elements of the encoder for one sample (its layer outputs for observations of
/// `obs_shape`) and the update's peak bytes of the core for one sample and step.
fn activation_elems(network: &ppo::NetworkConfig, obs_shape: &[usize]) -> (u64, u64) {
    let encoder = match &network.encoder {
        ppo::EncoderConfig::NatureCnn { hidden } => {
            let (h, w) = match obs_shape {
                [_, h, w] => (*h as u64, *w as u64),
                _ => (84, 84),
            };
            // Valid convs 32@8/4, 64@4/2, 64@3/1: (x - k) / s + 1 each.
            let out = |x: u64, k: u64, s: u64| x.saturating_sub(k) / s + 1;
            let (h1, w1) = (out(h, 8, 4), out(w, 8, 4));
            let (h2, w2) = (out(h1, 4, 2), out(w1, 4, 2));
            let (h3, w3) = (out(h2, 3, 1), out(w2, 3, 1));
            32 * h1 * w1 + 64 * h2 * w2 + 64 * h3 * w3 + *hidden as u64
        }
        ppo::EncoderConfig::Mlp { hidden, .. } => {
            obs_shape.iter().product::<usize>() as u64 + hidden.iter().sum::<usize>() as u64
        }
    };
    let core = match &network.core {
        None => 0,
        Some(brims::CoreConfig::Lstm(lstm)) => lstm.hidden_size as u64 * LSTM_BYTES_PER_ELEM,
        Some(brims::CoreConfig::Brims(b)) => b
            .layers
            .iter()
            .map(|l| {
                l.hidden_size as u64 * BRIMS_BYTES_PER_ELEM
                    + l.modules as u64 * BRIMS_BYTES_PER_MODULE
            })
            .sum(),
    };
    (encoder, core)
}

/// The needs of `cfg` with observations of `obs_shape` (`obs_elem_bytes` bytes an element) and
/// `params` parameters.
pub(crate) fn needs(
    cfg: &RunConfig,
    obs_shape: &[usize],
    obs_elem_bytes: u64,
    params: u64,
) -> Needs {
    let obs_bytes = (obs_shape.iter().product::<usize>() as u64).saturating_mul(obs_elem_bytes);
    let (steps, envs) = (cfg.ppo.num_steps as u64, cfg.ppo.num_envs as u64);
    let samples = steps.saturating_mul(envs);
    let minibatch = samples / (cfg.ppo.num_minibatches.max(1) as u64);
    let (encoder_elems, core_bytes) = activation_elems(&cfg.network, obs_shape);
    let per_sample = obs_bytes
        .saturating_add(encoder_elems.saturating_mul(ENCODER_BYTES_PER_ELEM))
        .saturating_add(core_bytes);
    let groups = if cfg.actors.double_buffer && envs >= 2 {
        2
    } else {
        1
    };
    let thread_count = (cfg.actors.threads as u64).clamp(1, (envs / groups).max(1));
    Needs {
        rollout: samples.saturating_mul(obs_bytes.saturating_mul(2) + PER_SAMPLE_BYTES),
        envs: envs.saturating_mul(env_bytes(&cfg.env) + obs_bytes.saturating_mul(2)),
        model: params.saturating_mul(16),
        update: minibatch.saturating_mul(per_sample),
        minibatch,
        threads: thread_count.saturating_mul(THREAD_BYTES),
        thread_count,
        process: PROCESS_BYTES,
    }
}

/// Refuses a run whose needs exceed what this machine has (memory available now, within any
/// cgroup limit; the thread limits), with the numbers.
pub(crate) fn check(
    cfg: &RunConfig,
    obs_shape: &[usize],
    obs_elem_bytes: u64,
    params: u64,
) -> anyhow::Result<()> {
    let n = needs(cfg, obs_shape, obs_elem_bytes, params);
    if let Some(avail) = available_memory() {
        if n.total() > avail {
            bail!(
                "this run needs about {} of memory but {} is available: rollout {} \
                 ({} steps × {} envs, stored twice), update {} (a minibatch of {} samples: \
                 activations and gradients), envs {}, model {}, actor threads {}; lower \
                 ppo.num_envs or ppo.num_steps, or raise ppo.num_minibatches",
                gib(n.total()),
                gib(avail),
                gib(n.rollout),
                cfg.ppo.num_steps,
                cfg.ppo.num_envs,
                gib(n.update),
                n.minibatch,
                gib(n.envs),
                gib(n.model),
                gib(n.threads),
            );
        }
    }
    if let Some(limit) = thread_limit() {
        if n.thread_count > limit {
            bail!(
                "actors.threads = {} would start {} threads but this machine allows {limit}; \
                 lower actors.threads (one per core is best)",
                cfg.actors.threads,
                n.thread_count
            );
        }
    }
    Ok(())
}

/// `x` bytes as GiB (or MiB when small), for messages.
pub(crate) fn gib(x: u64) -> String {
    if x >= 1 << 30 {
        format!("{:.1} GiB", x as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", (x as f64 / (1u64 << 20) as f64).ceil())
    }
}

/// Memory available to this process: /proc/meminfo's MemAvailable, lowered by a cgroup limit
/// when one is set (containers, Slurm; v2 or v1). `None` where neither can be read.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let avail_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let mut avail = avail_kb.saturating_mul(1024);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Some(cgroup_free) = cgroup_free(&cgroup, Path::new("/sys/fs/cgroup")) {
        avail = avail.min(cgroup_free);
    }
    Some(avail)
}

/// The least free memory (limit − usage) of this process's memory cgroup and its ancestors,
/// where one has a limit: cgroup v2 (`memory.max`, `memory.current`; the `0::` line) and v1
/// (`memory.limit_in_bytes`, `memory.usage_in_bytes` under `memory/`; the `memory` controller's
/// line, as under Slurm's cgroup v1 plugin). `cgroup` is /proc/self/cgroup's text, `root` where
/// the hierarchies are mounted.
fn cgroup_free(cgroup: &str, root: &Path) -> Option<u64> {
    // v1 reports "no limit" as a huge number (LONG_MAX rounded to pages).
    const NO_LIMIT: u64 = 1 << 60;
    let read = |dir: &Path, f: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let mut free: Option<u64> = None;
    for line in cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (base, limit_file, usage_file) = if id == "0" && controllers.is_empty() {
            (root.to_path_buf(), "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                root.join("memory"),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        // The cgroup and each ancestor up to the hierarchy's root: a limit may sit on any (a
        // Slurm job's, above its step's).
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            // "max" (v2, no limit) does not parse.
            if let Some(limit) = read(&dir, limit_file).filter(|&l| l < NO_LIMIT) {
                let left = limit.saturating_sub(read(&dir, usage_file).unwrap_or(0));
                free = Some(free.map_or(left, |f| f.min(left)));
            }
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    free
}

/// The most threads this process may start: the smaller of the kernel's `threads-max` and the
/// soft `RLIMIT_NPROC`, when known.
fn thread_limit() -> Option<u64> {
    let kernel: Option<u64> = std::fs::read_to_string("/proc/sys/kernel/threads-max")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
    let nproc = (unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY)
        .then_some(limit.rlim_cur as u64);
    match (kernel, nproc) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> RunConfig {
        RunConfig::from_table(text.parse().unwrap()).unwrap()
    }

    const FRAMES: [usize; 3] = [4, 84, 84];

    #[test]
    fn needs_grow_with_envs_and_steps() {
        let base = "name = \"t\"\nseed = 1\ntotal_frames = 1_000_000_000_000\n[env]\nkind = \"atari\"\n\
            game = \"Breakout\"\n[actors]\nthreads = 2\n[network.encoder]\nkind = \"nature_cnn\"\nhidden = 512\n\
            [ppo]\nnum_envs = 8\nnum_steps = 64\nnum_minibatches = 4\n";
        let small = needs(&cfg(base), &FRAMES, 1, 1_000_000);
        // 64 × 8 samples × (2 × 28224 + 80) B.
        assert_eq!(small.rollout, 512 * (2 * 28_224 + 80));
        assert_eq!(small.envs, 8 * ((1 << 20) + 2 * 28_224));
        assert_eq!(small.model, 16_000_000);
        assert_eq!(small.thread_count, 2);
        let big = needs(
            &cfg(&base.replace("num_envs = 8", "num_envs = 100000")),
            &FRAMES,
            1,
            1_000_000,
        );
        assert_eq!(big.rollout, small.rollout / 8 * 100_000);
        assert!(big.total() > 300 << 30, "{}", gib(big.total()));
        assert_eq!(gib(3 << 29), "1.5 GiB");
        assert_eq!(gib(1 << 20), "1 MiB");
    }

    /// Item 6 of issue 24: the update's minibatch is counted. Measured peak RSS (one update,
    /// `/usr/bin/time -v`): the estimate must not be far under it.
    #[test]
    fn the_update_is_counted_and_the_estimate_is_near_measured_peaks() {
        let smoke = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/smoke.toml"
        ))
        .unwrap();
        let with = |sets: &[(&str, &str)]| {
            // A budget of whole updates at any batch here.
            let mut text =
                smoke.replace("total_frames = 16_384", "total_frames = 1_000_000_000_000");
            for (from, to) in sets {
                text = text.replace(from, to);
            }
            needs(&cfg(&text), &[1, 84, 84], 1, 1_000_000)
        };
        // The case: 16 envs × 8192 steps in one minibatch needed more than 12 GB.
        let huge = with(&[
            ("num_envs = 8", "num_envs = 16"),
            ("num_steps = 64", "num_steps = 8192"),
            ("num_minibatches = 4", "num_minibatches = 1"),
        ]);
        assert_eq!(huge.minibatch, 16 * 8192);
        assert!(huge.update > 12 << 30, "{}", gib(huge.update));
        // More minibatches, a smaller update.
        let quartered = with(&[
            ("num_envs = 8", "num_envs = 16"),
            ("num_steps = 64", "num_steps = 8192"),
        ]);
        assert!(
            quartered.update * 4 <= huge.update + 4,
            "{quartered:?} {huge:?}"
        );
        for &(config, steps, obs_shape, obs_elem_bytes, measured_mib) in &MEASURED {
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(config),
            )
            .unwrap();
            let mut doc: toml::Table = text.parse().unwrap();
            let frames_per_step = if obs_elem_bytes == 1 { 4 } else { 1 };
            crate::config::apply_overrides(
                &mut doc,
                &[
                    "ppo.num_envs=16".into(),
                    format!("ppo.num_steps={steps}"),
                    "ppo.num_minibatches=1".into(),
                    "ppo.update_epochs=1".into(),
                    format!("total_frames={}", 16 * steps * frames_per_step),
                    "actors.threads=2".into(),
                ],
            )
            .unwrap();
            let cfg = RunConfig::from_table(doc).unwrap();
            let n = needs(&cfg, obs_shape, obs_elem_bytes, 1_000_000);
            let estimate = n.total() as f64 / (1u64 << 20) as f64;
            assert!(
                estimate > 0.85 * measured_mib && estimate < 1.25 * measured_mib,
                "{config} × {steps} steps: estimate {estimate:.0} MiB, measured {measured_mib} MiB"
            );
        }
    }

    /// Peak RSS (MiB, `/usr/bin/time -v`) of one update of `config` with 16 envs × `steps`, one
    /// minibatch, one epoch, 2 actor threads: `(config, steps, obs shape, obs bytes, MiB)`.
    const MEASURED: [(&str, usize, &[usize], u64, f64); 8] = [
        ("configs/smoke.toml", 256, &[1, 84, 84], 1, 1228.2),
        ("configs/smoke.toml", 512, &[1, 84, 84], 1, 2315.5),
        ("configs/breakout_lstm.toml", 256, &[1, 84, 84], 1, 1278.8),
        ("configs/breakout_lstm.toml", 512, &[1, 84, 84], 1, 2141.4),
        ("configs/cartpole_lstm.toml", 4096, &[4], 4, 837.3),
        ("configs/cartpole_lstm.toml", 8192, &[4], 4, 1591.9),
        ("configs/cartpole_brims.toml", 4096, &[4], 4, 4908.1),
        ("configs/cartpole_brims.toml", 8192, &[4], 4, 9844.0),
    ];

    /// Item 6 of issue 24: cgroup v1 limits are read (Slurm's cgroup v1 plugin), on the cgroup
    /// or an ancestor, as v2's are; "no limit" is none.
    #[test]
    fn cgroup_limits_are_read_in_v1_and_v2_on_any_ancestor() {
        let root = tempfile::tempdir().unwrap();
        let write = |dir: &str, file: &str, value: &str| {
            let d = root.path().join(dir);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), value).unwrap();
        };
        // v1: the job's limit (8 GiB, 1 GiB used) sits above the step's (unlimited).
        write(
            "memory/slurm/job_7",
            "memory.limit_in_bytes",
            "8589934592\n",
        );
        write(
            "memory/slurm/job_7",
            "memory.usage_in_bytes",
            "1073741824\n",
        );
        write(
            "memory/slurm/job_7/step_0",
            "memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            "memory/slurm/job_7/step_0",
            "memory.usage_in_bytes",
            "1073741824\n",
        );
        let v1 = "4:memory:/slurm/job_7/step_0\n1:cpu,cpuacct:/slurm/job_7/step_0\n";
        assert_eq!(cgroup_free(v1, root.path()), Some(7 << 30));
        // v2: memory.max "max" is no limit; a number is.
        write("box", "memory.max", "max\n");
        assert_eq!(cgroup_free("0::/box\n", root.path()), None);
        write("box", "memory.max", "4294967296\n");
        write("box", "memory.current", "1073741824\n");
        assert_eq!(cgroup_free("0::/box\n", root.path()), Some(3 << 30));
        assert_eq!(cgroup_free("", root.path()), None);
    }
}
