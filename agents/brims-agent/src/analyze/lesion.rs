//! `brims lesion`: test-time lesions of a trained agent. The same episodes (env seeds and
//! action-sampling seeds) are played intact and under each lesion; the score change is the
//! mean of the per-episode differences, with a bootstrap interval over episodes. A lesion
//! "costs return" where the whole interval is below zero.
//!
//! BRIMs: the top-down slot fed zeros, its time-mean (over the intact episodes) or another
//! env's state (the batch rolled by one); the upper layer's state frozen 10 steps after each
//! reset; every module forced active; each single module masked in turn. LSTM (the reference):
//! its state reset every 1, 8 and 32 steps.
//!
//! Every condition, the intact one included, runs the cores' reference step
//! ([`ppo::ActorCritic::act_lesioned`]), so a difference is the lesion's and not the fused
//! acting path's rounding.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use brims::{CoreConfig, CoreState, LayerLesion, Lesion};
use candle_core::{DType, Tensor};
use clap::Args;
use envs_api::Element;
use ppo::{ActorCritic, ObsElement};
use rand::SeedableRng;
use rand_pcg::Pcg64;
use serde::Serialize;

use crate::analyze::stats::bootstrap_episodes;
use crate::config::run::EnvConfig;
use crate::envs::{EnvFactory, MakeEnv};

/// Arguments of `brims lesion`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:\n  \
    brims lesion runs/pong_brims-20261208-010000 --episodes 30 --out lesions-pong-s4")]
pub(crate) struct LesionArgs {
    #[command(flatten)]
    pub study: StudyArgs,
    /// Steps after each reset at which `freeze_upper` fixes the upper layer's state.
    #[arg(long, default_value_t = 10)]
    pub freeze_after: usize,
}

/// What `brims lesion` and `brims probe` play: a checkpoint's episodes.
#[derive(Args, Debug, Clone)]
pub(crate) struct StudyArgs {
    /// A checkpoint: header, tensors file, or run directory (latest).
    pub checkpoint: PathBuf,
    /// Episodes (whole games, sticky actions on); claims need at least 10.
    #[arg(long, default_value_t = 30)]
    pub episodes: usize,
    /// Output directory (default: <run dir>/lesions or /probes); refused if it exists.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the episodes: episode `i` has env seed `seed + i` and its own action RNG, the
    /// same in every condition.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Cut each episode after this many agent steps (its score is then the partial one).
    #[arg(long, default_value_t = 27_000)]
    pub max_steps: usize,
}

/// What replaces a layer's top-down input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TopDownSource {
    Zeros,
    /// The source layer's mean `h` over every step of the intact episodes.
    TimeMean,
    /// Another env's source `h` at the same step (env `i` reads env `i + 1`'s).
    Shuffled,
}

/// One test-time condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Condition {
    Intact,
    TopDown(TopDownSource),
    /// The top layer's `h` and `c` fixed at their value `after` steps past each reset.
    FreezeUpper {
        after: usize,
    },
    AllActive,
    MaskModule {
        layer: usize,
        module: usize,
    },
    /// The state zeroed every `every` steps (the LSTM reference).
    ResetEvery {
        every: usize,
    },
}

impl Condition {
    fn name(&self) -> String {
        match self {
            Condition::Intact => "intact".into(),
            Condition::TopDown(TopDownSource::Zeros) => "top-down: zeros".into(),
            Condition::TopDown(TopDownSource::TimeMean) => "top-down: time-mean".into(),
            Condition::TopDown(TopDownSource::Shuffled) => "top-down: another env's".into(),
            Condition::FreezeUpper { after } => format!("upper layer frozen after {after} steps"),
            Condition::AllActive => "every module active (k = M)".into(),
            Condition::MaskModule { layer, module } => {
                format!("layer {layer} module {module} masked")
            }
            Condition::ResetEvery { every } => format!("state reset every {every} steps"),
        }
    }
}

