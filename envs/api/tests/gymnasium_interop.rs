//! gymnasium-rs 0.1.1 through our API, and how its CartPole differs from CartPole-v1.
//!
//! Run with `cargo test --release -p envs-api --features gymnasium` (needs Python for pyo3).
#![cfg(feature = "gymnasium")]

use envs_api::{CartPole, Dtype, Env, EnvError, GymnasiumEnv, Space};
use gymnasium_rs::envs::cartpole::CartPole as GymRsCartPole;

/// One Euler step of a cart-pole in f32, parametrised by the two constants gymnasium-rs gets
/// wrong: the total mass, and the factor on the pole term of the cart's acceleration
/// (Gymnasium: pole mass × half length = 0.05; gymnasium-rs: the half length 0.5). Written in
/// gymnasium-rs's operation order, so with its constants it reproduces it bit for bit.
fn step_f32(s: [f32; 4], action: usize, total_mass: f32, xacc_factor: f32) -> [f32; 4] {
    const GRAVITY: f32 = 9.8;
    const LENGTH: f32 = 0.5;
    const MASS_POLE: f32 = 0.1;
    const TAU: f32 = 0.02;
    let [x, x_dot, theta, theta_dot] = s;
    let force = if action == 1 { 10.0 } else { -10.0 };
    let (sintheta, costheta) = (theta.sin(), theta.cos());
    let temp = (force + MASS_POLE * LENGTH * theta_dot * theta_dot * sintheta) / total_mass;
    let thetaacc = (GRAVITY * sintheta - costheta * temp)
        / (LENGTH * (4.0 / 3.0 - MASS_POLE * costheta.powi(2) / total_mass));
    let xacc = temp - xacc_factor * thetaacc * costheta / total_mass;
    [
        x + TAU * x_dot,
        x_dot + TAU * xacc,
        theta + TAU * theta_dot,
        theta_dot + TAU * thetaacc,
    ]
}

fn gym_rs_cartpole() -> impl Env<Elem = f32> {
    GymnasiumEnv::new(GymRsCartPole::new()).unwrap()
}

#[test]
fn adapter_exposes_spaces_seeds_and_errors() {
    let mut env = gym_rs_cartpole();
    assert_eq!(env.action_space(), Space::Discrete(2));
    assert_eq!(env.observation_space().shape(), [4]);
    assert!(matches!(
        env.observation_space(),
        Space::Box {
            dtype: Dtype::F32,
            ..
        }
    ));
    assert!(matches!(env.step(0), Err(EnvError::NeedsReset)));
    let (a, _) = env.reset(Some(3)).unwrap();
    let (b, _) = env.reset(Some(3)).unwrap();
    let (c, _) = env.reset(Some(4)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(matches!(
        env.step(2),
        Err(EnvError::InvalidAction { action: 2, n: 2 })
    ));
    assert!(matches!(
        env.reset(Some(1 << 40)),
        Err(EnvError::Invalid { .. })
    ));
    env.reset(Some(0)).unwrap();
    while !env.step(1).unwrap().terminated {}
    assert!(matches!(env.step(1), Err(EnvError::NeedsReset)));
}

#[test]
fn its_cartpole_diverges_from_cartpole_v1_because_of_its_constants() {
    let mut theirs = gym_rs_cartpole();
    let (start, _) = theirs.reset(Some(0)).unwrap();
    // Its state is f32 and its observation is that state, so ours can start exactly there.
    let start: [f32; 4] = start.try_into().unwrap();
    let mut ours = CartPole::from_state(start.map(f64::from));
    let mut model_theirs = start; // gymnasium-rs's constants: total mass 1.0, factor 0.5
    let mut model_ours = start; // Gymnasium's constants: total mass 1.1, factor 0.05
    let actions = [1, 1, 0, 1, 0, 0, 1, 0];
    for (t, &a) in actions.iter().enumerate() {
        let o_theirs = theirs.step(a).unwrap().obs;
        let o_ours = ours.step(a).unwrap().obs;
        model_theirs = step_f32(model_theirs, a, 1.0, 0.5);
        model_ours = step_f32(model_ours, a, 1.1, 0.05);
        // The adapter runs gymnasium-rs's dynamics exactly...
        assert_eq!(o_theirs, model_theirs, "step {t}");
        // ...and the same formulas with Gymnasium's constants track our f64 CartPole up to
        // f32 rounding, so the divergence below comes from the constants alone.
        for (m, o) in model_ours.iter().zip(&o_ours) {
            assert!(
                (m - o).abs() < 1e-5,
                "step {t}: {model_ours:?} vs {o_ours:?}"
            );
        }
        if t == 0 {
            // Pushing right from near rest: x_dot grows by tau * xacc, with xacc ~ 18.1 there
            // (temp 10 + 0.5 * 16.2) against ~ 9.8 here (temp 9.09 + 0.05 * 14.6 / 1.1).
            let dv_theirs = o_theirs[1] - start[1];
            let dv_ours = o_ours[1] - start[1];
            assert!(
                dv_theirs / dv_ours > 1.7,
                "x_dot gain {dv_theirs} vs {dv_ours}"
            );
        }
        let gap = o_theirs
            .iter()
            .zip(&o_ours)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(gap > 1e-3, "step {t}: trajectories differ by only {gap}");
    }
}

#[test]
fn its_cartpole_gives_no_reward_on_the_terminating_step() {
    // Always pushing right from the same state: both topple (the pole falls left, at the same
    // step here), and only Gymnasium's CartPole pays 1 for the terminating step.
    let mut theirs = gym_rs_cartpole();
    let (start, _) = theirs.reset(Some(5)).unwrap();
    let mut ours = CartPole::from_state([0, 1, 2, 3].map(|i| f64::from(start[i])));
    let run = |env: &mut dyn Env<Elem = f32>| {
        let mut rewards = vec![];
        loop {
            let s = env.step(1).unwrap();
            rewards.push(s.reward);
            if s.terminated {
                return rewards;
            }
        }
    };
    let r_theirs = run(&mut theirs);
    let r_ours = run(&mut ours);
    assert_eq!(r_theirs.last(), Some(&0.0));
    assert_eq!(r_ours.last(), Some(&1.0));
    assert!(r_theirs[..r_theirs.len() - 1].iter().all(|&r| r == 1.0));
    let ret = |r: &[f32]| r.iter().sum::<f32>();
    assert_eq!(
        ret(&r_ours) - ret(&r_theirs),
        1.0 + (r_ours.len() as f32 - r_theirs.len() as f32)
    );
}
