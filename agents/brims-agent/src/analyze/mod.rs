//! `brims analyze`: does the upper layer plan and the lower layer react? Plays evaluation
//! episodes with a trained BRIMs agent, records each layer's active modules and attention per
//! step with the actions, rewards and lives lost, and writes `analysis.md`, `analysis.json` and
//! a raster picture of the module activity.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use plotters::prelude::*;
use ppo::ActorCritic;
use serde::Serialize;

use crate::config::run::EnvConfig;
use crate::envs::EnvFactory;
use stats::LayerSeq;

pub(crate) mod lesion;
pub(crate) mod probe;
pub(crate) mod probe_stats;
pub(crate) mod stats;

/// Arguments of `brims analyze`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:\n  \
    brims analyze runs/breakout_brims-20261129-101500 --episodes 10 --out analysis-breakout")]
pub(crate) struct AnalyzeArgs {
    /// A BRIMs (or RIMs) checkpoint: header, tensors file, or run directory (latest).
    pub checkpoint: PathBuf,
    /// Evaluation episodes to play (whole games, sticky actions on).
    #[arg(long, default_value_t = 10)]
    pub episodes: usize,
    /// Output directory (default: <run dir>/analysis); refused if it exists unless --force.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an earlier analysis: only a directory analyze wrote (it holds the marker file
    /// `.brims-analysis` and nothing but analyze's files), never a run or any other directory.
    #[arg(long)]
    pub force: bool,
    /// Seed of the episodes (ALE and the action sampling).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Cut each episode after this many steps.
    #[arg(long, default_value_t = 27_000)]
    pub max_steps: usize,
    /// Steps ahead for "a setback / reward within k steps".
    #[arg(long, default_value_t = 10)]
    pub horizon: usize,
}

/// One recorded episode.
pub(crate) struct Recorded {
    /// Per layer: active masks per step.
    pub layers: Vec<LayerSeq>,
    /// Per layer, per step: mean over modules of the attention on the top-down slot (None for
    /// layers without one).
    pub top_down: Vec<Option<Vec<f64>>>,
    pub actions: Vec<u32>,
    /// A non-zero reward at this step.
    pub rewarded: Vec<bool>,
    /// A setback at this step: a life lost (the game goes on) in games with lives, a point
    /// conceded (a negative reward) in games without (Pong).
    pub setbacks: Vec<bool>,
    /// The game has lives, so a setback is a life lost.
    pub has_lives: bool,
    pub score: f64,
}

/// Fewer episodes than this make no claim: a bootstrap over one to a few episodes has (near)
/// zero width and would say "holds" about noise.
const MIN_CLAIM_EPISODES: usize = 10;

/// The name of the setback event: a life lost where the game has lives, else a point conceded.
fn setback_name(has_lives: bool) -> &'static str {
    if has_lives {
        "life lost"
    } else {
        "point conceded"
    }
}

