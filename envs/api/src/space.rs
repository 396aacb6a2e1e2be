//! Observation and action spaces.

/// Element type of a `Box` space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// Bytes (images).
    U8,
    /// 32-bit floats.
    F32,
}

/// A Gymnasium-style space.
#[derive(Clone, Debug, PartialEq)]
pub enum Space {
    /// `n` discrete actions `0..n`.
    Discrete(usize),
    /// A box of the given shape and dtype with elementwise bounds.
    Box {
        /// Shape, e.g. `[4]` for CartPole or `[k, 84, 84]` for Atari.
        shape: Vec<usize>,
        /// Element type.
        dtype: Dtype,
        /// Lower bound (same for every element, `-inf` allowed).
        low: f32,
        /// Upper bound.
        high: f32,
    },
}

impl Space {
    /// Number of scalars in one sample (`1` for `Discrete`).
    pub fn flat_size(&self) -> usize {
        match self {
            Space::Discrete(_) => 1,
            Space::Box { shape, .. } => shape.iter().product(),
        }
    }
    /// The number of actions of a `Discrete` space.
    pub fn n(&self) -> Option<usize> {
        match self {
            Space::Discrete(n) => Some(*n),
            Space::Box { .. } => None,
        }
    }
    /// The shape of a `Box` space (`[]` for `Discrete`).
    pub fn shape(&self) -> &[usize] {
        match self {
            Space::Discrete(_) => &[],
            Space::Box { shape, .. } => shape,
        }
    }
}
