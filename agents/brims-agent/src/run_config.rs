//! The typed run configuration.

use std::path::Path;

use anyhow::bail;

use crate::config::{apply_overrides, one_line, read_toml};

/// A training run, as a TOML file in configs/ describes it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunConfig {
    /// Run name: the run directory is `runs/<name>-<UTC time>` unless `--run-dir` is given.
    pub name: String,
    /// The one seed of the run: envs (env i gets seed + i), network init, sampling.
    pub seed: u64,
    /// Budget in emulator frames (Atari: agent steps × frame skip; other envs: agent steps).
    pub total_frames: u64,
    /// Which environment.
    pub env: EnvConfig,
    /// Actor threads.
    #[serde(default)]
    pub actors: ActorsConfig,
    /// Encoder, core and heads.
    pub network: ppo::NetworkConfig,
    /// PPO hyperparameters (`seed` and `total_timesteps` are derived from the top level).
    #[serde(default)]
    pub ppo: ppo::PpoConfig,
    /// Checkpoints and logging.
    #[serde(default)]
    pub run: RunSettings,
}

/// The environment of a run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum EnvConfig {
    /// An Atari game on ALE.
    Atari {
        /// Game name (`brims list-games`), e.g. `Breakout` or `ALE/Breakout-v5`, or a ROM path.
        game: String,
        /// Preprocessing (defaults: Machado et al. 2018 / CleanRL).
        #[serde(default)]
        atari: envs_atari::AtariConfig,
    },
    /// CartPole-v1 (500-step limit).
    Cartpole,
    /// The cue-recall memory task.
    Memory {
        /// Blank steps between the cue and the answer.
        #[serde(default = "default_memory_delay")]
        delay: usize,
    },
}

fn default_memory_delay() -> usize {
    4
}

impl EnvConfig {
    /// Emulator frames per agent step (for frame budgets and SPS).
    pub fn frames_per_step(&self) -> u64 {
        match self {
            EnvConfig::Atari { atari, .. } => u64::from(atari.frame_skip.max(1)),
            _ => 1,
        }
    }

    /// The returns an episode can have, `(lowest, highest)`, where known: per Atari game from
    /// envs_atari's table (Pong [−21, 21]), CartPole-v1 [0, 500] (one point a step, 500
    /// steps), the memory task [−1, 1]. Report intervals are clamped to it.
    pub fn return_range(&self) -> Option<(f64, f64)> {
        match self {
            EnvConfig::Atari { game, .. } => envs_atari::return_range(game),
            EnvConfig::Cartpole => Some((0.0, envs_api::CARTPOLE_V1_MAX_STEPS as f64)),
            EnvConfig::Memory { .. } => Some((-1.0, 1.0)),
        }
    }

    /// The env as a report names it: the Atari game, `CartPole-v1` or `memory`.
    pub fn label(&self) -> String {
        match self {
            EnvConfig::Atari { game, .. } => game.clone(),
            EnvConfig::Cartpole => "CartPole-v1".into(),
            EnvConfig::Memory { .. } => "memory".into(),
        }
    }
}

/// Actor threads.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ActorsConfig {
    /// Worker threads stepping envs (one per core is best).
    pub threads: usize,
    /// Alternate two halves of the envs so stepping overlaps inference.
    pub double_buffer: bool,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        ActorsConfig {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            double_buffer: true,
        }
    }
}

/// Checkpointing and logging.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RunSettings {
    /// Write a checkpoint every this many updates (and always at the end).
    pub checkpoint_every: u64,
    /// How many checkpoints to keep.
    pub keep_checkpoints: usize,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            checkpoint_every: 25,
            keep_checkpoints: 3,
        }
    }
}

