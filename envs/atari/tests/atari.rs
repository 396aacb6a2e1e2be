//! Integration tests of the Atari environments (bundled ROMs, ALE built by ale-sys).

use envs_api::{Dtype, Env, EnvError, Space, Step};
use envs_atari::{list_games, make_atari, AtariConfig, AtariEnv, AtariError, OBS_SIZE};

const FRAME: usize = OBS_SIZE * OBS_SIZE;

/// A fixed pseudo-random action sequence (so two runs see the same actions).
fn action(t: usize, n: usize) -> usize {
    (t.wrapping_mul(2_654_435_761) >> 7) % n
}

fn env(game: &str, cfg: &AtariConfig, seed: u64) -> AtariEnv {
    make_atari(game, cfg, seed).expect("bundled game")
}

/// Runs `steps` steps with auto-reset; returns every step.
fn rollout(env: &mut AtariEnv, steps: usize) -> Vec<Step<u8>> {
    let n = env.action_space().n().expect("discrete");
    env.reset(None).expect("reset");
    let mut out = Vec::with_capacity(steps);
    for t in 0..steps {
        let step = env.step(action(t, n)).expect("step");
        if step.terminated || step.truncated {
            env.reset(None).expect("reset");
        }
        out.push(step);
    }
    out
}

#[test]
fn observation_is_u8_stack_of_84x84() {
    let mut e = env("Breakout", &AtariConfig::default(), 0);
    assert_eq!(
        e.observation_space(),
        Space::Box {
            shape: vec![1, 84, 84],
            dtype: Dtype::U8,
            low: 0.0,
            high: 255.0
        }
    );
    let (obs, info) = e.reset(None).expect("reset");
    assert_eq!(obs.len(), FRAME);
    assert_eq!(info.lives, Some(5));
    assert!(info.frame_number > 0, "no-op and fire frames are counted");
    let step = e.step(0).expect("step");
    assert_eq!(step.obs.len(), FRAME);
    // The screen has walls and bricks: not a blank image.
    assert!(step.obs.iter().any(|&p| p > 50) && step.obs.contains(&0));
}

#[test]
fn same_seed_same_trajectory_different_seed_differs() {
    let cfg = AtariConfig::default(); // sticky actions 0.25, no-op resets
    assert_eq!(cfg.repeat_action_probability, 0.25);
    let a = rollout(&mut env("Breakout", &cfg, 7), 200);
    let b = rollout(&mut env("Breakout", &cfg, 7), 200);
    assert!(a == b, "same seed must give the same trajectory");
    let c = rollout(&mut env("Breakout", &cfg, 8), 200);
    assert!(a != c, "different seeds must differ");

    // Seeding at creation or at the first reset is the same.
    let mut seeded_at_reset = env("Breakout", &cfg, 7);
    let n = seeded_at_reset.action_space().n().expect("discrete");
    seeded_at_reset.reset(Some(7)).expect("reset");
    for (t, want) in a.iter().enumerate().take(20) {
        let got = seeded_at_reset.step(action(t, n)).expect("step");
        assert!(got.obs == want.obs && got.reward == want.reward, "step {t}");
    }

    // reset(Some(seed)) reproduces a fresh env made with that seed.
    let mut reused = env("Breakout", &cfg, 99);
    rollout(&mut reused, 50);
    reused.reset(Some(7)).expect("reseed");
    let n = reused.action_space().n().expect("discrete");
    let mut fresh = env("Breakout", &cfg, 7);
    fresh.reset(None).expect("reset");
    for t in 0..100 {
        let (x, y) = (
            reused.step(action(t, n)).expect("step"),
            fresh.step(action(t, n)).expect("step"),
        );
        // Everything but `frame_number`, which counts frames since the env was created.
        assert!(x.obs == y.obs, "obs differ at step {t}");
        assert_eq!(
            (
                x.reward,
                x.terminated,
                x.truncated,
                x.info.lives,
                x.info.episode
            ),
            (
                y.reward,
                y.terminated,
                y.truncated,
                y.info.lives,
                y.info.episode
            ),
            "step {t}"
        );
        if x.terminated || x.truncated {
            break;
        }
    }
}

#[test]
fn sticky_actions_change_the_trajectory() {
    // Same seed, same actions: only the sticky-action probability differs.
    let sticky = AtariConfig::default();
    let plain = AtariConfig {
        repeat_action_probability: 0.0,
        ..AtariConfig::default()
    };
    let a = rollout(&mut env("Pong", &sticky, 3), 150);
    let b = rollout(&mut env("Pong", &plain, 3), 150);
    assert!(a != b);
}

