//! The statistics of `brims analyze`, on plain sequences: which modules of a layer were active
//! at each step, and the events around them. Episodes are separate sequences; nothing is
//! counted across an episode boundary.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

/// One layer over one episode: the active modules at each step as a bit mask (module `j` =
/// bit `j`), and the steps where the core state was reset (a life lost, the episode's start).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LayerSeq {
    pub modules: usize,
    pub active: Vec<u32>,
    /// `resets[t]`: the state was zeroed before step `t` (runs and switches restart there).
    pub resets: Vec<bool>,
}

/// Fraction of steps (not at a reset) whose active set differs from the step before.
pub(crate) fn switch_rate(seqs: &[LayerSeq]) -> f64 {
    let (mut switches, mut steps) = (0usize, 0usize);
    for s in seqs {
        for t in 1..s.active.len() {
            if s.resets[t] {
                continue;
            }
            steps += 1;
            switches += usize::from(s.active[t] != s.active[t - 1]);
        }
    }
    if steps == 0 {
        f64::NAN
    } else {
        switches as f64 / steps as f64
    }
}

/// Lengths of every maximal run of consecutive active steps of every module (cut at resets
/// and episode ends).
pub(crate) fn run_lengths(seqs: &[LayerSeq]) -> Vec<usize> {
    let mut out = Vec::new();
    for s in seqs {
        for j in 0..s.modules {
            let mut run = 0;
            for t in 0..s.active.len() {
                if s.resets[t] && run > 0 {
                    out.push(run);
                    run = 0;
                }
                if s.active[t] >> j & 1 == 1 {
                    run += 1;
                } else if run > 0 {
                    out.push(run);
                    run = 0;
                }
            }
            if run > 0 {
                out.push(run);
            }
        }
    }
    out
}

/// Fraction of steps each module was active.
pub(crate) fn usage(seqs: &[LayerSeq]) -> Vec<f64> {
    let modules = seqs.first().map_or(0, |s| s.modules);
    let mut counts = vec![0usize; modules];
    let mut steps = 0;
    for s in seqs {
        for &a in &s.active {
            steps += 1;
            for (j, c) in counts.iter_mut().enumerate() {
                *c += (a >> j & 1) as usize;
            }
        }
    }
    counts
        .iter()
        .map(|&c| c as f64 / steps.max(1) as f64)
        .collect()
}

/// Entropy (bits) of the share of activity each module gets: `log2 M` when work is shared
/// evenly, 0 when one module does everything.
pub(crate) fn usage_entropy(usage: &[f64]) -> f64 {
    let total: f64 = usage.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    -usage
        .iter()
        .map(|&u| u / total)
        .filter(|&p| p > 0.0)
        .map(|p| p * p.log2())
        .sum::<f64>()
}

/// Plug-in mutual information (bits) between two discrete sequences of equal length.
pub(crate) fn mutual_information(x: &[u32], y: &[u32]) -> f64 {
    // Ordered maps: the sum runs in the same order in every process, so results are exact
    // to the last bit from one run to the next.
    use std::collections::BTreeMap;
    let n = x.len().min(y.len());
    if n == 0 {
        return 0.0;
    }
    let mut joint: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    let mut px: BTreeMap<u32, usize> = BTreeMap::new();
    let mut py: BTreeMap<u32, usize> = BTreeMap::new();
    for i in 0..n {
        *joint.entry((x[i], y[i])).or_default() += 1;
        *px.entry(x[i]).or_default() += 1;
        *py.entry(y[i]).or_default() += 1;
    }
    let n = n as f64;
    joint
        .iter()
        .map(|(&(a, b), &c)| {
            let pxy = c as f64 / n;
            let pa = px[&a] as f64 / n;
            let pb = py[&b] as f64 / n;
            pxy * (pxy / (pa * pb)).log2()
        })
        .sum()
}