/// The conditions for a core: BRIMs' lesions, or the LSTM's resets.
fn conditions(core: &CoreConfig, freeze_after: usize) -> Vec<Condition> {
    let mut out = vec![Condition::Intact];
    match core {
        CoreConfig::Brims(cfg) => {
            let has_top_down = (0..cfg.layers.len()).any(|l| cfg.top_down_source(l).is_some());
            if has_top_down {
                for src in [
                    TopDownSource::Zeros,
                    TopDownSource::TimeMean,
                    TopDownSource::Shuffled,
                ] {
                    out.push(Condition::TopDown(src));
                }
            }
            if cfg.layers.len() >= 2 {
                out.push(Condition::FreezeUpper {
                    after: freeze_after,
                });
            }
            out.push(Condition::AllActive);
            for (layer, lc) in cfg.layers.iter().enumerate() {
                for module in 0..lc.modules {
                    out.push(Condition::MaskModule { layer, module });
                }
            }
        }
        CoreConfig::Lstm(_) => {
            for every in [1, 8, 32] {
                out.push(Condition::ResetEvery { every });
            }
        }
    }
    out
}

/// The scores of one condition's episodes, and (intact only) each layer's mean `h`.
pub(crate) struct Played {
    scores: Vec<f64>,
    lengths: Vec<usize>,
    layer_means: Vec<Vec<f32>>,
}

/// One row of the lesion table.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LesionRow {
    condition: String,
    mean_score: f64,
    /// Mean over episodes of (lesioned − intact) score.
    change: f64,
    /// 95% bootstrap interval of `change` over episodes (paired).
    interval: (f64, f64),
    verdict: String,
    scores: Vec<f64>,
    mean_length: f64,
}

/// Which episodes a batched play plays: episode `i` has env seed `seed + i` and its own
/// action RNG seeded the same, cut after `max_steps`.
pub(crate) struct PlaySpec {
    pub episodes: usize,
    pub seed: u64,
    pub max_steps: usize,
    pub freeze_after: usize,
}

impl PlaySpec {
    /// The episodes of `study`, freezing the upper layer `freeze_after` steps past a reset
    /// (where a condition does).
    pub(crate) fn new(study: &StudyArgs, freeze_after: usize) -> Self {
        PlaySpec {
            episodes: study.episodes,
            seed: study.seed,
            max_steps: study.max_steps,
            freeze_after,
        }
    }
}

/// One step of one episode as `brims probe` reads it.
pub(crate) struct RecordedStep {
    /// Each layer's `h` after the step (what the heads read), bottom first.
    pub h: Vec<Vec<f32>>,
    /// The encoder's features of the step's observation.
    pub features: Vec<f32>,
    /// The reward the step's action earned (after the env's reward wrapper).
    pub reward: f32,
    /// The emulator's RAM before the step (empty without one).
    pub ram: Vec<u8>,
}

/// Fewer episodes than this make no claim (as `brims analyze`).
const MIN_CLAIM_EPISODES: usize = 10;

/// `brims lesion`.
pub(crate) fn run(args: &LesionArgs) -> anyhow::Result<serde_json::Value> {
    if args.study.episodes == 0 {
        bail!("--episodes must be >= 1");
    }
    let Study {
        policy,
        core,
        out,
        env_cfg,
    } = Study::open(&args.study.checkpoint, args.study.out.as_deref(), "lesions")?;
    let net = policy.learner.net();
    let conds = conditions(&core, args.freeze_after);
    let factory = EnvFactory::from_config(&env_cfg)?;
    let spec = PlaySpec::new(&args.study, args.freeze_after);
    let play = |cond: &Condition, means: &[Vec<f32>]| {
        play_any(&factory, net, &core, cond, means, &spec, None)
    };
    let intact = play(&Condition::Intact, &[])?;
    let mut rows = Vec::with_capacity(conds.len());
    for (i, cond) in conds.iter().enumerate() {
        let played = if *cond == Condition::Intact {
            Played {
                scores: intact.scores.clone(),
                lengths: intact.lengths.clone(),
                layer_means: vec![],
            }
        } else {
            play(cond, &intact.layer_means)?
        };
        rows.push(row(cond, &played, &intact.scores, i as u64));
        eprintln!(
            "lesion {}/{}: {}: mean score {:.2}",
            i + 1,
            conds.len(),
            cond.name(),
            rows[i].mean_score
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let md = markdown(&rows, &policy.checkpoint, args, &env_cfg);
    crate::run::dir::write_atomic(&out.join("lesions.md"), md.as_bytes())?;
    crate::run::dir::write_atomic(
        &out.join("lesions.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": policy.checkpoint,
            "episodes": args.study.episodes,
            "seed": args.study.seed,
            "rows": rows,
        }))?
        .as_bytes(),
    )?;
    print!("{md}");
    Ok(serde_json::json!({"out": out, "conditions": rows.len()}))
}

