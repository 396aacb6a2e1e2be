//! CartPole-v1 against trajectories recorded from Python gymnasium 1.4.0
//! (`<repo>/../shared/fixtures/cartpole/cartpole_v1_trajectories.json`): from each case's exact
//! f64 initial state, replaying its actions must reproduce every f32 observation, reward and
//! flag bit for bit, the 500-step truncation included.

use std::path::PathBuf;

use envs_api::{cartpole_v1_from, CartPole, Env, EpisodeStats};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    seed: u64,
    initial_obs: Vec<f64>,
    initial_state_f64: [f64; 4],
    steps: Vec<RecordedStep>,
}

#[derive(Deserialize)]
struct RecordedStep {
    action: usize,
    obs: Vec<f64>,
    reward: f64,
    terminated: bool,
    truncated: bool,
}

fn fixture() -> Fixture {
    // The repository's copy (<repo>/fixtures), else the shared folder beside the repository
    // (<repo>/../shared/fixtures): the nearest ancestor of this crate holding either wins.
    const REL: &str = "fixtures/cartpole/cartpole_v1_trajectories.json";
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = manifest
        .ancestors()
        .flat_map(|dir| [dir.join(REL), dir.join("shared").join(REL)])
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {REL} beside any ancestor of {}", manifest.display()));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the fixture {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the fixture parses")
}

/// The recorded values are float32 printed as float64; casting back is exact.
fn as_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

#[test]
fn replays_every_recorded_trajectory_exactly() {
    let fixture = fixture();
    assert_eq!(fixture.cases.len(), 5);
    let mut truncated_cases = 0;
    for case in &fixture.cases {
        let seed = case.seed;
        let cartpole = CartPole::from_state(case.initial_state_f64);
        let initial: Vec<f32> = cartpole.state().iter().map(|&v| v as f32).collect();
        assert_eq!(
            initial,
            as_f32(&case.initial_obs),
            "seed {seed}: initial obs"
        );
        let mut env = cartpole_v1_from(cartpole);
        let mut ret = 0.0;
        for (t, rec) in case.steps.iter().enumerate() {
            let step = env.step(rec.action).unwrap();
            assert_eq!(step.obs, as_f32(&rec.obs), "seed {seed}, step {t}: obs");
            assert_eq!(f64::from(step.reward), rec.reward, "seed {seed}, step {t}");
            assert_eq!(step.terminated, rec.terminated, "seed {seed}, step {t}");
            assert_eq!(step.truncated, rec.truncated, "seed {seed}, step {t}");
            ret += rec.reward;
            let last = t + 1 == case.steps.len();
            assert_eq!(
                step.terminated || step.truncated,
                last,
                "seed {seed}, step {t}"
            );
            let expected = last.then_some(EpisodeStats {
                ret,
                len: case.steps.len() as u64,
            });
            assert_eq!(step.info.episode, expected, "seed {seed}, step {t}");
        }
        truncated_cases += usize::from(case.steps.last().is_some_and(|s| s.truncated));
    }
    assert_eq!(
        truncated_cases, 1,
        "the fixture covers the 500-step truncation"
    );
}
