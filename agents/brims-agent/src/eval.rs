//! `brims eval`: a trained agent plays whole episodes (sticky actions on); mean ± std raw
//! score, the human-normalised score, and a GIF of one episode with the module-activity strip.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use brims::StepTrace;
use candle_core::Device;
use clap::Args;
use envs_api::{Element, RgbFrame};
use ppo::{ActorCritic, Learner, ObsElement};
use rand_pcg::Pcg64;

use crate::envs::{BoxedEnv, EnvFactory};
use crate::run_config::{EnvConfig, RunConfig};
use crate::run_dir;

/// Arguments of `brims eval`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    brims eval --checkpoint runs/smoke-20261128-091327 --episodes 5\n  \
    brims eval --checkpoint runs/breakout_brims-20261128-091327/checkpoints/ckpt-00000100.json --episodes 10 --gif breakout.gif")]
pub(crate) struct EvalArgs {
    /// A checkpoint (its .json header or .safetensors file), or a run directory (its latest).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Number of episodes.
    #[arg(long, default_value_t = 10)]
    pub episodes: usize,
    /// Write a GIF of the first episode (with the BRIMs module-activity strip) here.
    #[arg(long)]
    pub gif: Option<PathBuf>,
    /// Seed of the evaluation envs and the action sampling.
    #[arg(long, default_value_t = 12345)]
    pub seed: u64,
}

/// One evaluated episode.
pub(crate) struct Episode {
    pub score: f64,
    pub length: u64,
    /// RGB frames, when recorded.
    pub frames: Vec<RgbFrame>,
    /// Per-step core traces (BRIMs), when recorded.
    pub traces: Vec<StepTrace>,
    /// Per step, when recorded: a reward, a life lost.
    pub events: telemetry::StepEvents,
    /// Per step, when recorded: the action taken.
    pub actions: Vec<u32>,
    /// Per step, when recorded: the core state was zeroed before it (episode start, life lost).
    pub resets: Vec<bool>,
    /// Per step, when recorded: a negative reward (a point conceded, in Pong).
    pub conceded: Vec<bool>,
    /// The game reports lives (`info.lives`); Pong, for one, has none.
    pub has_lives: bool,
}

/// What an evaluation keeps of its episodes besides their scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recording {
    /// Scores only.
    Nothing,
    /// The first episode's frames and activity (traces, events, actions): the GIF.
    FirstWithFrames,
    /// Every episode's activity, no frames: the analysis and the activity picture.
    Activity,
}

/// A trained policy with the run config it was trained with.
pub(crate) struct TrainedPolicy {
    pub cfg: RunConfig,
    pub learner: Learner,
    pub checkpoint: PathBuf,
}

/// Which checkpoint a path names.
enum CheckpointChoice {
    /// This header (a header or tensors file was given): no other is tried.
    File(PathBuf),
    /// The newest of this checkpoint directory that loads.
    NewestIn(PathBuf),
}

/// Finds the checkpoint a path names (header, tensors file, or run directory).
fn choose_checkpoint(path: &Path) -> anyhow::Result<CheckpointChoice> {
    if path.is_dir() {
        let dir = if path.join(run_dir::CHECKPOINT_DIR).is_dir() {
            path.join(run_dir::CHECKPOINT_DIR)
        } else {
            path.to_path_buf()
        };
        return Ok(CheckpointChoice::NewestIn(dir));
    }
    if !path.exists() {
        bail!("checkpoint {} does not exist", path.display());
    }
    let header = if path.extension().is_some_and(|e| e == "safetensors") {
        path.with_extension("json")
    } else {
        path.to_path_buf()
    };
    if !header.exists() {
        bail!(
            "checkpoint {} has no header {} beside it (a checkpoint is both files, \
             ckpt-N.json and ckpt-N.safetensors: copy them together)",
            path.display(),
            header.display()
        );
    }
    Ok(CheckpointChoice::File(header))
}

