//! Test-time lesions of a BRIMs core (`brims lesion`): what happens to the agent's return when
//! the top-down context is replaced, modules are barred from activation, or every module is
//! forced on. The weights are untouched; only the step is changed.

use candle_core::Tensor;

/// One layer's intervention. The default changes nothing.
#[derive(Clone, Debug, Default)]
pub struct LayerLesion {
    /// The top-down slot reads this `[B, N_src]` instead of the source layer's `h` before the
    /// step (zeros, a time-mean, another env's state). Ignored for a layer without a top-down
    /// slot.
    pub top_down: Option<Tensor>,
    /// Modules that are never active: the `k` active modules are chosen among the others (at
    /// most all of them), so a masked module keeps the state it had (from a reset: zero). Its
    /// candidate still enters communication, as every inactive module's does.
    pub masked_modules: Vec<usize>,
    /// Active modules per step instead of the config's `k` (e.g. `M`: every module on).
    pub active: Option<usize>,
}

/// A lesion of every layer, bottom first; layers past the end are left as they are.
#[derive(Clone, Debug, Default)]
pub struct Lesion {
    /// Per layer.
    pub layers: Vec<LayerLesion>,
}

impl Lesion {
    /// Layer `l`'s intervention, if any.
    pub(crate) fn layer(&self, l: usize) -> Option<&LayerLesion> {
        self.layers.get(l)
    }

    /// Whether this lesion changes nothing.
    pub fn is_empty(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.top_down.is_none() && l.masked_modules.is_empty() && l.active.is_none())
    }
}
