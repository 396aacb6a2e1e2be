//! The environment trait and the types a step returns (Gymnasium's semantics).

use crate::{EnvError, Space};

/// The element type of an observation: `u8` for Atari frames, `f32` for vector observations.
pub trait Element: Copy + Default + Send + Sync + std::fmt::Debug + 'static {}
impl Element for u8 {}
impl Element for f32 {}

/// Statistics of one finished (real, not life-loss) episode.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct EpisodeStats {
    /// Raw, unclipped return of the episode (the game score for Atari).
    pub ret: f64,
    /// Length of the episode in agent steps.
    pub len: u64,
}

/// Typed info returned with every observation.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Info {
    /// Lives left, for games that have lives.
    pub lives: Option<u32>,
    /// Set on the step where a real episode ended (filled by the episode-statistics wrapper).
    pub episode: Option<EpisodeStats>,
    /// Emulator frames consumed since the env was created (Atari; 0 elsewhere).
    pub frame_number: u64,
}

/// What `Env::step` returns: `(obs, reward, terminated, truncated, info)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Step<T: Element> {
    /// The observation after the action, flattened in the space's shape (row-major).
    pub obs: Vec<T>,
    /// Reward for this step (after any reward wrapper).
    pub reward: f32,
    /// The MDP reached a terminal state: do not bootstrap.
    pub terminated: bool,
    /// The episode was cut (time limit): bootstrap from `obs`.
    pub truncated: bool,
    /// Typed info.
    pub info: Info,
}

/// An RGB frame, `height × width × 3`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbFrame {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `height * width * 3` bytes.
    pub pixels: Vec<u8>,
}

/// An environment with discrete actions, owned by one thread at a time (`Send`).
///
/// Semantics follow Gymnasium: call `reset` before the first `step`; after `terminated` or
/// `truncated`, call `reset` again (a vector env does this for you).
pub trait Env: Send {
    /// Observation element type.
    type Elem: Element;
    /// The observation space (a `Space::Box`, whose shape gives the observation layout).
    fn observation_space(&self) -> Space;
    /// The action space (`Space::Discrete(n)`).
    fn action_space(&self) -> Space;
    /// Starts a new episode. `Some(seed)` reseeds the env's random generator.
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<Self::Elem>, Info), EnvError>;
    /// Applies `action` (must be `< n`, else `EnvError::InvalidAction`).
    fn step(&mut self, action: usize) -> Result<Step<Self::Elem>, EnvError>;
    /// The current screen as RGB, when the env can render.
    fn render(&self) -> Option<RgbFrame> {
        None
    }
    /// The emulator's RAM (Atari: 128 bytes), for probes of what a policy knows; `None` for
    /// envs without one.
    fn ram(&self) -> Option<Vec<u8>> {
        None
    }
}

impl<E: Env + ?Sized> Env for Box<E> {
    type Elem = E::Elem;
    fn observation_space(&self) -> Space {
        (**self).observation_space()
    }
    fn action_space(&self) -> Space {
        (**self).action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<Self::Elem>, Info), EnvError> {
        (**self).reset(seed)
    }
    fn step(&mut self, action: usize) -> Result<Step<Self::Elem>, EnvError> {
        (**self).step(action)
    }
    fn render(&self) -> Option<RgbFrame> {
        (**self).render()
    }
    fn ram(&self) -> Option<Vec<u8>> {
        (**self).ram()
    }
}