/// The newest checkpoint in `dir` that loads, as its header's path and the learner. A newer
/// one that does not load (truncated, unreadable, non-finite weights) is passed over with
/// one line on stderr naming it and why; when none loads, the newest one's error.
pub(crate) fn load_newest(
    dir: &Path,
    device: &Device,
) -> anyhow::Result<Option<(PathBuf, Learner)>> {
    let mut skipped: Vec<(PathBuf, anyhow::Error)> = Vec::new();
    for (_, header) in ppo::list_checkpoints(dir)?.into_iter().rev() {
        match Learner::resume(&header, device) {
            Ok(learner) => {
                if !skipped.is_empty() {
                    let why: Vec<String> = skipped
                        .iter()
                        .map(|(p, e)| format!("{} ({e})", file_name(p)))
                        .collect();
                    eprintln!(
                        "using {}, the newest checkpoint that loads: {} cannot be loaded",
                        header.display(),
                        why.join("; ")
                    );
                }
                return Ok(Some((header, learner)));
            }
            Err(e) => skipped.push((header, e.into())),
        }
    }
    match skipped.into_iter().next() {
        Some((header, e)) => Err(e.context(format!("cannot load checkpoint {}", header.display()))),
        None => Ok(None),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The run directory a checkpoint header sits in (`<run dir>/checkpoints/ckpt-N.json`), if it
/// is in one: a checkpoint copied elsewhere has none.
fn run_dir_of(header: &Path) -> Option<&Path> {
    let dir = header.parent()?;
    let run = dir.parent()?;
    (dir.ends_with(run_dir::CHECKPOINT_DIR) && run.join(run_dir::CONFIG_FILE).is_file())
        .then_some(run)
}

/// The same environment: the game (whatever its spelling) for Atari, the task otherwise.
pub(crate) fn same_env(a: &EnvConfig, b: &EnvConfig) -> bool {
    match (a, b) {
        (EnvConfig::Atari { game: x, .. }, EnvConfig::Atari { game: y, .. }) => {
            envs_atari::game_key(x) == envs_atari::game_key(y)
        }
        (EnvConfig::Cartpole, EnvConfig::Cartpole) => true,
        (EnvConfig::Memory { delay: x }, EnvConfig::Memory { delay: y }) => x == y,
        _ => false,
    }
}

/// The environment in words, for messages.
pub(crate) fn env_name(env: &EnvConfig) -> String {
    match env {
        EnvConfig::Atari { game, .. } => game.clone(),
        EnvConfig::Cartpole => "cartpole".into(),
        EnvConfig::Memory { delay } => format!("the memory task (delay {delay})"),
    }
}

/// The config a checkpoint's header records (None in checkpoints written without one).
pub(crate) fn embedded_config(header: &Path) -> anyhow::Result<Option<RunConfig>> {
    let Some(text) = ppo::read_header(header)?.run_config else {
        return Ok(None);
    };
    let doc: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{}: the embedded run config", header.display()))?;
    RunConfig::from_table(doc)
        .map(Some)
        .with_context(|| format!("{}: the embedded run config", header.display()))
}

/// Refuses a checkpoint trained on another environment than `env` (of `what`, e.g. a run's
/// config.toml), when its header says what it was trained on; the action count and the
/// observation shape alone do not tell Breakout from Atlantis.
pub(crate) fn check_same_env(
    header: &Path,
    embedded: Option<&RunConfig>,
    env: &EnvConfig,
    what: &Path,
) -> anyhow::Result<()> {
    if let Some(trained) = embedded {
        if !same_env(&trained.env, env) {
            bail!(
                "{}: the checkpoint was trained on {} but {} says {}; it belongs to another run",
                header.display(),
                env_name(&trained.env),
                what.display(),
                env_name(env)
            );
        }
    }
    Ok(())
}

/// Loads a checkpoint and the config it was trained with: the one its header records, or
/// (checkpoints written without one) its run's `config.toml`. A checkpoint inside a run
/// directory must match that run's environment; a run directory gives its newest checkpoint
/// that loads.
pub(crate) fn load_policy(path: &Path) -> anyhow::Result<TrainedPolicy> {
    let (header, learner) = match choose_checkpoint(path)? {
        CheckpointChoice::File(header) => {
            let learner = Learner::resume(&header, &Device::Cpu)
                .with_context(|| format!("cannot load checkpoint {}", header.display()))?;
            (header, learner)
        }
        CheckpointChoice::NewestIn(dir) => load_newest(&dir, &Device::Cpu)?
            .with_context(|| format!("no checkpoint in {}", dir.display()))?,
    };
    let embedded = embedded_config(&header)?;
    let run_cfg = match run_dir_of(&header) {
        Some(run) => {
            let path = run.join(run_dir::CONFIG_FILE);
            let cfg = RunConfig::load(&path, &[])
                .with_context(|| format!("the run config of checkpoint {}", header.display()))?;
            // Without an embedded config the checks below read this one; with one, the run's
            // config must agree with the checkpoint too.
            if embedded.is_some() {
                let (obs_shape, n_actions) = EnvFactory::spaces(&cfg.env)?;
                crate::train::check_spaces(&learner, &header, &cfg.env, &obs_shape, n_actions)?;
                check_same_env(&header, embedded.as_ref(), &cfg.env, &path)?;
                if learner.network_config() != &cfg.network {
                    bail!(
                        "{}: the checkpoint's network differs from {}",
                        header.display(),
                        path.display()
                    );
                }
            }
            Some((cfg, path))
        }
        None => None,
    };
    let (cfg, source) = match (embedded, run_cfg) {
        (Some(cfg), _) => (cfg, header.clone()),
        (None, Some((cfg, path))) => (cfg, path),
        (None, None) => bail!(
            "checkpoint {} records no run config (written by an older brims) and is not in a \
             run directory (<run dir>/checkpoints/, beside <run dir>/{}); evaluate it there",
            header.display(),
            run_dir::CONFIG_FILE
        ),
    };
    if learner.network_config() != &cfg.network {
        bail!(
            "{}: the checkpoint's network differs from {}",
            header.display(),
            source.display()
        );
    }
    let (obs_shape, n_actions) = EnvFactory::spaces(&cfg.env)?;
    crate::train::check_spaces(&learner, &header, &cfg.env, &obs_shape, n_actions)?;
    Ok(TrainedPolicy {
        cfg,
        learner,
        checkpoint: header,
    })
}

/// `brims eval`.
pub(crate) fn run(args: &EvalArgs) -> anyhow::Result<serde_json::Value> {
    if args.episodes == 0 {
        bail!("--episodes must be >= 1");
    }
    if let Some(gif) = &args.gif {
        check_writable(gif)?;
    }
    let policy = load_policy(&args.checkpoint)?;
    // Only Atari envs render frames: say so before playing, not after every episode.
    if args.gif.is_some() && !matches!(policy.cfg.env, EnvConfig::Atari { .. }) {
        bail!(
            "--gif needs an env that renders frames (an Atari game); {} does not: leave out --gif",
            policy.cfg.env.label()
        );
    }
    println!("checkpoint {}", policy.checkpoint.display());
    let episodes = evaluate(
        policy.learner.net(),
        &policy.cfg.env,
        args.episodes,
        args.seed,
        if args.gif.is_some() {
            Recording::FirstWithFrames
        } else {
            Recording::Nothing
        },
        None,
    )?;
    let scores: Vec<f64> = episodes.iter().map(|e| e.score).collect();
    for (i, e) in episodes.iter().enumerate() {
        println!(
            "episode {:>3}: score {:>8.1}  length {:>6}",
            i + 1,
            e.score,
            e.length
        );
    }
    let (mean, std) = mean_std(&scores);
    let human_normalized = match &policy.cfg.env {
        EnvConfig::Atari { game, .. } => envs_atari::reference_scores(game)
            .map(|(random, human)| (mean - random) / (human - random)),
        _ => None,
    };
    println!(
        "mean score {mean:.2} ± {std:.2} over {} episodes",
        scores.len()
    );
    match human_normalized {
        Some(h) => println!("human-normalised score {:.1}%", 100.0 * h),
        None => println!("human-normalised score: no reference scores for this env"),
    }
    if let (Some(gif), Some(first)) = (&args.gif, episodes.first()) {
        let frames: Vec<telemetry::RgbImage> = first
            .frames
            .iter()
            .map(|f| telemetry::RgbImage {
                width: f.width as u32,
                height: f.height as u32,
                rgb: f.pixels.clone(),
            })
            .collect();
        let bands = crate::activity::bands(&first.traces);
        crate::gif_writer::write_episode_gif(
            gif,
            &frames,
            (!bands.is_empty()).then_some(bands.as_slice()),
            Some(&first.events),
            crate::gif_writer::GifOptions::default(),
        )?;
        println!("wrote {}", gif.display());
    }
    Ok(serde_json::json!({
        "episodes": scores.len(),
        "mean_score": mean,
        "std_score": std,
        "human_normalized": human_normalized,
    }))
}

/// `brims play --checkpoint`: the trained agent on `game` (which must be the run's game).
pub(crate) fn play_trained(
    checkpoint: &Path,
    game: &str,
    episodes: usize,
    seed: u64,
) -> anyhow::Result<serde_json::Value> {
    let policy = load_policy(checkpoint)?;
    if let EnvConfig::Atari { game: trained, .. } = &policy.cfg.env {
        let canonical = |g: &str| {
            g.trim_start_matches("ALE/")
                .split('-')
                .next()
                .unwrap_or(g)
                .replace('_', "")
                .to_lowercase()
        };
        if canonical(trained) != canonical(game) {
            bail!("the checkpoint was trained on {trained}, not {game}");
        }
    }
    let played = evaluate(
        policy.learner.net(),
        &policy.cfg.env,
        episodes,
        seed,
        Recording::Nothing,
        None,
    )?;
    for (i, e) in played.iter().enumerate() {
        println!(
            "episode {:>3}: score {:>8.1}  length {:>6}",
            i + 1,
            e.score,
            e.length
        );
    }
    let scores: Vec<f64> = played.iter().map(|e| e.score).collect();
    let (mean, _) = mean_std(&scores);
    println!("mean score over {} episodes: {mean:.2}", scores.len());
    Ok(serde_json::json!({"episodes": scores.len(), "mean_score": mean}))
}

/// Plays `episodes` episodes of `env_cfg` with `policy`; records frames and traces of the first
/// when `record_first`; `max_steps` cuts episodes short (their score is then the partial one).
pub(crate) fn evaluate(
    net: &ActorCritic,
    env_cfg: &EnvConfig,
    episodes: usize,
    seed: u64,
    recording: Recording,
    max_steps: Option<u64>,
) -> anyhow::Result<Vec<Episode>> {
    use rand::SeedableRng;
    let mut rng = Pcg64::seed_from_u64(seed);
    let run = Plays {
        net,
        episodes,
        seed,
        recording,
        max_steps,
    };
    match EnvFactory::from_config(env_cfg)? {
        EnvFactory::Frames(make) => run.play(make(0)?, &mut rng),
        EnvFactory::Vectors(make) => run.play(make(0)?, &mut rng),
    }
}

/// Episodes to play with one env (whatever its observation type).
struct Plays<'a> {
    net: &'a ActorCritic,
    episodes: usize,
    seed: u64,
    recording: Recording,
    max_steps: Option<u64>,
}

impl Plays<'_> {
    fn play<T: Element + ObsElement>(
        &self,
        mut env: BoxedEnv<T>,
        rng: &mut Pcg64,
    ) -> anyhow::Result<Vec<Episode>> {
        (0..self.episodes)
            .map(|i| {
                let (frames, activity) = match self.recording {
                    Recording::Nothing => (false, false),
                    Recording::FirstWithFrames => (i == 0, i == 0),
                    Recording::Activity => (false, true),
                };
                play_episode(
                    self.net,
                    &mut env,
                    self.seed + i as u64,
                    (frames, activity),
                    self.max_steps,
                    rng,
                )
            })
            .collect()
    }
}

