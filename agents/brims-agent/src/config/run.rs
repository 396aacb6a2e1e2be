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

/// A run's budget in whole updates: what the learning-rate schedule, the training loop, "is
/// the run finished", the progress display and summaries all count by ([`RunConfig::budget`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Budget {
    /// PPO updates ([`ppo::num_iterations`] of the agent steps `total_frames` buys).
    pub updates: u64,
    /// Agent steps the updates consume (`updates × num_envs × num_steps`).
    pub steps: u64,
    /// Emulator frames of those steps (`steps × frame_skip`): at most `total_frames`.
    pub frames: u64,
    /// Emulator frames of one update.
    pub frames_per_update: u64,
}

impl RunConfig {
    /// The run's budget: `total_frames` rounded down to whole updates (CleanRL's
    /// `total_timesteps // batch_size`). Every user of the budget calls this.
    pub fn budget(&self) -> Budget {
        let frames_per_step = self.env.frames_per_step();
        let batch = self.ppo.num_envs.saturating_mul(self.ppo.num_steps);
        let updates = ppo::num_iterations(self.total_frames / frames_per_step, batch);
        let steps_per_update = batch as u64;
        Budget {
            updates,
            steps: updates.saturating_mul(steps_per_update),
            frames: updates
                .saturating_mul(steps_per_update)
                .saturating_mul(frames_per_step),
            frames_per_update: steps_per_update.saturating_mul(frames_per_step),
        }
    }

    /// One line saying how `total_frames` was rounded down to whole updates, when it was.
    pub fn budget_rounding_warning(&self) -> Option<String> {
        let b = self.budget();
        (b.frames != self.total_frames).then(|| {
            format!(
                "warning: total_frames = {} is not a whole number of updates ({} frames each: \
                 ppo.num_envs × ppo.num_steps × frame_skip); training {} updates, {} frames",
                self.total_frames, b.frames_per_update, b.updates, b.frames
            )
        })
    }

    /// Reads a config file, applies `--set` overrides, and checks every value.
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<RunConfig> {
        let mut doc = read_toml(path)?;
        apply_overrides(&mut doc, overrides)?;
        Self::from_table(doc).map_err(|e| blame(&e.to_string(), path, overrides))
    }

