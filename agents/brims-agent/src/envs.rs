//! Builds the environments a config names, as boxed `Env`s an actor thread can own.

use envs_api::{Env, EnvError};

use crate::config::run::EnvConfig;

/// A boxed env with observations of element type `T`.
pub(crate) type BoxedEnv<T> = Box<dyn Env<Elem = T>>;
/// A factory called inside an actor thread with the env's index.
pub(crate) type MakeEnv<T> = Box<dyn Fn(usize) -> Result<BoxedEnv<T>, EnvError> + Send + Sync>;

/// Env factories by observation type: Atari frames (u8) or vectors (f32).
pub(crate) enum EnvFactory {
    Frames(MakeEnv<u8>),
    Vectors(MakeEnv<f32>),
}

/// Checks that `game` can replace the game of `cfg`'s env (an Atari env, a bundled game):
/// one env is built to ask ALE.
pub(crate) fn check_game(cfg: &EnvConfig, game: &str) -> anyhow::Result<()> {
    match cfg {
        EnvConfig::Atari { atari, .. } => {
            envs_atari::make_atari(game, atari, 1)?;
            Ok(())
        }
        _ => anyhow::bail!("games are for Atari configs; this config's env is not Atari"),
    }
}

impl EnvFactory {
    /// The observation shape and action count of `cfg`'s env (one env is built to ask it).
    pub(crate) fn spaces(cfg: &EnvConfig) -> anyhow::Result<(Vec<usize>, usize)> {
        fn of<T: envs_api::Element>(env: BoxedEnv<T>) -> anyhow::Result<(Vec<usize>, usize)> {
            let shape = env.observation_space().shape().to_vec();
            let n = env
                .action_space()
                .n()
                .ok_or_else(|| anyhow::anyhow!("the env's action space is not discrete"))?;
            Ok((shape, n))
        }
        match Self::from_config(cfg)? {
            EnvFactory::Frames(make) => of(make(0)?),
            EnvFactory::Vectors(make) => of(make(0)?),
        }
    }

    /// The factory for `cfg`. Env `i` of a pool is seeded by the pool with `seed + i`.
    pub(crate) fn from_config(cfg: &EnvConfig) -> anyhow::Result<EnvFactory> {
        Ok(match cfg {
            EnvConfig::Atari { game, atari } => {
                let (game, atari) = (game.clone(), atari.clone());
                EnvFactory::Frames(Box::new(move |i| {
                    let env = envs_atari::make_atari(&game, &atari, i as u64 + 1)
                        .map_err(EnvError::from)?;
                    Ok(Box::new(env) as BoxedEnv<u8>)
                }))
            }
            EnvConfig::Cartpole => EnvFactory::Vectors(Box::new(|_| {
                Ok(Box::new(envs_api::cartpole_v1()) as BoxedEnv<f32>)
            })),
            EnvConfig::Memory { delay } => {
                let delay = *delay;
                EnvFactory::Vectors(Box::new(move |_| {
                    Ok(Box::new(envs_api::memory_cue(delay)) as BoxedEnv<f32>)
                }))
            }
        })
    }
}