/// `brims analyze`.
pub(crate) fn run(args: &AnalyzeArgs) -> anyhow::Result<serde_json::Value> {
    if args.episodes == 0 {
        bail!("--episodes must be >= 1");
    }
    let policy = crate::eval::checkpoint::load_policy(&args.checkpoint)?;
    let Some(brims::CoreConfig::Brims(core)) = &policy.cfg.network.core else {
        bail!(
            "{} is not a BRIMs agent: the analysis needs BRIMs modules (RIMs, a one-layer \
             BRIMs, gets the per-layer part)",
            args.checkpoint.display()
        );
    };
    let n_layers = core.layers.len();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&policy.checkpoint, "analysis"));
    // Checked before the episodes are played, so a refusal costs nothing.
    let replaced = check_out(&out, args.force)?;
    // Sticky actions on, as the standard evaluation protocol (Machado et al. 2018).
    let mut env_cfg = policy.cfg.env.clone();
    if let EnvConfig::Atari { atari, .. } = &mut env_cfg {
        atari.repeat_action_probability = 0.25;
    }
    let episodes = record(policy.learner.net(), &env_cfg, args)?;
    let action_names = action_names(&env_cfg)?;
    let analysis = analyse(&episodes, n_layers, args.horizon);
    for file in &replaced {
        std::fs::remove_file(file).with_context(|| format!("cannot replace {}", file.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // The marker first: a directory analyze began to write is one `--force` may replace.
    crate::run::dir::write_atomic(&out.join(MARKER_FILE), MARKER_TEXT.as_bytes())?;
    draw_raster(&out.join("raster.png"), &episodes[0], &action_names, 600)?;
    let md = markdown(&analysis, &policy.checkpoint, args, &env_cfg);
    crate::run::dir::write_atomic(&out.join("analysis.md"), md.as_bytes())?;
    crate::run::dir::write_atomic(
        &out.join("analysis.json"),
        serde_json::to_string_pretty(&analysis)?.as_bytes(),
    )?;
    print!("{md}");
    Ok(serde_json::json!({"out": out, "layers": n_layers}))
}

/// The file that marks a directory as written by `brims analyze`: `--force` replaces only a
/// directory holding it and nothing but analyze's own files.
const MARKER_FILE: &str = ".brims-analysis";
const MARKER_TEXT: &str = "written by `brims analyze`; `--force` may replace this directory\n";
/// Every file analyze writes into its output directory.
const OUTPUT_FILES: [&str; 4] = [MARKER_FILE, "raster.png", "analysis.md", "analysis.json"];

/// `<run dir>/<name>` for a checkpoint in `<run dir>/checkpoints/`; `<name>` beside a
/// checkpoint that lives elsewhere (analyze's `analysis`, lesion's `lesions`, probe's `probes`).
pub(crate) fn default_out(checkpoint: &Path, name: &str) -> PathBuf {
    let dir = checkpoint.parent().unwrap_or(Path::new("."));
    let run_dir = match dir.parent() {
        Some(run) if dir.ends_with(crate::run::dir::CHECKPOINT_DIR) => run,
        _ => dir,
    };
    run_dir.join(name)
}

/// Checks that the analysis may be written to `out`, and returns the files of an earlier
/// analysis there that `--force` replaces. An existing directory needs `--force`, and even then
/// only an empty one, or one analyze wrote (its marker file) that holds nothing else, is used:
/// a run directory, the working directory or any other directory is never emptied.
fn check_out(out: &Path, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    if !out.exists() {
        return Ok(Vec::new());
    }
    if !force {
        bail!(
            "{} exists; pass --force to replace an earlier analysis, or choose another --out",
            out.display()
        );
    }
    if !out.is_dir() {
        bail!(
            "--out {} exists and is not a directory; choose another --out",
            out.display()
        );
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    if names.is_empty() {
        return Ok(Vec::new());
    }
    if !names.iter().any(|n| n == MARKER_FILE) {
        bail!(
            "--force replaces only a directory `brims analyze` wrote, and {} is not one (no {MARKER_FILE}); \
             it is left as it is: choose another --out",
            out.display()
        );
    }
    // write_atomic's temp files (`analysis.tmp`) are analyze's own too.
    let mut foreign: Vec<&String> = names
        .iter()
        .filter(|n| !OUTPUT_FILES.contains(&n.as_str()) && !n.ends_with(".tmp"))
        .collect();
    if !foreign.is_empty() {
        foreign.sort();
        bail!(
            "--force replaces only what `brims analyze` wrote, and {} also holds {}; it is left \
             as it is: choose another --out",
            out.display(),
            foreign
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(names.iter().map(|n| out.join(n)).collect())
}

fn action_names(env_cfg: &EnvConfig) -> anyhow::Result<Vec<String>> {
    Ok(match env_cfg {
        EnvConfig::Atari { game, atari } => envs_atari::make_atari(game, atari, 1)?
            .action_meanings()
            .into_iter()
            .map(str::to_string)
            .collect(),
        _ => {
            let (_, n) = EnvFactory::spaces(env_cfg)?;
            (0..n).map(|a| a.to_string()).collect()
        }
    })
}

/// Plays `args.episodes` evaluation episodes with eval's episode loop, keeping every step's
/// activity, and turns each into the sequences the statistics read.
fn record(
    net: &ActorCritic,
    env_cfg: &EnvConfig,
    args: &AnalyzeArgs,
) -> anyhow::Result<Vec<Recorded>> {
    let played = crate::eval::evaluate(
        net,
        env_cfg,
        args.episodes,
        args.seed,
        crate::eval::Recording::Activity,
        Some(args.max_steps as u64),
    )?;
    played.into_iter().map(recorded).collect()
}

/// One played episode as per-layer active masks (module `j` = bit `j`) and the mean attention
/// of each layer's modules on its top-down slot, beside the actions and events.
fn recorded(e: crate::eval::Episode) -> anyhow::Result<Recorded> {
    let first = e
        .traces
        .first()
        .context("the core reported no module activity")?;
    let mut layers: Vec<LayerSeq> = first
        .layers
        .iter()
        .map(|lt| LayerSeq {
            modules: lt.num_modules,
            active: Vec::with_capacity(e.traces.len()),
            resets: e.resets.clone(),
        })
        .collect();
    // Slot 1 of a module is its top-down input, for layers that have two slots.
    let mut top_down: Vec<Option<Vec<f64>>> = first
        .layers
        .iter()
        .map(|lt| (lt.slot_attention.len() >= 2 * lt.num_modules).then(Vec::new))
        .collect();
    for trace in &e.traces {
        for ((lt, seq), td) in trace.layers.iter().zip(&mut layers).zip(&mut top_down) {
            let mask = lt
                .active
                .iter()
                .enumerate()
                .fold(0u32, |m, (j, &a)| m | (u32::from(a) << j));
            seq.active.push(mask);
            if let Some(td) = td {
                let m = lt.num_modules;
                let sum: f64 = (0..m)
                    .map(|j| f64::from(lt.slot_attention[j * 2 + 1]))
                    .sum();
                td.push(sum / m as f64);
            }
        }
    }
    Ok(Recorded {
        layers,
        top_down,
        actions: e.actions,
        rewarded: e.events.rewards,
        setbacks: if e.has_lives {
            e.events.life_lost
        } else {
            e.conceded
        },
        has_lives: e.has_lives,
        score: e.score,
    })
}

/// What the analysis found for one layer.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LayerAnalysis {
    pub layer: usize,
    pub modules: usize,
    pub switch_rate: f64,
    pub mean_run_length: f64,
    /// Run lengths binned `1, 2, 3–4, 5–8, 9–16, 17–32, 33+` (counts).
    pub run_length_bins: Vec<usize>,
    pub usage: Vec<f64>,
    pub usage_entropy_bits: f64,
    pub max_usage_entropy_bits: f64,
    /// Modules active in under 1% of steps.
    pub idle_modules: Vec<usize>,
    /// MI between the active set and "a setback within `horizon` steps".
    pub mi_setback: stats::MiWithBaseline,
    pub mi_reward: stats::MiWithBaseline,
    pub mi_action: stats::MiWithBaseline,
    /// Switch rate 1, 2, … steps before a setback (`None`: no setback with that much history).
    pub switch_rate_before_setback: Vec<Option<f64>>,
    /// Mean attention on the top-down slot (None without one).
    pub top_down_attention: Option<f64>,
}

/// A tested claim.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Claim {
    pub claim: String,
    pub estimate: f64,
    pub interval: (f64, f64),
    pub verdict: String,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Analysis {
    pub episodes: usize,
    pub steps: usize,
    pub mean_score: f64,
    /// What a setback is in this game: "life lost" or "point conceded".
    pub setback_event: &'static str,
    /// Setbacks over all episodes.
    pub setbacks: usize,
    pub horizon: usize,
    pub layers: Vec<LayerAnalysis>,
    pub claims: Vec<Claim>,
}

const BINS: [(usize, usize); 7] = [
    (1, 1),
    (2, 2),
    (3, 4),
    (5, 8),
    (9, 16),
    (17, 32),
    (33, usize::MAX),
];

fn analyse(episodes: &[Recorded], n_layers: usize, horizon: usize) -> Analysis {
    let setback: Vec<Vec<bool>> = episodes.iter().map(|e| e.setbacks.clone()).collect();
    let event = setback_name(episodes.iter().any(|e| e.has_lives));
    let rewarded: Vec<Vec<bool>> = episodes.iter().map(|e| e.rewarded.clone()).collect();
    let setback_soon: Vec<Vec<u32>> = setback
        .iter()
        .map(|f| stats::within_next(f, horizon))
        .collect();
    let reward_soon: Vec<Vec<u32>> = rewarded
        .iter()
        .map(|f| stats::within_next(f, horizon))
        .collect();
    let actions: Vec<Vec<u32>> = episodes.iter().map(|e| e.actions.clone()).collect();
    let mut layers = Vec::new();
    let mut per_layer_seqs = Vec::new();
    let mut baselines = Vec::new();
    for l in 0..n_layers {
        let seqs: Vec<LayerSeq> = episodes.iter().map(|e| e.layers[l].clone()).collect();
        let active: Vec<Vec<u32>> = seqs.iter().map(|s| s.active.clone()).collect();
        let runs = stats::run_lengths(&seqs);
        let usage = stats::usage(&seqs);
        let modules = seqs.first().map_or(0, |s| s.modules);
        let setback_mi = stats::mi_with_baseline(&active, &setback_soon, 100, 11 + l as u64);
        baselines.push(setback_mi.baseline_mean);
        let td: Vec<f64> = episodes
            .iter()
            .filter_map(|e| e.top_down[l].as_ref())
            .flatten()
            .copied()
            .collect();
        layers.push(LayerAnalysis {
            layer: l,
            modules,
            switch_rate: stats::switch_rate(&seqs),
            mean_run_length: runs.iter().sum::<usize>() as f64 / runs.len().max(1) as f64,
            run_length_bins: BINS
                .iter()
                .map(|&(lo, hi)| runs.iter().filter(|&&r| r >= lo && r <= hi).count())
                .collect(),
            usage_entropy_bits: stats::usage_entropy(&usage),
            max_usage_entropy_bits: (modules as f64).log2(),
            idle_modules: usage
                .iter()
                .enumerate()
                .filter(|(_, &u)| u < 0.01)
                .map(|(j, _)| j)
                .collect(),
            usage,
            mi_setback: setback_mi,
            mi_reward: stats::mi_with_baseline(&active, &reward_soon, 100, 21 + l as u64),
            mi_action: stats::mi_with_baseline(&active, &actions, 100, 31 + l as u64),
            switch_rate_before_setback: stats::switch_rate_before(&seqs, &setback, 20),
            top_down_attention: (!td.is_empty()).then(|| td.iter().sum::<f64>() / td.len() as f64),
        });
        per_layer_seqs.push(seqs);
    }
    let claims = layer_claims(
        episodes.len(),
        &per_layer_seqs,
        &layers,
        &baselines,
        &setback,
        &setback_soon,
        event,
        horizon,
    );
    Analysis {
        episodes: episodes.len(),
        steps: episodes.iter().map(|e| e.actions.len()).sum(),
        mean_score: episodes.iter().map(|e| e.score).sum::<f64>() / episodes.len().max(1) as f64,
        setback_event: event,
        setbacks: setback.iter().flatten().filter(|&&x| x).count(),
        horizon,
        layers,
        claims,
    }
}

/// The two claims about the layers (two or more): the upper layer switches less often, and
/// the lower layer's activity tells more of a setback coming; none with one layer.
#[allow(clippy::too_many_arguments)]
fn layer_claims(
    n_episodes: usize,
    per_layer_seqs: &[Vec<LayerSeq>],
    layers: &[LayerAnalysis],
    baselines: &[f64],
    setback: &[Vec<bool>],
    setback_soon: &[Vec<u32>],
    event: &str,
    horizon: usize,
) -> Vec<Claim> {
    let n_layers = per_layer_seqs.len();
    let mut claims = Vec::new();
    if n_layers < 2 {
        return claims;
    }
    let (lower, upper) = (&per_layer_seqs[0], &per_layer_seqs[n_layers - 1]);
    let n = n_episodes;
    let pick = |seqs: &[LayerSeq], idx: &[usize]| -> Vec<LayerSeq> {
        idx.iter().map(|&i| seqs[i].clone()).collect()
    };
    let all: Vec<usize> = (0..n).collect();
    let diff = |idx: &[usize]| {
        stats::switch_rate(&pick(lower, idx)) - stats::switch_rate(&pick(upper, idx))
    };
    let estimate = diff(&all);
    let interval = stats::bootstrap_episodes(n, 2000, 5, diff);
    claims.push(Claim {
        claim: "the upper layer switches less often than the lower".into(),
        estimate,
        interval,
        verdict: verdict(interval, n),
    });
    // MI above chance, lower minus upper; the chance levels (which grow with the number of
    // possible active sets, so the lower layer's is higher) are taken from the whole data.
    let (base_lower, base_upper) = (baselines[0], baselines[n_layers - 1]);
    let mi_diff = |idx: &[usize]| {
        let events: Vec<u32> = idx.iter().flat_map(|&i| setback_soon[i].clone()).collect();
        let a: Vec<u32> = idx.iter().flat_map(|&i| lower[i].active.clone()).collect();
        let b: Vec<u32> = idx.iter().flat_map(|&i| upper[i].active.clone()).collect();
        (stats::mutual_information(&a, &events) - base_lower)
            - (stats::mutual_information(&b, &events) - base_upper)
    };
    let estimate = mi_diff(&all);
    let interval = stats::bootstrap_episodes(n, 2000, 6, mi_diff);
    let (mi_lower, mi_upper) = (&layers[0].mi_setback, &layers[n_layers - 1].mi_setback);
    let setbacks = setback.iter().flatten().filter(|&&x| x).count();
    let verdict = if setbacks == 0 {
        format!("no test: no {event} in these episodes")
    } else if n >= MIN_CLAIM_EPISODES
        && mi_lower.mi <= mi_lower.baseline_mean
        && mi_upper.mi <= mi_upper.baseline_mean
    {
        format!(
            "no test: neither layer's MI is above chance (both at or below their chance level), so \
             neither layer's activity tells of a {event} coming"
        )
    } else {
        verdict(interval, n)
    };
    claims.push(Claim {
        claim: format!(
            "the lower layer's activity carries more information about a {event} within {horizon} steps than the upper's"
        ),
        estimate,
        interval,
        verdict,
    });
    claims
}

/// The verdict on a difference's bootstrap interval over `episodes` episodes.
fn verdict((lo, hi): (f64, f64), episodes: usize) -> String {
    if episodes < MIN_CLAIM_EPISODES {
        format!(
            "too few episodes ({episodes}; a claim needs at least {MIN_CLAIM_EPISODES}: pass --episodes)"
        )
    } else if !(lo.is_finite() && hi.is_finite()) {
        "no test: the statistic is undefined on these episodes".into()
    } else if lo > 0.0 {
        "holds (the 95% interval is above 0)".into()
    } else if hi < 0.0 {
        "does not hold: the opposite (the 95% interval is below 0)".into()
    } else {
        "inconclusive (the 95% interval contains 0)".into()
    }
}

fn markdown(a: &Analysis, checkpoint: &Path, args: &AnalyzeArgs, env: &EnvConfig) -> String {
    let mut md = String::new();
    let game = match env {
        EnvConfig::Atari { game, .. } => game.clone(),
        _ => "env".into(),
    };
    let _ = writeln!(md, "# Module dynamics of {}\n", checkpoint.display());
    let _ = writeln!(
        md,
        "{} evaluation episodes of {game} (sticky actions, seed {}), {} steps, mean score {:.1}, {} setbacks \
         (a setback: a {}{}). Layer 0 is the lower layer. Events are \"within the next {} steps\". MI is in bits; \
         chance = the same MI with each episode's events circularly shifted by a random offset (100 shifts: mean, \
         95th percentile).\n",
        a.episodes,
        args.seed,
        a.steps,
        a.mean_score,
        a.setbacks,
        a.setback_event,
        if a.setback_event == setback_name(true) {
            ""
        } else {
            ", as the game has no lives"
        },
        a.horizon
    );
    if !a.claims.is_empty() {
        let _ = writeln!(md, "## Claims\n");
        for c in &a.claims {
            let _ = writeln!(
                md,
                "- **{}**: difference lower − upper {:.4} (95% bootstrap interval over episodes [{:.4}, {:.4}]): {}.",
                c.claim, c.estimate, c.interval.0, c.interval.1, c.verdict
            );
        }
        let _ = writeln!(md);
    } else {
        let _ = writeln!(md, "One layer (RIMs): the claims about layers need two.\n");
    }
    write_layer_table(&mut md, a);
    let _ = writeln!(
        md,
        "\nRun lengths (counts in bins 1, 2, 3–4, 5–8, 9–16, 17–32, 33+) and usage per module:\n"
    );
    for l in &a.layers {
        let usage: Vec<String> = l.usage.iter().map(|u| format!("{u:.2}")).collect();
        let _ = writeln!(
            md,
            "- layer {}: runs {:?}; usage [{}]",
            l.layer,
            l.run_length_bins,
            usage.join(", ")
        );
    }
    if a.setbacks == 0 {
        let _ = writeln!(
            md,
            "\nNo {} in these episodes: no switch rates before one.",
            a.setback_event
        );
    } else {
        let _ = writeln!(
            md,
            "\nSwitch rate 1, 2, … 10 steps before a {} (overall rate in the table; — where no \
             setback had that much history):\n",
            a.setback_event
        );
        for l in &a.layers {
            let r: Vec<String> = l
                .switch_rate_before_setback
                .iter()
                .take(10)
                .map(|x| x.map_or("—".to_string(), |x| format!("{x:.2}")))
                .collect();
            let _ = writeln!(md, "- layer {}: {}", l.layer, r.join(" "));
        }
    }
    let _ = writeln!(
        md,
        "\n![raster](raster.png)\n\nThe raster: the first 600 steps of episode 1, time left to right; one row per module, the top \
         layer on top; black = active. Above: green ticks for rewards, red for setbacks ({}). Below: the action taken.",
        a.setback_event
    );
    md
}

/// The "Per layer" table of analysis.md: switch rate, run length, usage and MI per layer.
fn write_layer_table(md: &mut String, a: &Analysis) {
    let _ = writeln!(md, "## Per layer\n");
    let _ = writeln!(
        md,
        "| layer | modules | switch rate | mean run | usage entropy (bits) | idle modules | MI setback (chance) | MI reward (chance) | MI action (chance) | top-down attention |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    for l in &a.layers {
        let mi = |m: &stats::MiWithBaseline| {
            format!(
                "{:.4} ({:.4}, p95 {:.4})",
                m.mi, m.baseline_mean, m.baseline_p95
            )
        };
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.2} | {:.2} of {:.2} | {} | {} | {} | {} | {} |",
            l.layer,
            l.modules,
            l.switch_rate,
            l.mean_run_length,
            l.usage_entropy_bits,
            l.max_usage_entropy_bits,
            if l.idle_modules.is_empty() {
                "none".to_string()
            } else {
                format!("{:?}", l.idle_modules)
            },
            if a.setbacks == 0 {
                "— (no setback)".to_string()
            } else {
                mi(&l.mi_setback)
            },
            mi(&l.mi_reward),
            mi(&l.mi_action),
            l.top_down_attention
                .map_or("—".to_string(), |x| format!("{x:.3}")),
        );
    }
}

/// Active modules in the raster: the colour of every activity picture (TensorBoard, GIF).
fn active_colour() -> RGBColor {
    let [r, g, b] = telemetry::ACTIVE_COLOUR;
    RGBColor(r, g, b)
}

const ACTION_COLOURS: [RGBColor; 8] = [
    RGBColor(200, 200, 200),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(240, 228, 66),
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
];

/// The raster: modules × time for the first `max_steps` steps of `e`.
fn draw_raster(
    path: &Path,
    e: &Recorded,
    action_names: &[String],
    max_steps: usize,
) -> anyhow::Result<()> {
    let sans = rlstats::font_family();
    let steps = e.actions.len().min(max_steps).max(1);
    let cell_w = 2u32;
    let row_h = 14u32;
    let label_w = 90u32;
    let rows: usize = e.layers.iter().map(|l| l.modules).sum::<usize>() + e.layers.len() - 1;
    let events_h = 18u32;
    let action_h = 16u32;
    let legend_h = 22u32;
    let width = label_w + cell_w * steps as u32 + 10;
    let height = 10 + events_h + row_h * rows as u32 + 6 + action_h + legend_h + 20;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let font = (sans, 12).into_font();
    let x0 = label_w as i32;
    let x_of = |t: usize| x0 + (t as u32 * cell_w) as i32;
    // Events strip.
    let ey = 10;
    root.draw(&Text::new("events", (4, ey + 2), font.clone()))?;
    for t in 0..steps {
        if e.rewarded[t] {
            root.draw(&Rectangle::new(
                [(x_of(t), ey), (x_of(t) + 1, ey + 7)],
                GREEN.filled(),
            ))?;
        }
        if e.setbacks[t] {
            root.draw(&Rectangle::new(
                [(x_of(t), ey + 8), (x_of(t) + 1, ey + 15)],
                RED.filled(),
            ))?;
        }
    }
    // Modules, top layer first.
    let mut y = ey + events_h as i32;
    for (l, layer) in e.layers.iter().enumerate().rev() {
        for j in 0..layer.modules {
            root.draw(&Text::new(format!("L{l} m{j}"), (4, y + 1), font.clone()))?;
            for t in 0..steps {
                if layer.active[t] >> j & 1 == 1 {
                    root.draw(&Rectangle::new(
                        [
                            (x_of(t), y),
                            (x_of(t) + cell_w as i32, y + row_h as i32 - 2),
                        ],
                        active_colour().filled(),
                    ))?;
                }
            }
            y += row_h as i32;
        }
        if l > 0 {
            root.draw(&Rectangle::new(
                [
                    (x0, y + row_h as i32 / 2 - 1),
                    (x_of(steps), y + row_h as i32 / 2),
                ],
                RGBColor(150, 150, 150).filled(),
            ))?;
            y += row_h as i32;
        }
    }
    // Actions.
    y += 6;
    root.draw(&Text::new("action", (4, y + 1), font.clone()))?;
    for t in 0..steps {
        let c = ACTION_COLOURS[e.actions[t] as usize % ACTION_COLOURS.len()];
        root.draw(&Rectangle::new(
            [
                (x_of(t), y),
                (x_of(t) + cell_w as i32, y + action_h as i32 - 2),
            ],
            c.filled(),
        ))?;
    }
    y += action_h as i32 + 4;
    let mut x = x0;
    for (a, name) in action_names.iter().enumerate() {
        let c = ACTION_COLOURS[a % ACTION_COLOURS.len()];
        root.draw(&Rectangle::new([(x, y + 2), (x + 10, y + 12)], c.filled()))?;
        root.draw(&Text::new(name.clone(), (x + 14, y + 1), font.clone()))?;
        x += 20 + 8 * name.len() as i32;
    }
    root.draw(&Text::new(
        format!(
            "steps 0-{} (2 px per step); green: reward, red: {}",
            steps - 1,
            setback_name(e.has_lives)
        ),
        (x0, y + 18),
        font,
    ))?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An episode of `steps` steps of a two-layer core (4 and 2 modules) without lives: the
    /// lower layer's active set cycles with period `period` (0: never changes), the upper's
    /// never changes; a point is conceded every 25 steps.
    fn pong_like(steps: usize, period: usize) -> Recorded {
        let mut resets = vec![false; steps];
        resets[0] = true;
        let lower: Vec<u32> = (0..steps)
            .map(|t| {
                if period > 0 && (t / period) % 2 == 1 {
                    0b1100
                } else {
                    0b0011
                }
            })
            .collect();
        Recorded {
            layers: vec![
                LayerSeq {
                    modules: 4,
                    active: lower,
                    resets: resets.clone(),
                },
                LayerSeq {
                    modules: 2,
                    active: vec![0b01; steps],
                    resets,
                },
            ],
            top_down: vec![Some(vec![0.3; steps]), None],
            actions: (0..steps).map(|t| (t % 3) as u32).collect(),
            rewarded: (0..steps).map(|t| t % 25 == 24).collect(),
            setbacks: (0..steps).map(|t| t % 25 == 24).collect(),
            has_lives: false,
            score: -4.0,
        }
    }

    /// Pong has no lives: the setback is a conceded point, counted, named, and never a NaN row.
    #[test]
    fn games_without_lives_use_conceded_points() {
        let episodes: Vec<Recorded> = (0..12).map(|_| pong_like(100, 5)).collect();
        let a = analyse(&episodes, 2, 10);
        assert_eq!(a.setback_event, "point conceded");
        assert_eq!(a.setbacks, 12 * 4);
        for l in &a.layers {
            assert!(
                l.switch_rate_before_setback.iter().all(Option::is_some),
                "{l:?}"
            );
            assert!(l.switch_rate.is_finite() && l.mi_setback.mi.is_finite());
        }
        let md = markdown(&a, Path::new("ckpt"), &args(), &EnvConfig::Cartpole);
        assert!(!md.contains("NaN"), "{md}");
        assert!(md.contains("point conceded"));
    }

    /// No setback in any episode: the rows about setbacks say so instead of printing NaN.
    #[test]
    fn no_setbacks_print_no_nan_rows() {
        let mut episodes: Vec<Recorded> = (0..12).map(|_| pong_like(60, 5)).collect();
        for e in &mut episodes {
            e.setbacks.fill(false);
        }
        let a = analyse(&episodes, 2, 10);
        assert_eq!(a.setbacks, 0);
        let md = markdown(&a, Path::new("ckpt"), &args(), &EnvConfig::Cartpole);
        assert!(!md.contains("NaN"), "{md}");
        assert!(md.contains("No point conceded in these episodes"), "{md}");
        assert!(a.claims[1].verdict.contains("no point conceded"));
    }

    /// Fewer than ten episodes make no claim, however narrow their bootstrap interval.
    #[test]
    fn claims_from_few_episodes_are_too_few() {
        let episodes: Vec<Recorded> = (0..3).map(|_| pong_like(100, 5)).collect();
        let a = analyse(&episodes, 2, 10);
        assert!(a
            .claims
            .iter()
            .all(|c| c.verdict.starts_with("too few episodes")));
        // The switch-rate claim holds on 12 of the same episodes (the upper layer never
        // switches, the lower every 5 steps).
        let episodes: Vec<Recorded> = (0..12).map(|_| pong_like(100, 5)).collect();
        assert!(analyse(&episodes, 2, 10).claims[0]
            .verdict
            .starts_with("holds"));
    }

    /// Activity that never changes carries no information: both MIs sit at chance (0), and the
    /// claim says so instead of "inconclusive".
    #[test]
    fn a_claim_whose_mis_are_both_at_chance_says_so() {
        let episodes: Vec<Recorded> = (0..12).map(|_| pong_like(100, 0)).collect();
        let a = analyse(&episodes, 2, 10);
        assert!(
            a.claims[1]
                .verdict
                .contains("neither layer's MI is above chance"),
            "{:?}",
            a.claims[1]
        );
    }

    fn args() -> AnalyzeArgs {
        AnalyzeArgs {
            checkpoint: "ckpt".into(),
            episodes: 12,
            out: None,
            force: false,
            seed: 1,
            max_steps: 100,
            horizon: 10,
        }
    }
}
