//! `brims eval`: a trained agent plays whole episodes (sticky actions on); mean ± std raw
//! score, the human-normalised score, and a GIF of one episode with the module-activity strip.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use brims::StepTrace;
use clap::Args;
use envs_api::{Element, RgbFrame};
use ppo::{ActorCritic, ObsElement};
use rand_pcg::Pcg64;

use crate::config::run::EnvConfig;
use crate::envs::{BoxedEnv, EnvFactory};

pub(crate) mod checkpoint;
pub(crate) mod gif;
pub(crate) mod spaces;
use crate::eval::checkpoint::load_policy;

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
        crate::eval::gif::write_episode_gif(
            gif,
            &frames,
            (!bands.is_empty()).then_some(bands.as_slice()),
            Some(&first.events),
            crate::eval::gif::GifOptions::default(),
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