/// One real episode. A life loss ends the learner's episode (`terminated`) but not the game: the
/// core state is reset as in training, the env is reset (which continues the game), and the
/// episode ends when the env reports its statistics.
fn play_episode<T: Element + ObsElement>(
    net: &ActorCritic,
    env: &mut BoxedEnv<T>,
    seed: u64,
    (record_frames, record_activity): (bool, bool),
    max_steps: Option<u64>,
    rng: &mut Pcg64,
) -> anyhow::Result<Episode> {
    let (mut obs, _) = env.reset(Some(seed))?;
    let mut state = net.zero_state(1)?;
    let mut reset = true;
    let mut episode = Episode {
        score: 0.0,
        length: 0,
        frames: Vec::new(),
        traces: Vec::new(),
        events: telemetry::StepEvents::default(),
        actions: Vec::new(),
        resets: Vec::new(),
        conceded: Vec::new(),
        has_lives: false,
    };
    loop {
        if max_steps.is_some_and(|m| episode.length >= m) {
            return Ok(episode);
        }
        // The sampler's acting step, for one env.
        let reset_flag = [f32::from(u8::from(reset))];
        let acted = ppo::act_and_sample(net, &obs, &state, &reset_flag, rng, record_activity)?;
        if record_frames {
            if let Some(frame) = env.render() {
                episode.frames.push(frame);
            }
        }
        if let Some(trace) = acted.trace {
            episode.traces.push(trace);
        }
        let step = env.step(acted.actions[0] as usize)?;
        episode.length += 1;
        episode.score += f64::from(step.reward);
        if record_activity {
            episode.actions.push(acted.actions[0]);
            episode.resets.push(reset);
            episode.events.rewards.push(step.reward != 0.0);
            episode.conceded.push(step.reward < 0.0);
            episode.has_lives |= step.info.lives.is_some();
            episode
                .events
                .life_lost
                .push(step.terminated && step.info.episode.is_none());
        }
        if let Some(stats) = step.info.episode {
            episode.score = stats.ret;
            episode.length = stats.len;
            return Ok(episode);
        }
        if step.terminated || step.truncated {
            obs = env.reset(None)?.0;
            reset = true;
        } else {
            obs = step.obs;
            reset = false;
        }
        state = acted.next_state;
    }
}

/// Mean and (population) standard deviation.
pub(crate) fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    (mean, var.sqrt())
}

/// Fails early (before any work) when `path` cannot be written.
pub(crate) fn check_writable(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write {}: {} is not a directory",
            path.display(),
            dir.display()
        );
    }
    let probe = dir.join(format!(".brims-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("cannot write to {}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
