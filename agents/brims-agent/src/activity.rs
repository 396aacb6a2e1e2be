//! BRIMs module activity: per-step core traces → TensorBoard rates, histograms and the
//! steps × modules picture (one band per layer) that shows the upper layer plan and the lower
//! layer react.

use brims::StepTrace;
use telemetry::{ActivityBand, RunLogger};

/// Env 0's activity over an episode, one band per layer (bottom first).
pub(crate) fn bands(traces: &[StepTrace]) -> Vec<ActivityBand> {
    let Some(first) = traces.first() else {
        return Vec::new();
    };
    (0..first.layers.len())
        .filter_map(|l| {
            let modules = first.layers[l].num_modules;
            let mut active = Vec::with_capacity(traces.len() * modules);
            let mut null = Vec::with_capacity(traces.len() * modules);
            for trace in traces {
                let layer = &trace.layers[l];
                active.extend_from_slice(&layer.active[..modules]);
                null.extend_from_slice(&layer.null_attention[..modules]);
            }
            ActivityBand::new(traces.len(), modules, active)
                .and_then(|b| b.with_null_attention(null))
                .ok()
        })
        .collect()
}

/// Accumulates module activity over many steps and envs between two log points.
#[derive(Default)]
pub(crate) struct ActivityStats {
    /// Per layer: how often each module was active.
    active_counts: Vec<Vec<u64>>,
    /// Per layer: how many (env, step) samples were seen.
    samples: Vec<u64>,
    /// Per layer: null-attention scores (every module of every env and step).
    null_attention: Vec<Vec<f64>>,
}

impl ActivityStats {
    pub(crate) fn add(&mut self, trace: &StepTrace) {
        if self.active_counts.len() < trace.layers.len() {
            self.active_counts.resize(trace.layers.len(), Vec::new());
            self.samples.resize(trace.layers.len(), 0);
            self.null_attention.resize(trace.layers.len(), Vec::new());
        }
        for (l, layer) in trace.layers.iter().enumerate() {
            let m = layer.num_modules;
            if m == 0 {
                continue;
            }
            let counts = &mut self.active_counts[l];
            counts.resize(m, 0);
            for row in layer.active.chunks(m) {
                for (j, &on) in row.iter().enumerate() {
                    counts[j] += u64::from(on);
                }
                self.samples[l] += 1;
            }
            self.null_attention[l].extend(layer.null_attention.iter().map(|&x| f64::from(x)));
        }
    }

    /// Active rate of every module, per layer.
    pub(crate) fn rates(&self) -> Vec<Vec<f64>> {
        self.active_counts
            .iter()
            .zip(&self.samples)
            .map(|(counts, &n)| counts.iter().map(|&c| c as f64 / n.max(1) as f64).collect())
            .collect()
    }

    /// Writes `brims/layer{l}/module{j}_active_rate` and the `brims/layer{l}/null_attention`
    /// histogram, then starts counting afresh.
    pub(crate) fn log(&mut self, logger: &mut RunLogger, step: u64) -> anyhow::Result<()> {
        for (l, rates) in self.rates().iter().enumerate() {
            for (j, rate) in rates.iter().enumerate() {
                logger.scalar(&format!("brims/layer{l}/module{j}_active_rate"), *rate, step)?;
            }
            if !self.null_attention[l].is_empty() {
                logger.histogram(&format!("brims/layer{l}/null_attention"), &self.null_attention[l], step)?;
            }
        }
        *self = ActivityStats::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brims::LayerTrace;

    fn trace(active: &[bool], modules: usize) -> StepTrace {
        StepTrace {
            layers: vec![LayerTrace {
                active: active.to_vec(),
                null_attention: vec![0.5; active.len()],
                num_modules: modules,
            }],
        }
    }

    #[test]
    fn rates_count_every_env_and_step() {
        let mut stats = ActivityStats::default();
        // two envs × three modules, two steps
        stats.add(&trace(&[true, false, true, true, true, false], 3));
        stats.add(&trace(&[false, false, true, true, false, false], 3));
        assert_eq!(stats.rates(), vec![vec![0.75, 0.25, 0.5]]);
    }

    #[test]
    fn bands_take_env_zero_per_layer() {
        let traces = vec![trace(&[true, false], 2), trace(&[false, true], 2)];
        let bands = bands(&traces);
        assert_eq!(bands.len(), 1);
        assert_eq!((bands[0].steps(), bands[0].modules()), (2, 2));
        assert!(bands[0].is_active(0, 0) && !bands[0].is_active(0, 1));
        assert!(!bands[0].is_active(1, 0) && bands[0].is_active(1, 1));
    }
}
