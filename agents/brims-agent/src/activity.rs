//! BRIMs module activity: per-step core traces → the bands telemetry draws and logs (per-module
//! active rates, null-attention histograms, the steps × modules picture with one band per layer
//! that shows the upper layer plan and the lower layer react).

use brims::StepTrace;
use telemetry::ActivityBand;

/// Env 0's activity over an episode, one band per layer (bottom first), step `t` = trace `t`.
pub(crate) fn bands(traces: &[StepTrace]) -> Vec<ActivityBand> {
    let mut collector = ActivityCollector::default();
    for trace in traces {
        collector.add(trace, Some(1));
    }
    collector.take_bands()
}

/// Gathers module activity of many steps (and envs) between two log points: every (step, env)
/// pair becomes one row of its layer's band.
#[derive(Default)]
pub(crate) struct ActivityCollector {
    /// Per layer: (module count, active `[rows, M]`, null attention `[rows, M]`).
    layers: Vec<(usize, Vec<bool>, Vec<f32>)>,
}

impl ActivityCollector {
    /// Adds one step's trace; `envs` limits how many env rows are kept (`None`: all).
    pub(crate) fn add(&mut self, trace: &StepTrace, envs: Option<usize>) {
        if self.layers.len() < trace.layers.len() {
            self.layers
                .resize(trace.layers.len(), (0, Vec::new(), Vec::new()));
        }
        for (layer, (modules, active, null)) in trace.layers.iter().zip(&mut self.layers) {
            let m = layer.num_modules;
            let keep = envs.map_or(layer.active.len(), |e| (e * m).min(layer.active.len()));
            *modules = m;
            active.extend_from_slice(&layer.active[..keep]);
            null.extend_from_slice(&layer.null_attention[..keep.min(layer.null_attention.len())]);
        }
    }

    /// The bands gathered so far (one per layer), and a fresh start.
    pub(crate) fn take_bands(&mut self) -> Vec<ActivityBand> {
        std::mem::take(&mut self.layers)
            .into_iter()
            .filter(|(m, active, _)| *m > 0 && !active.is_empty())
            .filter_map(|(m, active, null)| {
                let band = ActivityBand::new(active.len() / m, m, active).ok()?;
                if null.len() == band.steps() * m {
                    band.with_null_attention(null).ok()
                } else {
                    Some(band)
                }
            })
            .collect()
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
        let mut collector = ActivityCollector::default();
        // two envs × three modules, two steps
        collector.add(&trace(&[true, false, true, true, true, false], 3), None);
        collector.add(&trace(&[false, false, true, true, false, false], 3), None);
        let bands = collector.take_bands();
        assert_eq!(bands[0].active_rates(), vec![0.75, 0.25, 0.5]);
        assert!(collector.take_bands().is_empty(), "taking starts afresh");
    }

    #[test]
    fn bands_take_env_zero_per_layer() {
        let traces = vec![
            trace(&[true, false, true, true], 2),
            trace(&[false, true, true, true], 2),
        ];
        let bands = bands(&traces);
        assert_eq!(bands.len(), 1);
        assert_eq!((bands[0].steps(), bands[0].modules()), (2, 2));
        assert!(bands[0].is_active(0, 0) && !bands[0].is_active(0, 1));
        assert!(!bands[0].is_active(1, 0) && bands[0].is_active(1, 1));
    }
}