#[test]
fn episodic_life_terminates_on_life_loss_but_the_game_goes_on() {
    let cfg = AtariConfig {
        clip_rewards: false,
        ..AtariConfig::default()
    };
    let mut e = env("Breakout", &cfg, 1);
    let n = e.action_space().n().expect("discrete");
    let (_, info) = e.reset(None).expect("reset");
    let mut lives = info.lives.expect("Breakout has lives");
    let (mut life_losses, mut score, mut steps) = (0, 0.0f64, 0u64);
    for t in 0..20_000 {
        let step = e.step(action(t, n)).expect("step");
        score += f64::from(step.reward);
        steps += 1;
        let now = step.info.lives.expect("lives");
        if let Some(ep) = step.info.episode {
            assert!(step.terminated);
            assert_eq!(now, 0, "the real episode ends at game over");
            assert_eq!(life_losses, 4, "Breakout has 5 lives");
            assert_eq!(ep.len, steps, "length counts the whole game, not one life");
            assert!(ep.ret >= score, "raw score covers every life");
            return;
        }
        if now < lives {
            assert!(step.terminated, "a lost life terminates for the learner");
            life_losses += 1;
            let (_, info) = e.reset(None).expect("reset");
            assert_eq!(
                info.lives,
                Some(now),
                "reset after a life loss continues the game"
            );
        }
        lives = now;
    }
    panic!("random Breakout should end within 20000 steps");
}

#[test]
fn frame_number_counts_every_emulated_frame_including_resets() {
    let cfg = AtariConfig::default();
    let mut e = env("Breakout", &cfg, 4);
    let n = e.action_space().n().expect("discrete");
    let skip = u64::from(cfg.frame_skip);
    let (_, info) = e.reset(None).expect("reset");
    // At least one no-op frame, then FIRE and the third action, one step each.
    assert!(info.frame_number > 2 * skip, "{}", info.frame_number);
    assert_eq!(info.frame_number, e.frame_number());
    let (mut before, mut reset_frames) = (info.frame_number, 0);
    for t in 0..2_000 {
        let step = e.step(action(t, n)).expect("step");
        assert_eq!(step.info.frame_number, e.frame_number());
        let taken = step.info.frame_number - before;
        if step.info.episode.is_some() {
            // The game ended inside the step: at most `skip` frames.
            assert!((1..=skip).contains(&taken), "step {t}: {taken}");
        } else {
            assert_eq!(taken, skip, "step {t}");
        }
        before = step.info.frame_number;
        if step.terminated || step.truncated {
            let (_, info) = e.reset(None).expect("reset");
            // A lost life: a no-op step, FIRE, the third action; a new game: no-ops, FIRE...
            assert!(info.frame_number - before >= 2 * skip, "step {t}");
            reset_frames += info.frame_number - before;
            before = info.frame_number;
        }
    }
    assert!(
        reset_frames > 0,
        "random Breakout loses a life in 2000 steps"
    );
    // A reseed reloads the ROM (restarting ALE's counter); the count goes on.
    e.reset(Some(5)).expect("reseed");
    assert!(e.frame_number() > before);
}

#[test]
fn rewards_are_clipped_to_their_sign_while_the_raw_score_is_kept() {
    // Space Invaders pays 5..30 points per invader: clipping is visible.
    let clipped_cfg = AtariConfig::default();
    let raw_cfg = AtariConfig {
        clip_rewards: false,
        ..AtariConfig::default()
    };
    let clipped = rollout(&mut env("SpaceInvaders", &clipped_cfg, 5), 300);
    let raw = rollout(&mut env("SpaceInvaders", &raw_cfg, 5), 300);
    let mut saw_big = false;
    for (c, r) in clipped.iter().zip(&raw) {
        assert!(c.obs == r.obs, "clipping must not change the dynamics");
        assert_eq!(c.reward, r.reward.signum() * f32::from(r.reward != 0.0));
        saw_big |= r.reward > 1.0;
    }
    assert!(
        saw_big,
        "random play scores at least one invader in 300 steps"
    );
}

#[test]
fn frame_stack_shifts_oldest_first() {
    let cfg = AtariConfig {
        frame_stack: 4,
        ..AtariConfig::default()
    };
    let mut e = env("Breakout", &cfg, 2);
    assert_eq!(e.observation_space().shape(), &[4, 84, 84]);
    let (mut prev, _) = e.reset(None).expect("reset");
    assert_eq!(prev.len(), 4 * FRAME);
    for k in 1..4 {
        assert!(
            prev[..FRAME] == prev[k * FRAME..(k + 1) * FRAME],
            "reset fills the stack"
        );
    }
    for t in 0..10 {
        let step = e.step(action(t, 4)).expect("step");
        assert!(
            step.obs[..3 * FRAME] == prev[FRAME..],
            "stack shifts by one frame"
        );
        prev = step.obs;
    }
}

