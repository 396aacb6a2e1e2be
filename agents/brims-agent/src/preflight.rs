//! Checks before the first step: does the run fit this machine's memory and thread limits?
//!
//! The estimate is a lower bound from the config (what the rollout, the envs, the model and the
//! actor threads must hold), so a refusal is certain, and a run that passes can still need more
//! (the update's activations grow with the minibatch).

use anyhow::bail;

use crate::run_config::{EnvConfig, RunConfig};

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

/// What a run needs at least, from its config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Needs {
    /// The rollout (observations stored once in the buffer and once as the update's tensor).
    pub rollout: u64,
    /// The envs.
    pub envs: u64,
    /// Parameters, their gradients and Adam's two moments (f32).
    pub model: u64,
    /// Actor threads.
    pub threads: u64,
    /// Actor threads started.
    pub thread_count: u64,
}

impl Needs {
    pub(crate) fn total(&self) -> u64 {
        self.rollout + self.envs + self.model + self.threads
    }
}

/// The lower-bound needs of `cfg` with observations of `obs_bytes` bytes and `params` parameters.
pub(crate) fn needs(cfg: &RunConfig, obs_bytes: u64, params: u64) -> Needs {
    let (steps, envs) = (cfg.ppo.num_steps as u64, cfg.ppo.num_envs as u64);
    let samples = steps.saturating_mul(envs);
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
        threads: thread_count.saturating_mul(THREAD_BYTES),
        thread_count,
    }
}

/// Refuses a run whose needs exceed what this machine has (memory available now, within any
/// cgroup limit; the thread limits), with the numbers.
pub(crate) fn check(cfg: &RunConfig, obs_bytes: u64, params: u64) -> anyhow::Result<()> {
    let n = needs(cfg, obs_bytes, params);
    if let Some(avail) = available_memory() {
        if n.total() > avail {
            bail!(
                "this run needs at least {} of memory but {} is available: rollout {} \
                 ({} steps × {} envs × {} B observations, stored twice), envs {}, model {}, \
                 actor threads {}; lower ppo.num_envs or ppo.num_steps",
                gib(n.total()),
                gib(avail),
                gib(n.rollout),
                cfg.ppo.num_steps,
                cfg.ppo.num_envs,
                obs_bytes,
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

/// Memory available to this process: /proc/meminfo's MemAvailable, lowered by a cgroup (v2)
/// limit when one is set (containers, Slurm). `None` where neither can be read.
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
    if let Some(cgroup_free) = cgroup_free() {
        avail = avail.min(cgroup_free);
    }
    Some(avail)
}

/// `memory.max − memory.current` of this process's cgroup (v2), if it has a limit.
fn cgroup_free() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let max = read("memory.max")?; // "max" (no limit) does not parse
    Some(max.saturating_sub(read("memory.current").unwrap_or(0)))
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

    #[test]
    fn needs_grow_with_envs_and_steps() {
        let base = "name = \"t\"\nseed = 1\ntotal_frames = 1000\n[env]\nkind = \"atari\"\n\
            game = \"Breakout\"\n[actors]\nthreads = 2\n[network.encoder]\nkind = \"nature_cnn\"\nhidden = 512\n\
            [ppo]\nnum_envs = 8\nnum_steps = 64\nnum_minibatches = 4\n";
        let small = needs(&cfg(base), 84 * 84 * 4, 1_000_000);
        // 64 × 8 samples × (2 × 28224 + 80) B.
        assert_eq!(small.rollout, 512 * (2 * 28_224 + 80));
        assert_eq!(small.envs, 8 * ((1 << 20) + 2 * 28_224));
        assert_eq!(small.model, 16_000_000);
        assert_eq!(small.thread_count, 2);
        let big = needs(
            &cfg(&base.replace("num_envs = 8", "num_envs = 100000")),
            84 * 84 * 4,
            1_000_000,
        );
        assert_eq!(big.rollout, small.rollout / 8 * 100_000);
        assert!(big.total() > 300 << 30, "{}", gib(big.total()));
        assert_eq!(gib(3 << 29), "1.5 GiB");
        assert_eq!(gib(1 << 20), "1 MiB");
    }
}
