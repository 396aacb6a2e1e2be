//! `brims probe`: what each layer knows. Plays episodes with the trained agent, records each
//! layer's `h`, the CNN features (the control: what the screen alone gives) and the game's
//! RAM, and fits ridge probes with episode-wise cross-validation for reactive targets (a point
//! conceded within 5 and 10 steps, AUC; the ball's y at the next step, R²) and long-horizon ones
//! (the discounted return of the next 100 steps, γ = 0.99; points won in the next 200 steps;
//! R²).
//!
//! RAM labels are AtariARI's (Anand et al. 2019, "Unsupervised State Representation Learning in
//! Atari", `atariari/benchmark/ram_annotations.py`): Pong `player_y` 51, `enemy_y` 50, `ball_x`
//! 49, `ball_y` 54. Games without labels here get the reward-based targets only.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use crate::analyze::lesion::{play_any, Condition, PlaySpec, RecordedStep, Study, StudyArgs};
use crate::analyze::probe_stats::{cross_validate, CvScore, Score, RIDGE_LAMBDA};
use crate::config::run::EnvConfig;
use crate::envs::EnvFactory;

/// Arguments of `brims probe`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:\n  \
    brims probe runs/pong_brims-20261208-010000 --episodes 30 --out probes-pong-s4")]
pub(crate) struct ProbeArgs {
    #[command(flatten)]
    pub study: StudyArgs,
    /// Cross-validation folds (by episode).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
}

/// AtariARI's RAM address of the ball's y for the games labelled here.
fn ball_y_address(game: &str) -> Option<usize> {
    match envs_atari::game_key(game).as_str() {
        "pong" => Some(54),
        _ => None,
    }
}

/// A probe target: its name, whether it is reactive or long-horizon, how it is scored, and
/// its value at each step of an episode (`None` where the episode ends too soon to know).
struct Target {
    name: &'static str,
    reactive: bool,
    score: Score,
    values: fn(&[RecordedStep], Option<usize>) -> Vec<Option<f64>>,
}

/// Whether any step of `t..t + k` has a negative reward (a point conceded).
fn conceded_within(steps: &[RecordedStep], k: usize) -> Vec<Option<f64>> {
    (0..steps.len())
        .map(|t| {
            (t + k <= steps.len())
                .then(|| f64::from(u8::from(steps[t..t + k].iter().any(|s| s.reward < 0.0))))
        })
        .collect()
}

const TARGETS: [Target; 5] = [
    Target {
        name: "point conceded within 5 steps",
        reactive: true,
        score: Score::Auc,
        values: |s, _| conceded_within(s, 5),
    },
    Target {
        name: "point conceded within 10 steps",
        reactive: true,
        score: Score::Auc,
        values: |s, _| conceded_within(s, 10),
    },
    Target {
        name: "ball y at t+1",
        reactive: true,
        score: Score::R2,
        values: |s, addr| match addr {
            Some(a) => (0..s.len())
                .map(|t| {
                    s.get(t + 1)
                        .and_then(|n| n.ram.get(a))
                        .map(|&v| f64::from(v))
                })
                .collect(),
            None => vec![None; s.len()],
        },
    },
    Target {
        name: "discounted return, next 100 steps (γ = 0.99)",
        reactive: false,
        score: Score::R2,
        values: |s, _| {
            (0..s.len())
                .map(|t| {
                    (t + 100 <= s.len()).then(|| {
                        s[t..t + 100]
                            .iter()
                            .enumerate()
                            .map(|(i, x)| 0.99f64.powi(i as i32) * f64::from(x.reward))
                            .sum()
                    })
                })
                .collect()
        },
    },
    Target {
        name: "points won, next 200 steps",
        reactive: false,
        score: Score::R2,
        values: |s, _| {
            (0..s.len())
                .map(|t| {
                    (t + 200 <= s.len())
                        .then(|| s[t..t + 200].iter().filter(|x| x.reward > 0.0).count() as f64)
                })
                .collect()
        },
    },
];

/// A representation probed: its name and the vector it reads from a recorded step.
type Representation = (String, Box<dyn Fn(&RecordedStep) -> &[f32]>);

/// One cell of the probe table.
#[derive(Clone, Debug, Serialize)]
struct ProbeCell {
    target: &'static str,
    reactive: bool,
    representation: String,
    score: &'static str,
    cv: CvScore,
    rows: usize,
}

