//! `brims play` and `brims list-games`.

use clap::Args;
use envs_api::Env;
use rand::{Rng, SeedableRng};

/// Arguments of `brims play`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    brims play --game Pong --episodes 3\n  \
    brims play --game Breakout --episodes 5 --checkpoint runs/breakout_lstm-20261128-091327/checkpoints/ckpt-00000100.json")]
pub(crate) struct PlayArgs {
    /// Game name (see `brims list-games`), e.g. Breakout or ALE/Breakout-v5, or a ROM path.
    #[arg(long)]
    pub game: String,
    /// Number of episodes.
    #[arg(long, default_value_t = 3)]
    pub episodes: usize,
    /// Play with a trained agent instead of a random one (a checkpoint's .json header).
    #[arg(long)]
    pub checkpoint: Option<std::path::PathBuf>,
    /// Seed of the env (and the random agent).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `brims list-games`: one bundled game name a line.
pub(crate) fn list_games() {
    for game in envs_atari::list_games() {
        println!("{game}");
    }
}

/// `brims play`: a random agent (or a trained one) plays whole games; prints every score.
pub(crate) fn run(args: &PlayArgs) -> anyhow::Result<serde_json::Value> {
    if args.episodes == 0 {
        anyhow::bail!("--episodes must be >= 1");
    }
    if let Some(checkpoint) = &args.checkpoint {
        return crate::eval::play_trained(checkpoint, &args.game, args.episodes, args.seed);
    }
    // Whole games: no life-loss episodes, no reward clipping needed (scores come from info).
    let mut cfg = envs_atari::AtariConfig {
        episodic_life: false,
        ..Default::default()
    };
    // No config table here: a Gymnasium id's settings (e.g. NoFrameskip-v4's) are the game's.
    if let Some(settings) = envs_atari::id_settings(&args.game)? {
        settings.apply_to(&mut cfg);
    }
    let mut env = envs_atari::make_atari(&args.game, &cfg, args.seed)?;
    let n_actions = env
        .action_space()
        .n()
        .ok_or_else(|| anyhow::anyhow!("the action space is not discrete"))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut scores = Vec::with_capacity(args.episodes);
    for episode in 0..args.episodes {
        env.reset(if episode == 0 { Some(args.seed) } else { None })?;
        let stats = loop {
            let step = env.step(rng.gen_range(0..n_actions))?;
            if let Some(stats) = step.info.episode {
                break stats;
            }
            if step.terminated || step.truncated {
                anyhow::bail!("the episode ended without statistics (an env wrapper is missing)");
            }
        };
        println!(
            "episode {:>3}: score {:>8.1}  length {:>6}",
            episode + 1,
            stats.ret,
            stats.len
        );
        scores.push(stats.ret);
    }
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    println!("mean score over {} episodes: {mean:.2}", scores.len());
    Ok(serde_json::json!({"episodes": scores.len(), "mean_score": mean}))
}
