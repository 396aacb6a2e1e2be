//! A scripted env for unit tests: observations name the episode and the step, so tests can
//! tell exactly which episode an observation belongs to.

use crate::{Dtype, Env, EnvError, Info, Space, Step};

/// Obs `[episode, t]` (episode counts resets from 0, t counts steps); reward `t` after step
/// `t` (so raw rewards are 1, 2, 3, ...); terminates after `len` steps unless `terminate` is
/// false (then it runs forever). Action 2 gives reward -5 (to test clipping).
#[derive(Debug)]
pub(crate) struct Counter {
    pub len: u64,
    pub terminate: bool,
    pub episode: i64,
    pub t: u64,
    pub seeds: Vec<Option<u64>>,
}

impl Counter {
    pub fn new(len: u64) -> Self {
        Self {
            len,
            terminate: true,
            episode: -1,
            t: 0,
            seeds: Vec::new(),
        }
    }
}

impl Env for Counter {
    type Elem = f32;
    fn observation_space(&self) -> Space {
        Space::Box {
            shape: vec![2],
            dtype: Dtype::F32,
            low: 0.0,
            high: f32::INFINITY,
        }
    }
    fn action_space(&self) -> Space {
        Space::Discrete(3)
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<f32>, Info), EnvError> {
        self.seeds.push(seed);
        self.episode += 1;
        self.t = 0;
        Ok((vec![self.episode as f32, 0.0], Info::default()))
    }
    fn step(&mut self, action: usize) -> Result<Step<f32>, EnvError> {
        if action >= 3 {
            return Err(EnvError::InvalidAction { action, n: 3 });
        }
        if self.episode < 0 {
            return Err(EnvError::NeedsReset);
        }
        self.t += 1;
        Ok(Step {
            obs: vec![self.episode as f32, self.t as f32],
            reward: if action == 2 { -5.0 } else { self.t as f32 },
            terminated: self.terminate && self.t >= self.len,
            truncated: false,
            info: Info {
                lives: Some(3),
                ..Info::default()
            },
        })
    }
}