/// `brims probe`.
pub(crate) fn run(args: &ProbeArgs) -> anyhow::Result<serde_json::Value> {
    if args.study.episodes < args.folds || args.folds < 2 {
        bail!(
            "--episodes ({}) must be at least --folds ({}), and --folds at least 2",
            args.study.episodes,
            args.folds
        );
    }
    let Study {
        policy,
        core,
        out,
        env_cfg,
    } = Study::open(&args.study.checkpoint, args.study.out.as_deref(), "probes")?;
    let EnvConfig::Atari { game, .. } = &env_cfg else {
        bail!("probes read an Atari game's RAM; this run's env is not Atari");
    };
    let spec = PlaySpec::new(&args.study, usize::MAX);
    let mut episodes: Vec<Vec<RecordedStep>> = Vec::new();
    let factory = EnvFactory::from_config(&env_cfg)?;
    let net = policy.learner.net();
    play_any(
        &factory,
        net,
        &core,
        &Condition::Intact,
        &[],
        &spec,
        Some(&mut episodes),
    )?;
    let address = ball_y_address(game);
    let layers = episodes
        .iter()
        .find_map(|e| e.first())
        .map_or(0, |s| s.h.len());
    let mut representations: Vec<Representation> =
        vec![("CNN features".into(), Box::new(|s| &s.features))];
    for l in 0..layers {
        let name = if layers == 1 {
            "core h".to_string()
        } else {
            format!("layer {l} h")
        };
        representations.push((name, Box::new(move |s| &s.h[l])));
    }
    let mut cells = Vec::new();
    for target in &TARGETS {
        let per_episode: Vec<Vec<Option<f64>>> = episodes
            .iter()
            .map(|e| (target.values)(e, address))
            .collect();
        if per_episode.iter().flatten().all(Option::is_none) {
            continue;
        }
        for (name, pick) in &representations {
            let mut data = Vec::with_capacity(episodes.len());
            let mut rows = 0;
            let mut width = 0;
            for (steps, values) in episodes.iter().zip(&per_episode) {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                for (s, v) in steps.iter().zip(values) {
                    if let Some(v) = v {
                        let features = pick(s);
                        width = features.len();
                        x.extend_from_slice(features);
                        y.push(*v);
                    }
                }
                rows += y.len();
                data.push((x, y));
            }
            let cv = cross_validate(&data, width, args.folds, target.score)
                .with_context(|| format!("probe {} on {name}", target.name))?;
            if cv.folds == 0 {
                // No fold could be scored: a game without conceded points (Breakout), a
                // constant target.
                continue;
            }
            cells.push(ProbeCell {
                target: target.name,
                reactive: target.reactive,
                representation: name.clone(),
                score: match target.score {
                    Score::R2 => "R²",
                    Score::Auc => "AUC",
                },
                cv,
                rows,
            });
        }
    }
    let claim = (layers >= 2).then(|| slide_21_claim(&cells, layers));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let md = markdown(
        &cells,
        claim.as_deref(),
        &policy.checkpoint,
        args,
        game,
        address,
    );
    crate::run::dir::write_atomic(&out.join("probes.md"), md.as_bytes())?;
    crate::run::dir::write_atomic(
        &out.join("probes.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": policy.checkpoint,
            "episodes": args.study.episodes,
            "folds": args.folds,
            "ridge_lambda": RIDGE_LAMBDA,
            "cells": cells,
            "claim": claim,
        }))?
        .as_bytes(),
    )?;
    print!("{md}");
    Ok(serde_json::json!({"out": out, "probes": cells.len()}))
}

/// "Long-term plan in the upper layer, escaping danger in the lower": holds if the upper layer
/// beats the lower on every long-horizon target and the lower beats the upper on every reactive
/// one, each by more than the larger of their fold spreads (standard deviations).
fn slide_21_claim(cells: &[ProbeCell], layers: usize) -> String {
    let (lower, upper) = ("layer 0 h".to_string(), format!("layer {} h", layers - 1));
    let find = |target: &str, rep: &str| {
        cells
            .iter()
            .find(|c| c.target == target && c.representation == rep)
    };
    let mut parts = Vec::new();
    let mut holds = true;
    for target in TARGETS.iter().map(|t| t.name) {
        let (Some(lo), Some(up)) = (find(target, &lower), find(target, &upper)) else {
            continue;
        };
        let spread = lo.cv.std.max(up.cv.std);
        // Reactive: the lower should win; long-horizon: the upper.
        let margin = if lo.reactive {
            lo.cv.mean - up.cv.mean
        } else {
            up.cv.mean - lo.cv.mean
        };
        let ok = margin.is_finite() && spread.is_finite() && margin > spread;
        holds &= ok;
        parts.push(format!(
            "{target}: {} {}",
            if lo.reactive {
                "lower − upper"
            } else {
                "upper − lower"
            },
            if ok {
                format!("{margin:+.3} > spread {spread:.3}")
            } else {
                format!("{margin:+.3}, not beyond spread {spread:.3}")
            }
        ));
    }
    format!(
        "{} ({})",
        if holds { "holds" } else { "does not hold" },
        parts.join("; ")
    )
}