impl RunConfig {
    /// Reads a config file, applies `--set` overrides, and checks every value.
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<RunConfig> {
        let mut doc = read_toml(path)?;
        apply_overrides(&mut doc, overrides)?;
        Self::from_table(doc).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Deserialises and validates a config document.
    pub fn from_table(doc: toml::Table) -> anyhow::Result<RunConfig> {
        for derived in ["seed", "total_timesteps"] {
            if doc
                .get("ppo")
                .and_then(|p| p.as_table())
                .is_some_and(|p| p.contains_key(derived))
            {
                bail!(
                    "ppo.{derived} is derived: set the top-level `seed` / `total_frames` instead"
                );
            }
        }
        let mut cfg: RunConfig =
            toml::Value::Table(doc)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    // `[ppo]`'s list of keys names the two derived ones, which are refused above.
                    let msg = one_line(&e.to_string()).replace("`seed`, `total_timesteps`, ", "");
                    anyhow::anyhow!("{msg}")
                })?;
        cfg.ppo.seed = cfg.seed;
        cfg.ppo.total_timesteps = cfg.total_frames / cfg.env.frames_per_step();
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            bail!(
                "name = {:?}: must be non-empty and contain no path separators",
                self.name
            );
        }
        if self.total_frames == 0 {
            bail!("total_frames must be > 0");
        }
        if self.actors.threads == 0 {
            bail!("actors.threads must be >= 1");
        }
        if self.run.keep_checkpoints == 0 || self.run.checkpoint_every == 0 {
            bail!("run.keep_checkpoints and run.checkpoint_every must be >= 1");
        }
        self.ppo
            .validate()
            .map_err(|e| anyhow::anyhow!("ppo: {e}"))?;
        Ok(())
    }

    /// The effective config as TOML (what the run directory records).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let mut doc = toml::Table::try_from(self)?;
        if let Some(toml::Value::Table(ppo)) = doc.get_mut("ppo") {
            ppo.remove("seed");
            ppo.remove("total_timesteps");
        }
        Ok(toml::to_string_pretty(&doc)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<RunConfig> {
        RunConfig::from_table(text.parse::<toml::Table>()?)
    }

    const BASE: &str = "name = \"t\"\nseed = 3\ntotal_frames = 1000\n[env]\nkind = \"cartpole\"\n\
        [network.encoder]\nkind = \"mlp\"\nhidden = [8]\nactivation = \"tanh\"\n";

    #[test]
    fn derived_ppo_keys_are_refused_and_unknown_ones_list_only_settable_keys() {
        let cfg = load(BASE).unwrap();
        assert_eq!((cfg.ppo.seed, cfg.ppo.total_timesteps), (3, 1000));
        for derived in ["seed = 1", "total_timesteps = 5"] {
            let err = load(&format!("{BASE}[ppo]\n{derived}\n")).unwrap_err();
            assert!(err.to_string().contains("is derived"), "{err}");
        }
        let err = load(&format!("{BASE}[ppo]\nlr = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `lr`"), "{err}");
        assert!(err.contains("`learning_rate`"), "{err}");
        assert!(
            !err.contains("`seed`") && !err.contains("`total_timesteps`"),
            "{err}"
        );
    }

    /// Issue 24, 17: the quick-start job trained the reference-init BRIMs the README says does
    /// not learn on Atari. Every Atari BRIMs config, smoke included, sets the Atari options.
    #[test]
    fn every_atari_brims_config_sets_the_atari_options() {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let options = |file: &str| {
            let cfg = RunConfig::load(&configs.join(file), &[]).unwrap();
            let Some(brims::CoreConfig::Brims(core)) = cfg.network.core else {
                panic!("{file}: not a BRIMs core");
            };
            format!(
                "{:?} {:?} {} {:?}",
                core.attention_init, core.lstm_init, core.slot_norm, core.output
            )
        };
        let atari = options("breakout_brims.toml");
        assert!(atari.contains("FanIn") && atari.contains("true"), "{atari}");
        for file in [
            "smoke.toml",
            "pong_brims.toml",
            "breakout_rims.toml",
            "pong_rims.toml",
            "breakout_brims_no_top_down.toml",
        ] {
            assert_eq!(options(file), atari, "{file}");
        }
    }
}