fn row(cond: &Condition, played: &Played, intact: &[f64], seed: u64) -> LesionRow {
    let n = intact.len();
    let diffs: Vec<f64> = played
        .scores
        .iter()
        .zip(intact)
        .map(|(a, b)| a - b)
        .collect();
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let change = mean(&diffs);
    let interval = bootstrap_episodes(n, 2000, 100 + seed, |pick| {
        pick.iter().map(|&i| diffs[i]).sum::<f64>() / pick.len() as f64
    });
    let verdict = if *cond == Condition::Intact {
        "—".to_string()
    } else {
        lesion_verdict(interval, n)
    };
    LesionRow {
        condition: cond.name(),
        mean_score: mean(&played.scores),
        change,
        interval,
        verdict,
        scores: played.scores.clone(),
        mean_length: played.lengths.iter().sum::<usize>() as f64 / n.max(1) as f64,
    }
}

/// Whether a lesion changed the return beyond its interval.
fn lesion_verdict((lo, hi): (f64, f64), episodes: usize) -> String {
    if episodes < MIN_CLAIM_EPISODES {
        format!("too few episodes ({episodes} < {MIN_CLAIM_EPISODES})")
    } else if hi < 0.0 {
        "costs return (the 95% interval is below 0)".into()
    } else if lo > 0.0 {
        "raises return (the 95% interval is above 0)".into()
    } else {
        "no change beyond the interval".into()
    }
}

/// What a study of a trained agent (`brims lesion`, `brims probe`) starts from: the policy,
/// its core, the output directory (refused if it exists) and the env with sticky actions on,
/// as the standard evaluation protocol (Machado et al. 2018) and `brims analyze`.
pub(crate) struct Study {
    pub policy: crate::eval::checkpoint::TrainedPolicy,
    pub core: CoreConfig,
    pub out: PathBuf,
    pub env_cfg: EnvConfig,
}

impl Study {
    /// Loads `checkpoint`; the output goes to `out` or `<run dir>/<default_dir>` (beside a
    /// checkpoint outside a run directory).
    pub(crate) fn open(
        checkpoint: &Path,
        out: Option<&Path>,
        default_dir: &str,
    ) -> anyhow::Result<Study> {
        let policy = crate::eval::checkpoint::load_policy(checkpoint)?;
        let Some(core) = policy.cfg.network.core.clone() else {
            bail!("{} has no recurrent core to study", checkpoint.display());
        };
        let out = out.map_or_else(
            || crate::analyze::default_out(&policy.checkpoint, default_dir),
            Path::to_path_buf,
        );
        if out.exists() {
            bail!("{} exists; choose another --out", out.display());
        }
        let mut env_cfg = policy.cfg.env.clone();
        if let EnvConfig::Atari { atari, .. } = &mut env_cfg {
            atari.repeat_action_probability = 0.25;
        }
        Ok(Study {
            policy,
            core,
            out,
            env_cfg,
        })
    }
}

/// [`play`] with the envs `factory` makes, whatever their observation type.
pub(crate) fn play_any(
    factory: &EnvFactory,
    net: &ActorCritic,
    core: &CoreConfig,
    cond: &Condition,
    intact_means: &[Vec<f32>],
    spec: &PlaySpec,
    record: Option<&mut Vec<Vec<RecordedStep>>>,
) -> anyhow::Result<Played> {
    match factory {
        EnvFactory::Frames(make) => play::<u8>(make, net, core, cond, intact_means, spec, record),
        EnvFactory::Vectors(make) => play::<f32>(make, net, core, cond, intact_means, spec, record),
    }
}