    /// Deserialises and validates a config document.
    pub fn from_table(doc: toml::Table) -> anyhow::Result<RunConfig> {
        refuse_non_finite(&doc, "")?;
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
        if self.actors.threads == 0 {
            bail!("actors.threads must be >= 1");
        }
        if self.run.keep_checkpoints == 0 || self.run.checkpoint_every == 0 {
            bail!("run.keep_checkpoints and run.checkpoint_every must be >= 1");
        }
        let budget = self.budget();
        if budget.updates == 0 && budget.frames_per_update > 0 {
            bail!(
                "total_frames = {}: less than one update ({} frames: ppo.num_envs × \
                 ppo.num_steps × frame_skip = {} × {} × {}); raise it to at least {}",
                self.total_frames,
                budget.frames_per_update,
                self.ppo.num_envs,
                self.ppo.num_steps,
                self.env.frames_per_step(),
                budget.frames_per_update
            );
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

/// The error of a config read from `path` with `overrides`: an unknown key that a `--set`
/// introduced is put on that `--set`, with the nearest accepted key; one in the file gets the
/// nearest accepted key too.
fn blame(message: &str, path: &Path, overrides: &[String]) -> anyhow::Error {
    let Some(unknown) = UnknownKey::parse(message) else {
        return anyhow::anyhow!("{}: {message}", path.display());
    };
    let full_key = |field: &str| match &unknown.section {
        Some(section) => format!("{section}.{field}"),
        None => field.to_string(),
    };
    let set = overrides.iter().find(|o| {
        o.split_once('=').is_some_and(|(key, _)| {
            let key = key.trim();
            key == full_key(&unknown.field) || key.rsplit('.').next() == Some(&unknown.field)
        })
    });
    let suggestion = closest(&unknown.field, &unknown.accepted);
    match set {
        Some(set) => {
            let key = set.split_once('=').map_or(set.as_str(), |(k, _)| k.trim());
            let hint = match suggestion {
                Some(s) => {
                    let parent = key.rsplit_once('.').map(|(p, _)| format!("{p}."));
                    format!("; did you mean `{}{s}`?", parent.unwrap_or_default())
                }
                None => String::new(),
            };
            anyhow::anyhow!(
                "--set {set}: unknown key `{key}`{hint} (accepted{}: {})",
                unknown
                    .section
                    .as_ref()
                    .map_or(String::new(), |s| format!(" in `{s}`")),
                unknown.accepted_list()
            )
        }
        None => match suggestion {
            Some(s) => anyhow::anyhow!(
                "{}: {message}; did you mean `{}`?",
                path.display(),
                full_key(s)
            ),
            None => anyhow::anyhow!("{}: {message}", path.display()),
        },
    }
}

/// An "unknown field" error of the typed deserialisation, taken apart.
struct UnknownKey {
    field: String,
    accepted: Vec<String>,
    /// The dotted section it is in (`ppo`, `network.core`), when the message names one.
    section: Option<String>,
}

impl UnknownKey {
    /// Reads serde's ``unknown field `x`, expected one of `a`, `b` in `section` ``.
    fn parse(message: &str) -> Option<UnknownKey> {
        let rest = message.split_once("unknown field `")?.1;
        let (field, rest) = rest.split_once('`')?;
        let (expected, section) = match rest.rsplit_once(" in `") {
            Some((expected, section)) => (expected, section.strip_suffix('`')),
            None => (rest, None),
        };
        let accepted = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        Some(UnknownKey {
            field: field.to_string(),
            accepted,
            section: section.map(str::to_string),
        })
    }

    fn accepted_list(&self) -> String {
        self.accepted
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The accepted key nearest to `key` (edit distance at most a third of its length, at least
/// 2), or one that contains it.
fn closest<'a>(key: &str, accepted: &'a [String]) -> Option<&'a str> {
    accepted
        .iter()
        .map(|c| (strsim::levenshtein(key, c), c))
        .filter(|(d, c)| {
            *d <= (c.len().max(key.len()) / 3).max(2) || (key.len() >= 4 && c.contains(key))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

/// Refuses any float of the document (and of its arrays) that is NaN or infinite, naming its
/// key: every float option is meant to be finite, and TOML accepts `nan` and `inf`, which
/// would otherwise reach the network as NaN weights or an infinite coefficient.
fn refuse_non_finite(table: &toml::Table, prefix: &str) -> anyhow::Result<()> {
    fn check(value: &toml::Value, key: &str) -> anyhow::Result<()> {
        match value {
            toml::Value::Float(x) if !x.is_finite() => {
                bail!("{key} = {x}: must be a finite number")
            }
            toml::Value::Table(t) => refuse_non_finite(t, key),
            toml::Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| check(item, &format!("{key}[{i}]"))),
            _ => Ok(()),
        }
    }
    table.iter().try_for_each(|(k, v)| {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        check(v, &key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<RunConfig> {
        RunConfig::from_table(text.parse::<toml::Table>()?)
    }

    const BASE: &str = "name = \"t\"\nseed = 3\ntotal_frames = 1024\n[env]\nkind = \"cartpole\"\n\
        [network.encoder]\nkind = \"mlp\"\nhidden = [8]\nactivation = \"tanh\"\n";

    #[test]
    fn derived_ppo_keys_are_refused_and_unknown_ones_list_only_settable_keys() {
        let cfg = load(BASE).unwrap();
        assert_eq!((cfg.ppo.seed, cfg.ppo.total_timesteps), (3, 1024));
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

    /// Item 9 of issue 24: a mistyped `--set` key is blamed on the `--set`, with the nearest
    /// accepted key; one in the file gets the suggestion too.
    #[test]
    fn unknown_keys_are_blamed_on_their_set_with_the_nearest_key() {
        let path = Path::new("c.toml");
        let message = "unknown field `lerning_rate`, expected one of `learning_rate`, \
                       `anneal_lr` in `ppo`";
        let sets = ["seed=2".to_string(), "ppo.lerning_rate=1e-4".to_string()];
        let err = blame(message, path, &sets).to_string();
        assert!(
            err.starts_with(
                "--set ppo.lerning_rate=1e-4: unknown key `ppo.lerning_rate`; \
                             did you mean `ppo.learning_rate`?"
            ),
            "{err}"
        );
        assert!(!err.contains("c.toml"), "{err}");
        let err = blame(message, path, &[]).to_string();
        assert!(
            err.starts_with("c.toml: unknown field")
                && err.ends_with("did you mean `ppo.learning_rate`?"),
            "{err}"
        );
        let err = blame(
            "unknown field `sed`, expected one of `name`, `seed`",
            path,
            &["sed=1".into()],
        )
        .to_string();
        assert!(err.contains("did you mean `seed`?"), "{err}");
    }

    /// Item 7 of issue 24: NaN and infinite floats are refused wherever they are, naming the key.
    #[test]
    fn non_finite_floats_are_refused_naming_the_key() {
        for (extra, key) in [
            ("[ppo]\nlearning_rate = nan\n", "ppo.learning_rate = NaN"),
            ("[ppo]\nvf_coef = inf\n", "ppo.vf_coef = inf"),
            ("[ppo]\ntarget_kl = -inf\n", "ppo.target_kl = -inf"),
        ] {
            let err = load(&format!("{BASE}{extra}")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("finite"), "{err}");
        }
        let brims = BASE.to_string()
            + "[network.core]\nkind = \"brims\"\nattention_init = \"fan_in\"\n\
               attention_init_gain = nan\nlayers = [{ hidden_size = 8, modules = 2, active = 1 }]\n";
        let err = load(&brims).unwrap_err().to_string();
        assert!(
            err.contains("network.core.attention_init_gain = NaN"),
            "{err}"
        );
    }

    /// Item 5 of issue 24: the budget is `total_frames` rounded down to whole updates, with a
    /// warning when it is rounded; a budget under one update is refused.
    #[test]
    fn budgets_are_whole_updates_and_under_one_update_is_refused() {
        // 8 envs × 128 steps = 1024 steps an update; CartPole: a frame a step.
        let cfg = load(&BASE.replace("total_frames = 1024", "total_frames = 100000")).unwrap();
        let b = cfg.budget();
        assert_eq!((b.updates, b.steps, b.frames), (97, 97 * 1024, 97 * 1024));
        assert_eq!(cfg.ppo.validate().unwrap().num_iterations, b.updates);
        let warning = cfg.budget_rounding_warning().unwrap();
        assert!(
            warning.contains("97 updates") && warning.contains("99328"),
            "{warning}"
        );
        assert_eq!(load(BASE).unwrap().budget_rounding_warning(), None);
        for short in ["1", "1023"] {
            let err =
                load(&BASE.replace("total_frames = 1024", &format!("total_frames = {short}")))
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains("less than one update") && err.contains("1024"),
                "{err}"
            );
        }
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
