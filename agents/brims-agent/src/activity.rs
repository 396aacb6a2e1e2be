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
    /// Per layer: sums of attention entropy and of read RMS over every (row, module), and
    /// their count.
    attention: Vec<(f64, f64, usize)>,
}

/// One layer's input attention averaged over the rows and modules since the last take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AttentionSummary {
    /// Mean entropy (nats) of a module's input attention.
    pub entropy: f64,
    /// Mean RMS of a module's attention read.
    pub read_rms: f64,
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
        if self.attention.len() < trace.layers.len() {
            self.attention.resize(trace.layers.len(), (0.0, 0.0, 0));
        }
        for (layer, sums) in trace.layers.iter().zip(&mut self.attention) {
            sums.0 += layer
                .attention_entropy
                .iter()
                .map(|&x| f64::from(x))
                .sum::<f64>();
            sums.1 += layer.read_rms.iter().map(|&x| f64::from(x)).sum::<f64>();
            sums.2 += layer.attention_entropy.len().min(layer.read_rms.len());
        }
    }

    /// Each layer's mean attention entropy and read RMS since the last call (bottom first;
    /// empty when nothing was added), and a fresh start.
    pub(crate) fn take_attention(&mut self) -> Vec<AttentionSummary> {
        std::mem::take(&mut self.attention)
            .into_iter()
            .filter(|&(_, _, n)| n > 0)
            .map(|(entropy, read, n)| AttentionSummary {
                entropy: entropy / n as f64,
                read_rms: read / n as f64,
            })
            .collect()
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

/// One env's previous active mask (none after a reset) and its modules' current run lengths.
type EnvDynamics = (Option<Vec<bool>>, Vec<usize>);

/// Per layer, how the active set moves while training: the fraction of steps whose active set
/// differs from the env's previous step, and the mean length of a module's runs of consecutive
/// active steps. Each env is followed separately; a reset starts it afresh. A run cut by a
/// reset or by the end of the logging window counts with the length it had in the window (a
/// censored run), as `brims analyze` counts runs cut by a reset or an episode's end: counting
/// only finished runs made a module that never switches off look like runs of 1.
#[derive(Default)]
pub(crate) struct DynamicsTracker {
    /// Per (group, layer): each env's previous mask and its modules' current run lengths.
    envs: std::collections::HashMap<(usize, usize), Vec<EnvDynamics>>,
    /// Per layer: (switches, transitions, run lengths summed, runs), runs cut by a reset or the
    /// window's end included.
    sums: Vec<(usize, usize, usize, usize)>,
}

impl DynamicsTracker {
    /// One acting step of group `group`: its trace and the reset flags it acted with.
    pub(crate) fn add(&mut self, group: usize, trace: &StepTrace, resets: &[f32]) {
        if self.sums.len() < trace.layers.len() {
            self.sums.resize(trace.layers.len(), (0, 0, 0, 0));
        }
        for (l, layer) in trace.layers.iter().enumerate() {
            let m = layer.num_modules;
            if m == 0 {
                continue;
            }
            let envs = layer.active.len() / m;
            let state = self.envs.entry((group, l)).or_default();
            state.resize(envs, (None, vec![0; m]));
            let sums = &mut self.sums[l];
            for (e, (prev, runs)) in state.iter_mut().enumerate() {
                let now = &layer.active[e * m..(e + 1) * m];
                let reset = resets.get(e).is_some_and(|&r| r != 0.0);
                if reset {
                    *prev = None;
                    for run in runs.iter_mut().filter(|r| **r > 0) {
                        sums.2 += *run;
                        sums.3 += 1;
                        *run = 0;
                    }
                }
                if let Some(p) = prev.as_deref() {
                    sums.1 += 1;
                    sums.0 += usize::from(p != now);
                }
                for (run, &active) in runs.iter_mut().zip(now) {
                    if active {
                        *run += 1;
                    } else if *run > 0 {
                        sums.2 += *run;
                        sums.3 += 1;
                        *run = 0;
                    }
                }
                *prev = Some(now.to_vec());
            }
        }
    }

    /// Per layer `(switch rate, mean run length)` since the last call (NaN where nothing was
    /// seen), and a fresh count (the envs' sequences go on).
    pub(crate) fn take(&mut self) -> Vec<(f64, f64)> {
        // Runs still going are cut here: counted now, and counted again from 0 in the next
        // window.
        for (&(_, l), envs) in self.envs.iter_mut() {
            for (_, runs) in envs.iter_mut() {
                for run in runs.iter_mut().filter(|r| **r > 0) {
                    self.sums[l].2 += *run;
                    self.sums[l].3 += 1;
                    *run = 0;
                }
            }
        }
        let ratio = |a: usize, b: usize| {
            if b == 0 {
                f64::NAN
            } else {
                a as f64 / b as f64
            }
        };
        let out = self
            .sums
            .iter()
            .map(|&(sw, tr, len, runs)| (ratio(sw, tr), ratio(len, runs)))
            .collect();
        self.sums.iter_mut().for_each(|s| *s = (0, 0, 0, 0));
        out
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
                attention_entropy: vec![1.0; active.len()],
                read_rms: vec![0.1; active.len()],
                slot_attention: vec![0.3; active.len()],
                num_modules: modules,
            }],
        }
    }

    #[test]
    fn dynamics_count_switches_and_runs_per_env() {
        let mut d = DynamicsTracker::default();
        // One env, two modules: 10 10 01 01 (reset) 01 10.
        let steps = [
            [true, false],
            [true, false],
            [false, true],
            [false, true],
            [false, true],
            [true, false],
        ];
        let resets = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        for (a, r) in steps.iter().zip(resets) {
            d.add(0, &trace(a, 2), &[r]);
        }
        let got = d.take();
        // Transitions (not across resets): 4, switches 2 (t=2, t=5).
        assert!((got[0].0 - 0.5).abs() < 1e-12);
        // Runs: module 0 ran 2 (ended at t=2), then 1 (cut by the window's end at t=5);
        // module 1 ran 2 (cut by the reset at t=4), then 1 (ended at t=5): mean 6 / 4.
        assert!((got[0].1 - 1.5).abs() < 1e-12, "{got:?}");
        assert!(d.take()[0].0.is_nan());
    }

    /// A module that never switches off has runs as long as the window (as `brims analyze`
    /// counts them), not none or runs of 1; the window's end cuts them, and the next window
    /// counts afresh.
    #[test]
    fn runs_cut_by_the_window_or_a_reset_are_counted() {
        let mut d = DynamicsTracker::default();
        // Module 0 always on; module 1 on for one step in twenty.
        for t in 0..20 {
            d.add(0, &trace(&[true, t == 7], 2), &[0.0]);
        }
        let got = d.take();
        // Runs: module 0 one of 20, module 1 one of 1: (20 + 1) / 2.
        assert!((got[0].1 - 10.5).abs() < 1e-12, "{got:?}");
        for _ in 0..5 {
            d.add(0, &trace(&[true, false], 2), &[0.0]);
        }
        // A reset cuts module 0's run of 5; then 3 more steps.
        for t in 0..3 {
            d.add(0, &trace(&[true, false], 2), &[f32::from(u8::from(t == 0))]);
        }
        assert!((d.take()[0].1 - 4.0).abs() < 1e-12);
    }

    #[test]
    fn attention_is_averaged_per_layer_and_taken_once() {
        let mut collector = ActivityCollector::default();
        let mut t = trace(&[true, false], 2);
        t.layers[0].attention_entropy = vec![1.0, 0.5];
        t.layers[0].read_rms = vec![0.2, 0.4];
        collector.add(&t, None);
        t.layers[0].attention_entropy = vec![0.0, 0.5];
        collector.add(&t, None);
        let got = collector.take_attention();
        assert_eq!(got.len(), 1);
        assert!((got[0].entropy - 0.5).abs() < 1e-12);
        assert!((got[0].read_rms - 0.3).abs() < 1e-6);
        assert!(collector.take_attention().is_empty());
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