/// Per-env state of a batched play.
struct EnvSlot<T: Element> {
    env: crate::envs::BoxedEnv<T>,
    obs: Vec<T>,
    rng: Pcg64,
    score: f64,
    length: usize,
    done: bool,
    since_reset: usize,
}

/// One freshly reset env per episode, episode `i` seeded with `seed + i`.
fn env_slots<T: Element + ObsElement>(
    make: &MakeEnv<T>,
    args: &PlaySpec,
) -> anyhow::Result<Vec<EnvSlot<T>>> {
    let mut slots = Vec::with_capacity(args.episodes);
    for i in 0..args.episodes {
        let mut env = make(i)?;
        let seed = args.seed + i as u64;
        let (obs, _) = env.reset(Some(seed))?;
        slots.push(EnvSlot {
            env,
            obs,
            rng: Pcg64::seed_from_u64(seed),
            score: 0.0,
            length: 0,
            done: false,
            since_reset: 0,
        });
    }
    Ok(slots)
}

/// Plays `args.study.episodes` episodes at once, one env each (a batch of that size), under `cond`;
/// with `record`, keeps every step of every episode (`record[i]`: episode `i`).
pub(crate) fn play<T: Element + ObsElement>(
    make: &MakeEnv<T>,
    net: &ActorCritic,
    core: &CoreConfig,
    cond: &Condition,
    intact_means: &[Vec<f32>],
    args: &PlaySpec,
    mut record: Option<&mut Vec<Vec<RecordedStep>>>,
) -> anyhow::Result<Played> {
    let n = args.episodes;
    let mut slots = env_slots(make, args)?;
    let layers = match core {
        CoreConfig::Brims(cfg) => cfg.layers.len(),
        CoreConfig::Lstm(_) => 1,
    };
    let mut state = net.zero_state(n)?;
    let mut resets = vec![true; n];
    let mut frozen: Vec<Option<(Vec<f32>, Vec<f32>)>> = vec![None; n];
    let mut sums: Vec<Vec<f64>> = vec![];
    let mut sum_steps = 0usize;
    let zeros = Tensor::zeros(n, DType::F32, net.device())?;
    while slots.iter().any(|s| !s.done) {
        if let Condition::ResetEvery { every } = cond {
            for (r, s) in resets.iter_mut().zip(&slots) {
                *r |= s.since_reset % every == 0;
            }
        }
        let keep: Vec<f32> = resets.iter().map(|&r| f32::from(u8::from(!r))).collect();
        state = state.masked(&Tensor::from_vec(keep, n, net.device())?)?;
        if matches!(cond, Condition::FreezeUpper { .. }) {
            state = with_frozen_upper(&state, &frozen, layers)?;
        }
        if *cond == Condition::Intact {
            accumulate_means(&state, &slots, &mut sums, &mut sum_steps)?;
        }
        let lesion = lesion_for(cond, core, &state, intact_means, n, net)?;
        let flat: Vec<T> = slots.iter().flat_map(|s| s.obs.iter().copied()).collect();
        let mut shape = vec![n];
        shape.extend_from_slice(net.obs_shape());
        let obs = Tensor::from_vec(flat, shape, net.device())?;
        let acted = net.act_lesioned(&obs, &state, &zeros, &lesion)?;
        state = acted.next_state;
        let recorded_rows = match record {
            Some(_) => Some((
                net.features(&obs)?.to_dtype(DType::F32)?.to_vec2::<f32>()?,
                state
                    .parts
                    .iter()
                    .step_by(2)
                    .map(|h| h.to_dtype(DType::F32)?.to_vec2::<f32>())
                    .collect::<candle_core::Result<Vec<_>>>()?,
            )),
            None => None,
        };
        for (i, slot) in slots.iter_mut().enumerate() {
            resets[i] = false;
            if slot.done {
                continue;
            }
            let logits = acted.logits.narrow(0, i, 1)?;
            let (actions, _) = ppo::sample_actions(&logits, &mut slot.rng)?;
            let ram = if record.is_some() {
                slot.env.ram().unwrap_or_default()
            } else {
                vec![]
            };
            let step = slot.env.step(actions[0] as usize)?;
            if let (Some(rec), Some((features, hs))) = (record.as_deref_mut(), &recorded_rows) {
                if rec.len() < n {
                    rec.resize_with(n, Vec::new);
                }
                rec[i].push(RecordedStep {
                    h: hs.iter().map(|h| h[i].clone()).collect(),
                    features: features[i].clone(),
                    reward: step.reward,
                    ram,
                });
            }
            slot.length += 1;
            slot.since_reset += 1;
            slot.score += f64::from(step.reward);
            let freezes = matches!(cond, Condition::FreezeUpper { .. });
            if freezes && slot.since_reset == args.freeze_after && frozen[i].is_none() {
                frozen[i] = Some(upper_rows(&state, i, layers)?);
            }
            if let Some(stats) = step.info.episode {
                slot.score = stats.ret;
                slot.done = true;
            } else if slot.length >= args.max_steps {
                slot.done = true;
            } else if step.terminated || step.truncated {
                // A life lost: the game goes on from a zero state, as acting saw it.
                slot.obs = slot.env.reset(None)?.0;
                resets[i] = true;
                slot.since_reset = 0;
                frozen[i] = None;
            } else {
                slot.obs = step.obs;
            }
        }
    }
    let layer_means = sums
        .iter()
        .map(|s| {
            s.iter()
                .map(|v| (v / sum_steps.max(1) as f64) as f32)
                .collect()
        })
        .collect();
    Ok(Played {
        scores: slots.iter().map(|s| s.score).collect(),
        lengths: slots.iter().map(|s| s.length).collect(),
        layer_means,
    })
}