fn markdown(
    cells: &[ProbeCell],
    claim: Option<&str>,
    checkpoint: &Path,
    args: &ProbeArgs,
    game: &str,
    address: Option<usize>,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Linear probes of {}\n", checkpoint.display());
    let _ = writeln!(
        md,
        "{} episodes of {game} (sticky actions, seeds {}…), ridge (λ = {RIDGE_LAMBDA} on standardised \
         features) with {}-fold cross-validation by episode: mean ± standard deviation over folds. \
         Ball y: RAM[{}] (AtariARI's label).\n",
        args.study.episodes,
        args.study.seed,
        args.folds,
        address.map_or("—".to_string(), |a| a.to_string()),
    );
    let mut reps: Vec<&str> = Vec::new();
    for c in cells {
        if !reps.contains(&c.representation.as_str()) {
            reps.push(&c.representation);
        }
    }
    let _ = writeln!(md, "| target | kind | score | {} |", reps.join(" | "));
    let _ = writeln!(md, "|---|---|---|{}", "---:|".repeat(reps.len()));
    let mut targets: Vec<&str> = Vec::new();
    for c in cells {
        if !targets.contains(&c.target) {
            targets.push(c.target);
        }
    }
    for t in targets {
        let row: Vec<&ProbeCell> = cells.iter().filter(|c| c.target == t).collect();
        let values: Vec<String> = reps
            .iter()
            .map(|r| {
                row.iter()
                    .find(|c| c.representation == *r)
                    .map_or("—".into(), |c| {
                        format!("{:.3} ± {:.3}", c.cv.mean, c.cv.std)
                    })
            })
            .collect();
        let _ = writeln!(
            md,
            "| {t} | {} | {} | {} |",
            if row[0].reactive {
                "reactive"
            } else {
                "long-horizon"
            },
            row[0].score,
            values.join(" | ")
        );
    }
    if let Some(claim) = claim {
        let _ = writeln!(
            md,
            "\n**Long-horizon knowledge in the upper layer, reactive in the lower**: {claim}."
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(reward: f32, ball_y: u8) -> RecordedStep {
        let mut ram = vec![0; 128];
        ram[54] = ball_y;
        RecordedStep {
            h: vec![vec![0.0]],
            features: vec![0.0],
            reward,
            ram,
        }
    }

    #[test]
    fn targets_look_ahead_and_stop_where_the_episode_does() {
        let steps: Vec<RecordedStep> = (0..300)
            .map(|t| {
                step(
                    if t == 7 {
                        -1.0
                    } else if t == 150 {
                        1.0
                    } else {
                        0.0
                    },
                    t as u8,
                )
            })
            .collect();
        let conceded5 = (TARGETS[0].values)(&steps, Some(54));
        assert_eq!(conceded5[2], Some(0.0));
        assert_eq!(conceded5[3], Some(1.0));
        assert_eq!(conceded5[7], Some(1.0));
        assert_eq!(conceded5[8], Some(0.0));
        assert_eq!(conceded5[296], None);
        let ball = (TARGETS[2].values)(&steps, Some(54));
        assert_eq!(ball[10], Some(11.0));
        assert_eq!(ball[299], None);
        assert!((TARGETS[2].values)(&steps, None)
            .iter()
            .all(Option::is_none));
        let ret = (TARGETS[3].values)(&steps, None);
        assert!((ret[0].unwrap() - (-(0.99f64.powi(7)))).abs() < 1e-12);
        assert!((ret[60].unwrap() - 0.99f64.powi(90)).abs() < 1e-12);
        assert_eq!(ret[201], None);
        let won = (TARGETS[4].values)(&steps, None);
        assert_eq!(won[0], Some(1.0));
        assert_eq!(won[100], Some(1.0));
        assert_eq!(won[101], None);
    }

    fn cell(target: &'static str, reactive: bool, rep: &str, mean: f64, std: f64) -> ProbeCell {
        ProbeCell {
            target,
            reactive,
            representation: rep.into(),
            score: "R²",
            cv: CvScore {
                mean,
                std,
                folds: 5,
            },
            rows: 100,
        }
    }

    #[test]
    fn the_claim_needs_every_target_beyond_the_spread() {
        let (r, l) = (TARGETS[0].name, TARGETS[3].name);
        let holds = [
            cell(r, true, "layer 0 h", 0.8, 0.02),
            cell(r, true, "layer 1 h", 0.6, 0.03),
            cell(l, false, "layer 0 h", 0.1, 0.02),
            cell(l, false, "layer 1 h", 0.3, 0.05),
        ];
        assert!(slide_21_claim(&holds, 2).starts_with("holds"));
        let mut within_spread = holds.clone();
        within_spread[3].cv.mean = 0.14;
        assert!(slide_21_claim(&within_spread, 2).starts_with("does not hold"));
    }
}