/// `events[t]` = 1 if `flags` is set at any of steps `t+1 ..= t+k` of the same episode.
pub(crate) fn within_next(flags: &[bool], k: usize) -> Vec<u32> {
    (0..flags.len())
        .map(|t| {
            u32::from(
                flags[(t + 1).min(flags.len())..(t + 1 + k).min(flags.len())]
                    .iter()
                    .any(|&f| f),
            )
        })
        .collect()
}

/// MI between the active set and an event sequence, with the chance level: the same MI after
/// circularly shifting each episode's events by a random offset (which keeps both sequences'
/// own time structure and breaks only their alignment), `shuffles` times.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub(crate) struct MiWithBaseline {
    pub mi: f64,
    pub baseline_mean: f64,
    pub baseline_p95: f64,
}

pub(crate) fn mi_with_baseline(
    active: &[Vec<u32>],
    events: &[Vec<u32>],
    shuffles: usize,
    seed: u64,
) -> MiWithBaseline {
    let flat = |parts: &[Vec<u32>]| parts.concat();
    let mi = mutual_information(&flat(active), &flat(events));
    let mut rng = Pcg64::seed_from_u64(seed);
    let mut baseline: Vec<f64> = (0..shuffles)
        .map(|_| {
            let shifted: Vec<Vec<u32>> = events
                .iter()
                .map(|e| {
                    if e.is_empty() {
                        return vec![];
                    }
                    let k = rng.gen_range(0..e.len());
                    e[k..].iter().chain(&e[..k]).copied().collect()
                })
                .collect();
            mutual_information(&flat(active), &flat(&shifted))
        })
        .collect();
    baseline.sort_by(f64::total_cmp);
    let mean = baseline.iter().sum::<f64>() / baseline.len().max(1) as f64;
    let p95 = baseline
        .get(((baseline.len() as f64 * 0.95) as usize).min(baseline.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN);
    MiWithBaseline {
        mi,
        baseline_mean: mean,
        baseline_p95: p95,
    }
}

/// The 95% percentile interval of `statistic` over `reps` bootstrap resamples of the
/// episodes (indices `0..n` drawn with replacement), seeded.
pub(crate) fn bootstrap_episodes(
    n: usize,
    reps: usize,
    seed: u64,
    mut statistic: impl FnMut(&[usize]) -> f64,
) -> (f64, f64) {
    let mut rng = Pcg64::seed_from_u64(seed);
    let mut values: Vec<f64> = (0..reps)
        .map(|_| {
            let pick: Vec<usize> = (0..n).map(|_| rng.gen_range(0..n)).collect();
            statistic(&pick)
        })
        .filter(|v| v.is_finite())
        .collect();
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

/// The switch rate at each of the `before` steps preceding a flagged step (index 0 = the
/// step just before), over every flagged step with that much history in its episode; `None`
/// where no flagged step had that much (no flags at all: every entry).
pub(crate) fn switch_rate_before(
    seqs: &[LayerSeq],
    flags: &[Vec<bool>],
    before: usize,
) -> Vec<Option<f64>> {
    let mut switches = vec![0usize; before];
    let mut counts = vec![0usize; before];
    for (s, f) in seqs.iter().zip(flags) {
        for (t, _) in f.iter().enumerate().filter(|(_, &x)| x) {
            for d in 0..before {
                let Some(u) = t.checked_sub(d + 1) else { break };
                if u == 0 || s.resets[u] {
                    break;
                }
                counts[d] += 1;
                switches[d] += usize::from(s.active[u] != s.active[u - 1]);
            }
        }
    }
    switches
        .iter()
        .zip(&counts)
        .map(|(&s, &c)| (c > 0).then(|| s as f64 / c as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(modules: usize, active: &[u32]) -> LayerSeq {
        let mut resets = vec![false; active.len()];
        resets[0] = true;
        LayerSeq {
            modules,
            active: active.to_vec(),
            resets,
        }
    }

    #[test]
    fn switch_rates_and_run_lengths_of_a_known_sequence() {
        // Two modules: 01 01 01 10 10 11 → switches at t=3 and t=5 of 5 transitions.
        let s = seq(2, &[0b01, 0b01, 0b01, 0b10, 0b10, 0b11]);
        assert!((switch_rate(std::slice::from_ref(&s)) - 0.4).abs() < 1e-12);
        let mut runs = run_lengths(std::slice::from_ref(&s));
        runs.sort();
        // module 0: 3 then 1; module 1: 3.
        assert_eq!(runs, vec![1, 3, 3]);
        assert_eq!(usage(std::slice::from_ref(&s)), vec![4.0 / 6.0, 3.0 / 6.0]);
        // A reset cuts runs and is not a switch.
        let mut cut = s;
        cut.resets[2] = true;
        let mut runs = run_lengths(std::slice::from_ref(&cut));
        runs.sort();
        assert_eq!(runs, vec![1, 1, 2, 3]);
        assert!((switch_rate(&[cut]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn usage_entropy_is_log_m_when_even_and_zero_for_one_module() {
        assert!((usage_entropy(&[0.5, 0.5, 0.5, 0.5]) - 2.0).abs() < 1e-12);
        assert_eq!(usage_entropy(&[1.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn mutual_information_of_known_pairs() {
        // Identical fair bits: 1 bit. Independent (all four pairs equally often): 0.
        let x = [0, 1, 0, 1, 0, 1, 0, 1];
        assert!((mutual_information(&x, &x) - 1.0).abs() < 1e-12);
        let y = [0, 0, 1, 1, 0, 0, 1, 1];
        assert!(mutual_information(&x, &y).abs() < 1e-12);
        assert_eq!(
            within_next(&[false, false, true, false], 2),
            vec![1, 1, 0, 0]
        );
    }

    #[test]
    fn activity_independent_of_events_sits_at_the_shuffled_baseline() {
        let mut rng = Pcg64::seed_from_u64(9);
        let episodes = 20;
        let (mut active, mut events, mut coupled) = (vec![], vec![], vec![]);
        for _ in 0..episodes {
            let a: Vec<u32> = (0..300).map(|_| rng.gen_range(0..6)).collect();
            let e: Vec<u32> = (0..300).map(|_| u32::from(rng.gen_bool(0.1))).collect();
            // Events that follow the active set: set 0 → event.
            let c: Vec<u32> = a.iter().map(|&x| u32::from(x == 0)).collect();
            active.push(a);
            events.push(e);
            coupled.push(c);
        }
        let independent = mi_with_baseline(&active, &events, 50, 1);
        assert!(
            independent.mi <= independent.baseline_p95 + 1e-3,
            "independent MI {:?} above chance",
            independent
        );
        assert!((independent.mi - independent.baseline_mean).abs() < 0.01);
        let dependent = mi_with_baseline(&active, &coupled, 50, 1);
        assert!(dependent.mi > dependent.baseline_p95 + 0.3, "{dependent:?}");
    }

    #[test]
    fn switches_before_flagged_steps() {
        // Switches at t = 4 and 5, a flag at t = 6: the two steps before it both switched.
        let s = seq(2, &[1, 1, 1, 1, 2, 1, 1]);
        let flags = vec![vec![false, false, false, false, false, false, true]];
        let r = switch_rate_before(std::slice::from_ref(&s), &flags, 3);
        assert_eq!(r, vec![Some(1.0), Some(1.0), Some(0.0)]);
        // No flag (a game without lives, no life lost): no rate, not NaN.
        let none = vec![vec![false; 7]];
        assert_eq!(switch_rate_before(&[s], &none, 2), vec![None, None]);
        let (lo, hi) = bootstrap_episodes(10, 200, 3, |pick| pick.len() as f64);
        assert_eq!((lo, hi), (10.0, 10.0));
    }
}