/// Adds each layer's `h` (state part `2l`) of the envs still playing to `sums`.
fn accumulate_means<T: Element>(
    state: &CoreState,
    slots: &[EnvSlot<T>],
    sums: &mut Vec<Vec<f64>>,
    steps: &mut usize,
) -> anyhow::Result<()> {
    let hs: Vec<Vec<Vec<f32>>> = state
        .parts
        .iter()
        .step_by(2)
        .map(|h| h.to_dtype(DType::F32)?.to_vec2::<f32>())
        .collect::<candle_core::Result<_>>()?;
    if sums.is_empty() {
        *sums = hs.iter().map(|h| vec![0.0; h[0].len()]).collect();
    }
    for (i, slot) in slots.iter().enumerate() {
        if slot.done {
            continue;
        }
        *steps += 1;
        for (sum, h) in sums.iter_mut().zip(&hs) {
            for (s, &v) in sum.iter_mut().zip(&h[i]) {
                *s += f64::from(v);
            }
        }
    }
    Ok(())
}

/// The top layer's `h` and `c` rows of env `i`.
fn upper_rows(state: &CoreState, i: usize, layers: usize) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let top = 2 * (layers - 1);
    let row = |p: &Tensor| -> candle_core::Result<Vec<f32>> {
        p.get(i)?.to_dtype(DType::F32)?.to_vec1::<f32>()
    };
    Ok((row(&state.parts[top])?, row(&state.parts[top + 1])?))
}

/// `state` with the top layer's rows replaced where an env's are frozen.
fn with_frozen_upper(
    state: &CoreState,
    frozen: &[Option<(Vec<f32>, Vec<f32>)>],
    layers: usize,
) -> anyhow::Result<CoreState> {
    if frozen.iter().all(Option::is_none) {
        return Ok(state.clone());
    }
    let top = 2 * (layers - 1);
    let mut parts = state.parts.clone();
    for (k, part) in parts.iter_mut().enumerate().skip(top) {
        let mut rows = part.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for (row, f) in rows.iter_mut().zip(frozen) {
            if let Some((h, c)) = f {
                *row = if k == top { h.clone() } else { c.clone() };
            }
        }
        let (b, w) = (rows.len(), rows[0].len());
        *part = Tensor::from_vec(rows.concat(), (b, w), part.device())?.to_dtype(part.dtype())?;
    }
    Ok(CoreState { parts })
}