#[test]
fn action_sets_minimal_by_default_full_on_request() {
    let cfg = AtariConfig::default();
    let breakout = env("Breakout", &cfg, 0);
    assert_eq!(breakout.action_space(), Space::Discrete(4));
    assert_eq!(
        breakout.action_meanings(),
        ["NOOP", "FIRE", "RIGHT", "LEFT"]
    );
    assert_eq!(env("Pong", &cfg, 0).action_space(), Space::Discrete(6));
    let full = AtariConfig {
        full_action_space: true,
        ..AtariConfig::default()
    };
    assert_eq!(
        env("Breakout", &full, 0).action_space(),
        Space::Discrete(18)
    );
}

#[test]
fn names_resolve_in_every_accepted_spelling() {
    let cfg = AtariConfig::default();
    for name in [
        "Breakout",
        "breakout",
        "ALE/Breakout-v5",
        "BreakoutNoFrameskip-v4",
    ] {
        // An id needs its settings in the config (NoFrameskip-v4: no sticky actions, ...).
        let mut cfg = AtariConfig::default();
        if let Some(settings) = envs_atari::id_settings(name).unwrap() {
            settings.apply_to(&mut cfg);
        }
        assert_eq!(env(name, &cfg, 0).game(), "breakout", "{name}");
    }
    assert!(make_atari("BreakoutNoFrameskip-v4", &cfg, 0).is_err());
    assert_eq!(
        env("ALE/SpaceInvaders-v5", &cfg, 0).game(),
        "space_invaders"
    );
    assert_eq!(env("space_invaders", &cfg, 0).game(), "space_invaders");
    let games = list_games();
    assert!(games.contains(&"Breakout") && games.contains(&"MontezumaRevenge"));
}

#[test]
fn unknown_game_names_close_matches_and_how_to_list() {
    let err = make_atari("Breakot", &AtariConfig::default(), 0)
        .err()
        .expect("unknown game");
    assert!(matches!(err, AtariError::UnknownGame { .. }));
    let msg = err.to_string();
    assert!(msg.contains("Breakout"), "{msg}");
    assert!(msg.contains("brims list-games"), "{msg}");
    let env_err: EnvError = err.into();
    assert!(env_err.to_string().contains("Breakout"));
}

#[test]
fn bad_rom_files_are_errors_and_the_process_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = AtariConfig::default();
    // Random bytes of a size no cartridge has.
    let odd = dir.path().join("breakout.bin");
    std::fs::write(
        &odd,
        (0..1000u32).map(|i| (i * 37) as u8).collect::<Vec<_>>(),
    )
    .expect("w");
    let err = make_atari(odd.to_str().expect("utf8"), &cfg, 0)
        .err()
        .expect("bad size");
    assert!(matches!(err, AtariError::BadRom { .. }), "{err}");
    // The right size, but garbage: caught by its MD5.
    std::fs::write(
        &odd,
        (0..4096u32).map(|i| (i * 37) as u8).collect::<Vec<_>>(),
    )
    .expect("w");
    let err = make_atari(odd.to_str().expect("utf8"), &cfg, 0)
        .err()
        .expect("bad md5");
    assert!(err.to_string().contains("MD5"), "{err}");
    // A file name that names no game, with unknown content: rejected even when unknown MD5s
    // are allowed (ALE would exit on the name).
    let unnamed = dir.path().join("mystery.bin");
    std::fs::write(&unnamed, vec![0xEAu8; 4096]).expect("w");
    let lenient = AtariConfig {
        allow_unknown_md5: true,
        ..AtariConfig::default()
    };
    let err = make_atari(unnamed.to_str().expect("utf8"), &lenient, 0)
        .err()
        .expect("no name");
    assert!(matches!(err, AtariError::BadRom { .. }), "{err}");
    // A missing file.
    let missing = dir.path().join("nope.bin");
    let err = make_atari(missing.to_str().expect("utf8"), &cfg, 0)
        .err()
        .expect("missing");
    assert!(matches!(err, AtariError::Io { .. }), "{err}");
    // Still alive: a good ROM under any file name is recognised by its MD5.
    let good = dir.path().join("my_copy.a26");
    std::fs::write(&good, ale::BundledRom::Pong.data()).expect("w");
    let mut user = make_atari(good.to_str().expect("utf8"), &cfg, 0).expect("good ROM by path");
    assert_eq!(user.game(), "pong");
    user.reset(None).expect("reset");
    user.step(0).expect("step");
}