/// The [`Lesion`] of one step for `cond`, from the state before the step.
fn lesion_for(
    cond: &Condition,
    core: &CoreConfig,
    state: &CoreState,
    intact_means: &[Vec<f32>],
    n: usize,
    net: &ActorCritic,
) -> anyhow::Result<Lesion> {
    let CoreConfig::Brims(cfg) = core else {
        return Ok(Lesion::default());
    };
    let mut layers = vec![LayerLesion::default(); cfg.layers.len()];
    match cond {
        Condition::TopDown(source) => {
            for (l, lesion) in layers.iter_mut().enumerate() {
                let Some(src) = cfg.top_down_source(l) else {
                    continue;
                };
                let h = &state.parts[2 * src];
                lesion.top_down = Some(match source {
                    TopDownSource::Zeros => h.zeros_like()?,
                    TopDownSource::TimeMean => {
                        let mean = intact_means
                            .get(src)
                            .context("the intact run recorded no layer means")?;
                        Tensor::from_slice(mean, (1, mean.len()), net.device())?
                            .to_dtype(h.dtype())?
                            .broadcast_as(h.dims())?
                            .contiguous()?
                    }
                    TopDownSource::Shuffled if n > 1 => {
                        // Env i reads env i + 1's (the last reads the first's).
                        Tensor::cat(&[h.narrow(0, 1, n - 1)?, h.narrow(0, 0, 1)?], 0)?
                    }
                    TopDownSource::Shuffled => {
                        bail!("a shuffled top-down needs 2 or more episodes")
                    }
                });
            }
        }
        Condition::AllActive => {
            for (lesion, lc) in layers.iter_mut().zip(&cfg.layers) {
                lesion.active = Some(lc.modules);
            }
        }
        Condition::MaskModule { layer, module } => layers[*layer].masked_modules = vec![*module],
        Condition::Intact | Condition::FreezeUpper { .. } | Condition::ResetEvery { .. } => {}
    }
    Ok(Lesion { layers })
}

fn markdown(rows: &[LesionRow], checkpoint: &Path, args: &LesionArgs, env: &EnvConfig) -> String {
    let game = match env {
        EnvConfig::Atari { game, .. } => game.clone(),
        _ => "env".into(),
    };
    let mut md = String::new();
    let _ = writeln!(md, "# Test-time lesions of {}\n", checkpoint.display());
    let _ = writeln!(
        md,
        "{} episodes of {game} per condition (sticky actions; episode i: env seed {} + i and its own \
         action RNG, the same in every condition). Change = mean over episodes of (lesioned − intact) \
         score, with a 95% bootstrap interval over episodes (paired).\n",
        args.study.episodes, args.study.seed
    );
    let _ = writeln!(
        md,
        "| condition | mean score | change | 95% interval | verdict | mean length |"
    );
    let _ = writeln!(md, "|---|---:|---:|---|---|---:|");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:+.2} | [{:+.2}, {:+.2}] | {} | {:.0} |",
            r.condition,
            r.mean_score,
            r.change,
            r.interval.0,
            r.interval.1,
            r.verdict,
            r.mean_length
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brims_gets_every_lesion_and_the_lstm_its_resets() {
        let brims = CoreConfig::Brims(brims::BrimsConfig::atari());
        let conds = conditions(&brims, 10);
        // intact, 3 top-down, frozen upper, all active, 8 + 4 masked modules.
        assert_eq!(conds.len(), 1 + 3 + 1 + 1 + 12);
        assert!(conds.contains(&Condition::MaskModule {
            layer: 1,
            module: 3
        }));
        let mut no_td = brims::BrimsConfig::atari();
        no_td.top_down = brims::TopDown::None;
        let conds = conditions(&CoreConfig::Brims(no_td), 10);
        assert!(!conds.iter().any(|c| matches!(c, Condition::TopDown(_))));
        let lstm = conditions(&CoreConfig::Lstm(brims::LstmConfig::new(8)), 10);
        assert_eq!(
            lstm[1..],
            [1, 8, 32].map(|every| Condition::ResetEvery { every })
        );
    }

    #[test]
    fn verdicts_read_the_paired_interval() {
        assert!(lesion_verdict((-3.0, -0.5), 30).starts_with("costs return"));
        assert!(lesion_verdict((-3.0, 0.5), 30).starts_with("no change"));
        assert!(lesion_verdict((0.1, 0.5), 30).starts_with("raises"));
        assert!(lesion_verdict((-3.0, -0.5), 5).starts_with("too few"));
    }
}