#[test]
fn invalid_action_and_step_before_reset_are_errors() {
    let mut e = env("Breakout", &AtariConfig::default(), 0);
    assert!(matches!(e.step(0), Err(EnvError::NeedsReset)));
    e.reset(None).expect("reset");
    assert!(matches!(
        e.step(4),
        Err(EnvError::InvalidAction { action: 4, n: 4 })
    ));
    e.step(3).expect("the env still works");
}

#[test]
fn frame_limit_truncates_the_real_episode() {
    let cfg = AtariConfig {
        max_episode_frames: 200,
        ..AtariConfig::default()
    };
    let mut e = env("Pong", &cfg, 0);
    e.reset(None).expect("reset");
    for t in 0..100 {
        let step = e.step(action(t, 6)).expect("step");
        if step.truncated {
            assert!(!step.terminated);
            assert!(step.info.episode.is_some());
            // 200 frames minus the no-op frames, in steps of 4 frames.
            assert!(t < 50, "truncated at step {t}");
            assert!(matches!(e.step(0), Err(EnvError::NeedsReset)));
            return;
        }
    }
    panic!("never truncated");
}

#[test]
fn render_gives_the_rgb_screen() {
    let mut e = env("Pong", &AtariConfig::default(), 0);
    e.reset(None).expect("reset");
    let frame = e.render().expect("ALE renders");
    assert_eq!((frame.height, frame.width), (210, 160));
    assert_eq!(frame.pixels.len(), 210 * 160 * 3);
    // Pong's field is orange-brown, not gray: some pixel has R != B.
    assert!(frame.pixels.chunks(3).any(|p| p[0] != p[2]));
}

#[test]
fn threads_create_envs_concurrently() {
    let games = ["Breakout", "Pong", "SpaceInvaders", "Seaquest"];
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let game = games[i % games.len()];
            std::thread::spawn(move || {
                let mut e = make_atari(game, &AtariConfig::default(), i as u64)?;
                e.reset(None).map_err(|e| AtariError::Config {
                    what: "reset",
                    why: e.to_string(),
                })?;
                Ok::<_, AtariError>((e.game(), rollout(&mut e, 20).len()))
            })
        })
        .collect();
    for h in handles {
        let (game, n) = h.join().expect("no panic").expect("env");
        assert_eq!(n, 20, "{game}");
    }
}

#[test]
fn every_bundled_game_loads_resets_and_steps() {
    let cfg = AtariConfig::default();
    let games = list_games();
    assert_eq!(games.len(), 61); // the ale crate's 62 but Defender (its dump hangs ALE)
    for game in games {
        let mut e = make_atari(game, &cfg, 0).unwrap_or_else(|err| panic!("{game}: {err}"));
        let (obs, _) = e.reset(None).unwrap_or_else(|err| panic!("{game}: {err}"));
        assert_eq!(obs.len(), FRAME, "{game}");
        let n = e.action_space().n().expect("discrete");
        assert!((2..=18).contains(&n), "{game}: {n} actions");
        e.step(n - 1).unwrap_or_else(|err| panic!("{game}: {err}"));
    }
}

#[test]
fn the_env_can_move_to_another_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let mut e = env("Pong", &AtariConfig::default(), 0);
    assert_send(&e);
    e.reset(None).expect("reset");
    let steps = std::thread::spawn(move || rollout(&mut e, 5).len())
        .join()
        .expect("no panic");
    assert_eq!(steps, 5);
}

/// The RAM is the console's 128 bytes, and AtariARI's Pong label for the player's paddle
/// (RAM[51], player_y) follows the paddle: it moves one way under RIGHT (up) and the other under
/// LEFT (down). Envs without an emulator have no RAM.
#[test]
fn ram_is_128_bytes_and_follows_the_pong_paddle() {
    let mut e = env("Pong", &AtariConfig::default(), 3);
    e.reset(Some(3)).unwrap();
    let ram = e.ram().unwrap();
    assert_eq!(ram.len(), 128);
    let paddle_after = |e: &mut AtariEnv, action: usize| {
        for _ in 0..15 {
            e.step(action).unwrap();
        }
        i32::from(e.ram().unwrap()[51])
    };
    // Pong's minimal actions: NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE.
    let start = paddle_after(&mut e, 0);
    let up = paddle_after(&mut e, 2);
    let down = paddle_after(&mut e, 3);
    assert!(
        up != start && down != up,
        "paddle {start} -> {up} -> {down}"
    );
    assert_eq!((up - start).signum(), -(down - up).signum());
    assert!(envs_api::cartpole_v1().ram().is_none());
}
