//! The Atari environment: ALE plus the standard preprocessing (Machado et al. 2018, CleanRL).

use std::time::{Duration, Instant};

use envs_api::{Dtype, Env, EnvError, EpisodeStats, Info, RgbFrame, Space, Step};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use serde::Deserialize;

use crate::ale::{Ale, AleSettings};
use crate::preprocess::{max_frames_tracked, AreaResize, GrayFrames};
use crate::roms::{resolve, rom_file};
use crate::AtariError;

/// Side of the square observation when `resize` is on.
pub const OBS_SIZE: usize = 84;

/// ALE action ids used by the wrappers.
const NOOP: i32 = 0;
const FIRE: i32 = 1;

/// Names of ALE's 18 actions, indexed by ALE action id.
const ACTION_NAMES: [&str; 18] = [
    "NOOP",
    "FIRE",
    "UP",
    "RIGHT",
    "LEFT",
    "DOWN",
    "UPRIGHT",
    "UPLEFT",
    "DOWNRIGHT",
    "DOWNLEFT",
    "UPFIRE",
    "RIGHTFIRE",
    "LEFTFIRE",
    "DOWNFIRE",
    "UPRIGHTFIRE",
    "UPLEFTFIRE",
    "DOWNRIGHTFIRE",
    "DOWNLEFTFIRE",
];

/// Preprocessing switches. Defaults follow Machado et al. 2018 and CleanRL's Atari PPO.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AtariConfig {
    /// Probability that ALE repeats the previous action on each frame (sticky actions).
    pub repeat_action_probability: f32,
    /// After a real reset, a uniform number in `1..=noop_max` of no-op frames (0: none).
    pub noop_max: u32,
    /// Emulator frames per agent step (the action repeats).
    pub frame_skip: u32,
    /// Observe the max over the last two frames of a step (removes sprite flicker).
    pub max_pool: bool,
    /// A lost life ends the episode for the learner (`terminated`), while the game and the
    /// reported score go on; the next `reset` continues the game.
    pub episodic_life: bool,
    /// Press FIRE (then the action set's third action) on reset, for games that need it to
    /// start (FIRE is action 1 and there are at least 3 actions).
    pub fire_reset: bool,
    /// Resize the grayscale screen from 210×160 to 84×84 (area interpolation).
    pub resize: bool,
    /// Reward given to the learner is its sign; the raw score is in `info.episode`.
    pub clip_rewards: bool,
    /// Number of most recent frames stacked in an observation (1 for recurrent policies,
    /// 4 for feed-forward ones).
    pub frame_stack: usize,
    /// Emulator frames after which an episode is truncated (0: no limit).
    pub max_episode_frames: u64,
    /// Use all 18 actions instead of the game's minimal action set.
    pub full_action_space: bool,
    /// Let ALE print its console output (process-wide: ALE's logger is global).
    pub ale_verbose: bool,
    /// Run a user ROM whose file name names a supported game although its MD5 is not a known
    /// dump (ALE would run whatever the file contains).
    pub allow_unknown_md5: bool,
}

impl Default for AtariConfig {
    fn default() -> Self {
        AtariConfig {
            repeat_action_probability: 0.25,
            noop_max: 30,
            frame_skip: 4,
            max_pool: true,
            episodic_life: true,
            fire_reset: true,
            resize: true,
            clip_rewards: true,
            frame_stack: 1,
            max_episode_frames: 108_000,
            full_action_space: false,
            ale_verbose: false,
            allow_unknown_md5: false,
        }
    }
}

impl AtariConfig {
    fn validate(&self) -> Result<(), AtariError> {
        if !(0.0..=1.0).contains(&self.repeat_action_probability) {
            return Err(AtariError::Config {
                what: "repeat_action_probability",
                why: format!("{} is not in [0, 1]", self.repeat_action_probability),
            });
        }
        if self.frame_skip == 0 {
            return Err(AtariError::Config {
                what: "frame_skip",
                why: "must be at least 1".into(),
            });
        }
        if self.frame_stack == 0 || self.frame_stack > 64 {
            return Err(AtariError::Config {
                what: "frame_stack",
                why: format!("{} is not in 1..=64", self.frame_stack),
            });
        }
        Ok(())
    }
}

/// An Atari game on ALE with the preprocessing of [`AtariConfig`].
///
/// Observations are u8 `[frame_stack, 84, 84]` (oldest frame first; `[frame_stack, 210, 160]`
/// without `resize`, 250×160 for Adventure), grayscale 0..=255. Actions are indices into the minimal (or full)
/// action set. `info.episode` is set on the step where the real game ends (game over or the
/// frame limit), with the raw, unclipped score and the length in agent steps of the whole
/// game across lives. `info.lives` is set for games with lives; `info.frame_number` counts
/// emulator frames since creation.
pub struct AtariEnv {
    ale: Ale,
    cfg: AtariConfig,
    game: &'static str,
    /// ALE action ids, indexed by agent action.
    actions: Vec<i32>,
    /// Whether this game gets the fire reset.
    fire_reset: bool,
    has_lives: bool,
    rng: Pcg64,
    /// The last two grayscale frames of a step (slot 1 the last), `[screen_h, screen_w]` each.
    frames: GrayFrames,
    /// Their max, `[screen_h, screen_w]`.
    pooled: Vec<u8>,
    /// `[screen_h]`: which rows of `pooled` the last `push_frame` changed.
    pooled_changed: Vec<bool>,
    /// The stack's newest frame is the resize of `pooled` (false until the first push).
    newest_is_pooled: bool,
    /// Screen width.
    screen_w: usize,
    resize: Option<AreaResize>,
    /// Observation frame `(height, width)`.
    obs_hw: (usize, usize),
    /// Observation frame height × width.
    frame_len: usize,
    /// The frame stack, `[frame_stack, h, w]`, oldest first.
    stack: Vec<u8>,
    lives: i32,
    needs_reset: bool,
    /// The last step lost a life but the game goes on: `reset` continues it.
    life_lost_pending: bool,
    episode_return: f64,
    episode_len: u64,
    /// Frames ALE emulated before its last ROM reload (a reload restarts ALE's counter).
    frames_before_reload: u64,
    /// The seed ALE was last loaded with, while no frame has been emulated since: reseeding
    /// with it needs no reload (reloading costs tens of milliseconds under the global lock).
    untouched_seed: Option<u64>,
}

/// Creates `game` (a bundled game name in any accepted spelling, or a ROM file path) with the
/// preprocessing of `cfg`; `seed` seeds ALE (sticky actions) and the no-op resets.
pub fn make_atari(game: &str, cfg: &AtariConfig, seed: u64) -> Result<AtariEnv, AtariError> {
    cfg.validate()?;
    crate::gym_id::check_id(game, cfg)?;
    let rom = resolve(game, cfg.allow_unknown_md5)?;
    let path = rom_file(&rom)?;
    let ale = Ale::new(&path, ale_settings(cfg, seed))?;
    let actions: Vec<i32> = if cfg.full_action_space {
        (0..ACTION_NAMES.len() as i32).collect()
    } else {
        ale.minimal_actions().to_vec()
    };
    if actions.is_empty() {
        return Err(AtariError::BadRom {
            path: path.display().to_string(),
            why: "ALE reports no actions for this game".into(),
        });
    }
    let fire_reset = cfg.fire_reset && actions.len() >= 3 && actions[1] == FIRE;
    let (screen_h, screen_w) = ale.screen_size();
    let (obs_h, obs_w, resize) = if cfg.resize {
        let resize = AreaResize::new(screen_h, screen_w, OBS_SIZE, OBS_SIZE).ok_or_else(|| {
            AtariError::BadRom {
                path: path.display().to_string(),
                why: format!("its {screen_h}x{screen_w} screen cannot be area-resized to 84x84"),
            }
        })?;
        (OBS_SIZE, OBS_SIZE, Some(resize))
    } else {
        (screen_h, screen_w, None)
    };
    let frame_len = obs_h * obs_w;
    let has_lives = ale.lives() > 0;
    Ok(AtariEnv {
        ale,
        game: rom.ale_name,
        actions,
        fire_reset,
        has_lives,
        rng: noop_rng(seed),
        frames: GrayFrames::new(screen_h, screen_w),
        pooled: vec![0; screen_h * screen_w],
        pooled_changed: vec![true; screen_h],
        newest_is_pooled: false,
        screen_w,
        obs_hw: (obs_h, obs_w),
        resize,
        frame_len,
        stack: vec![0; cfg.frame_stack * frame_len],
        lives: 0,
        needs_reset: true,
        life_lost_pending: false,
        episode_return: 0.0,
        episode_len: 0,
        frames_before_reload: 0,
        untouched_seed: Some(seed),
        cfg: cfg.clone(),
    })
}

/// SplitMix64: spreads nearby user seeds over the whole range.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn ale_settings(cfg: &AtariConfig, seed: u64) -> AleSettings {
    // ALE takes a C int and treats 0 as "seed from the clock": map to 1..=i32::MAX.
    let ale_seed = ((mix(seed) >> 33) as i32).max(1);
    AleSettings {
        seed: ale_seed,
        repeat_action_probability: cfg.repeat_action_probability,
        quiet: !cfg.ale_verbose,
    }
}

fn noop_rng(seed: u64) -> Pcg64 {
    // A different stream from ALE's seed, so the two are not correlated.
    Pcg64::seed_from_u64(mix(seed ^ 0x005E_ED0F_A7A2))
}

impl AtariEnv {
    /// The ALE name of the game (e.g. `space_invaders`).
    pub fn game(&self) -> &'static str {
        self.game
    }

    /// Names of the actions, indexed by agent action (e.g. `["NOOP", "FIRE", "RIGHT", "LEFT"]`).
    pub fn action_meanings(&self) -> Vec<&'static str> {
        self.actions
            .iter()
            .map(|&a| ACTION_NAMES[a as usize])
            .collect()
    }

    /// The configuration the env was made with.
    pub fn config(&self) -> &AtariConfig {
        &self.cfg
    }

    /// Applies ALE action `ale_action` for `frame_skip` frames (fewer if the game ends);
    /// leaves the last two frames in `self.frames`. Returns the raw reward and game over.
    fn act_skip(&mut self, ale_action: i32) -> (f64, bool) {
        let skip = self.cfg.frame_skip as usize;
        let mut reward = 0i64;
        for i in 0..skip {
            reward += i64::from(self.ale.act(ale_action));
            let over = self.ale.game_over();
            if i + 2 == skip && self.cfg.max_pool {
                self.grab_gray(0);
            }
            if i + 1 == skip || over {
                self.grab_gray(1);
                if i + 2 < skip {
                    // Ended before the second-to-last frame: pool the last frame with itself.
                    self.frames.copy(1, 0);
                }
                return (reward as f64, over);
            }
        }
        (reward as f64, false)
    }

    /// Writes the current screen in grayscale into slot `slot` of `self.frames`.
    fn grab_gray(&mut self, slot: usize) {
        let ale = &self.ale;
        self.frames.grab(
            slot,
            |indices| ale.screen_indices(indices),
            |gray| ale.screen_grayscale(gray),
        );
    }

    /// Pushes the pooled, resized current frames onto the stack.
    fn push_frame(&mut self) {
        let len = self.frame_len;
        // The shift leaves the newest frame in the last slot too, where it is updated.
        self.stack.copy_within(len.., 0);
        let last = self.stack.len() - len;
        let first = if self.cfg.max_pool && self.cfg.frame_skip >= 2 {
            0
        } else {
            1 // the max of the last frame with itself
        };
        let (a, b) = (self.frames.gray(first), self.frames.gray(1));
        max_frames_tracked(
            a,
            b,
            &mut self.pooled,
            self.screen_w,
            &mut self.pooled_changed,
        );
        match &mut self.resize {
            Some(resize) => {
                // Few rows change from one step to the next: recompute only the output rows
                // that cover them.
                let changed = self.newest_is_pooled.then_some(&self.pooled_changed[..]);
                resize.apply_changed(&self.pooled, &mut self.stack[last..], changed);
            }
            None => self.stack[last..].copy_from_slice(&self.pooled),
        }
        self.newest_is_pooled = true;
    }

    /// Fills the whole stack with the current frame.
    fn fill_stack(&mut self) {
        self.push_frame();
        let len = self.frame_len;
        let last = self.stack.len() - len;
        for slot in 0..self.cfg.frame_stack - 1 {
            self.stack.copy_within(last.., slot * len);
        }
    }

    /// Resets the game and plays the no-op frames.
    fn reset_game(&mut self) {
        self.ale.reset_game();
        self.episode_return = 0.0;
        self.episode_len = 0;
        if self.cfg.noop_max > 0 {
            let noops = self.rng.gen_range(1..=self.cfg.noop_max);
            for _ in 0..noops {
                self.episode_return += f64::from(self.ale.act(NOOP));
                if self.ale.game_over() {
                    self.ale.reset_game();
                }
            }
        }
        self.grab_gray(1);
        self.frames.copy(1, 0);
    }

    fn do_reset(&mut self, real: bool) {
        if real {
            self.reset_game();
        } else {
            // After a life loss: one no-op step, as CleanRL's EpisodicLifeEnv.
            let (r, over) = self.act_skip(NOOP);
            self.episode_return += r;
            if over {
                self.reset_game();
            }
        }
        if self.fire_reset {
            // CleanRL's FireResetEnv: FIRE, then the third action; a game that ends on
            // these restarts (bounded: a game cannot end on every reset).
            for _ in 0..8 {
                let (r1, over1) = self.act_skip(self.actions[1]);
                self.episode_return += r1;
                let over = over1 || {
                    let (r2, over2) = self.act_skip(self.actions[2]);
                    self.episode_return += r2;
                    over2
                };
                if !over {
                    break;
                }
                self.reset_game();
            }
        }
        self.lives = self.ale.lives();
        self.fill_stack();
        self.needs_reset = false;
        self.life_lost_pending = false;
    }

    fn info(&self) -> Info {
        Info {
            lives: self.has_lives.then_some(self.lives.max(0) as u32),
            episode: None,
            frame_number: self.frame_number(),
        }
    }

    /// Emulator frames since the env was created, by ALE's counter: every frame of every step
    /// and reset (no-ops, FIRE, the no-op step after a lost life), not only `frame_skip` per
    /// step. Excludes the 60 frames ALE's own game reset runs internally, which its counter
    /// does not see. Equals `info.frame_number`.
    pub fn frame_number(&self) -> u64 {
        self.frames_before_reload + self.ale.frame_number()
    }

    /// Reseeds ALE (by reloading the ROM) and the no-op generator.
    fn reseed(&mut self, seed: u64) {
        if self.untouched_seed != Some(seed) {
            self.frames_before_reload = self.frame_number();
            self.ale.reload(ale_settings(&self.cfg, seed));
            self.frames.forget();
        }
        self.rng = noop_rng(seed);
    }

    fn step_inner(&mut self, action: usize) -> Result<Step<u8>, AtariError> {
        if self.needs_reset {
            return Err(AtariError::NeedsReset);
        }
        let ale_action = *self.actions.get(action).ok_or(AtariError::InvalidAction {
            action,
            n: self.actions.len(),
        })?;
        let (raw, over) = self.act_skip(ale_action);
        self.push_frame();
        self.episode_return += raw;
        self.episode_len += 1;
        let lives = self.ale.lives();
        let life_lost = self.cfg.episodic_life && lives > 0 && lives < self.lives;
        self.lives = lives;
        let limit_hit = self.cfg.max_episode_frames > 0
            && self.ale.episode_frame_number().max(0) as u64 >= self.cfg.max_episode_frames;
        let real_end = over || limit_hit;
        let terminated = over || life_lost;
        let truncated = limit_hit && !over;
        self.needs_reset = terminated || truncated;
        self.life_lost_pending = life_lost && !real_end;
        let mut info = self.info();
        if real_end {
            info.episode = Some(EpisodeStats {
                ret: self.episode_return,
                len: self.episode_len,
            });
        }
        let reward = if self.cfg.clip_rewards {
            raw.signum() as f32 * f32::from(raw != 0.0)
        } else {
            raw as f32
        };
        Ok(Step {
            obs: self.stack.clone(),
            reward,
            terminated,
            truncated,
            info,
        })
    }
}

impl Env for AtariEnv {
    type Elem = u8;

    /// `Box` of u8 `[frame_stack, 84, 84]` (or `[frame_stack, 210, 160]` without resize).
    fn observation_space(&self) -> Space {
        let (h, w) = self.obs_hw;
        Space::Box {
            shape: vec![self.cfg.frame_stack, h, w],
            dtype: Dtype::U8,
            low: 0.0,
            high: 255.0,
        }
    }

    fn action_space(&self) -> Space {
        Space::Discrete(self.actions.len())
    }

    /// `Some(seed)` reseeds and starts a new game (reseeding ALE reloads the ROM, ~30 ms under
    /// the process-wide lock, except right after `make_atari` with the same seed). `None`
    /// continues the game after a life-loss termination (with `episodic_life`), else starts a
    /// new game.
    fn reset(&mut self, seed: Option<u64>) -> Result<(Vec<u8>, Info), EnvError> {
        let real = match seed {
            Some(seed) => {
                self.reseed(seed);
                true
            }
            None => !self.life_lost_pending,
        };
        self.untouched_seed = None;
        self.do_reset(real);
        Ok((self.stack.clone(), self.info()))
    }

    fn step(&mut self, action: usize) -> Result<Step<u8>, EnvError> {
        self.step_inner(action).map_err(EnvError::from)
    }

    /// The console's 128 bytes of RAM (AtariARI's labels index it).
    fn ram(&self) -> Option<Vec<u8>> {
        Some(self.ale.ram())
    }

    /// The current screen, RGB `[210, 160, 3]` (`[250, 160, 3]` for Adventure).
    fn render(&self) -> Option<RgbFrame> {
        let (height, width) = self.ale.screen_size();
        let mut pixels = vec![0; height * width * 3];
        self.ale.screen_rgb(&mut pixels);
        Some(RgbFrame {
            height,
            width,
            pixels,
        })
    }
}

/// Raw ALE speed for the benchmark: one thread, random actions from the minimal set, one
/// frame per `act`, sticky actions 0.25, no preprocessing. Runs about `seconds` seconds and
/// returns emulator frames per second, counted by ALE's frame counter like
/// [`AtariEnv::frame_number`] (so neither counts the frames of ALE's internal game reset).
/// Creates the emulator first (not timed); [`RawAle`] keeps one for repeated measurements.
pub fn raw_frames_per_sec(game: &str, seconds: f64) -> Result<f64, AtariError> {
    RawAle::new(game)?.frames_per_sec(seconds)
}

/// One bare ALE emulator for measuring raw speed (see [`raw_frames_per_sec`]); its game goes
/// on from one measurement to the next.
pub struct RawAle {
    ale: Ale,
    actions: Vec<i32>,
    rng: Pcg64,
}

impl RawAle {
    /// Loads `game` (a bundled game name) with sticky actions 0.25 and a fixed seed.
    pub fn new(game: &str) -> Result<Self, AtariError> {
        let cfg = AtariConfig::default();
        let rom = resolve(game, false)?;
        let ale = Ale::new(&rom_file(&rom)?, ale_settings(&cfg, 1))?;
        let actions = ale.minimal_actions().to_vec();
        Ok(RawAle {
            ale,
            actions,
            rng: noop_rng(1),
        })
    }

    /// Plays random actions for about `seconds`; returns emulated frames per second.
    pub fn frames_per_sec(&mut self, seconds: f64) -> Result<f64, AtariError> {
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(AtariError::Config {
                what: "seconds",
                why: format!("{seconds} is not a positive number"),
            });
        }
        let budget = Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let first_frame = self.ale.frame_number();
        loop {
            for _ in 0..256 {
                let a = self.actions[self.rng.gen_range(0..self.actions.len())];
                self.ale.act(a);
                if self.ale.game_over() {
                    self.ale.reset_game();
                }
            }
            let elapsed = start.elapsed();
            if elapsed >= budget {
                let frames = self.ale.frame_number() - first_frame;
                return Ok(frames as f64 / elapsed.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::GrayLut;

    #[test]
    fn config_defaults_fill_missing_keys_and_unknown_keys_are_rejected() {
        let cfg: AtariConfig = serde_json::from_str(r#"{"frame_stack": 4}"#).expect("valid config");
        assert_eq!(
            cfg,
            AtariConfig {
                frame_stack: 4,
                ..AtariConfig::default()
            }
        );
        let err =
            serde_json::from_str::<AtariConfig>(r#"{"frame_stacks": 4}"#).expect_err("unknown key");
        assert!(err.to_string().contains("frame_stacks"), "{err}");
    }

    #[test]
    fn bad_settings_are_config_errors() {
        for cfg in [
            AtariConfig {
                repeat_action_probability: 1.5,
                ..AtariConfig::default()
            },
            AtariConfig {
                frame_skip: 0,
                ..AtariConfig::default()
            },
            AtariConfig {
                frame_stack: 0,
                ..AtariConfig::default()
            },
        ] {
            assert!(matches!(
                make_atari("Pong", &cfg, 0),
                Err(AtariError::Config { .. })
            ));
        }
    }

    /// The learned palette table gives ALE's own grayscale, bit for bit, on real frames of
    /// every bundled game (NTSC and PAL palettes alike).
    #[test]
    fn gray_lut_matches_ales_grayscale_on_every_game() {
        let cfg = AtariConfig::default();
        for game in crate::list_games() {
            let rom = resolve(game, false).expect("bundled game");
            let mut ale =
                Ale::new(&rom_file(&rom).expect("ROM file"), ale_settings(&cfg, 3)).expect("ALE");
            let actions = ale.minimal_actions().to_vec();
            let (h, w) = ale.screen_size();
            let (mut indices, mut want, mut got) = (vec![0; h * w], vec![0; h * w], vec![0; h * w]);
            let mut lut = GrayLut::new();
            let mut rng = noop_rng(3);
            let mut looked_up = 0;
            for _ in 0..400 {
                ale.act(actions[rng.gen_range(0..actions.len())]);
                if ale.game_over() {
                    ale.reset_game();
                }
                ale.screen_indices(&mut indices);
                ale.screen_grayscale(&mut want);
                if lut.convert(&indices, &mut got) {
                    assert!(got == want, "{game}: the table differs from ALE");
                    looked_up += 1;
                } else {
                    lut.learn(&indices, &want);
                }
            }
            // Most frames take the table path (a few games show new colours for a while).
            assert!(
                looked_up >= 200,
                "{game}: only {looked_up} frames looked up"
            );
        }
    }

    /// Grabbing through `GrayFrames` (rows copied from the other slot where their indices
    /// match) gives ALE's own grayscale on real frames of every bundled game, whatever the
    /// order of slots, copies and reloads.
    #[test]
    fn gray_frames_match_ales_grayscale_on_every_game() {
        let cfg = AtariConfig::default();
        for game in crate::list_games() {
            let rom = resolve(game, false).expect("bundled game");
            let mut ale =
                Ale::new(&rom_file(&rom).expect("ROM file"), ale_settings(&cfg, 5)).expect("ALE");
            let actions = ale.minimal_actions().to_vec();
            let (h, w) = ale.screen_size();
            let mut want = vec![0; h * w];
            let mut frames = GrayFrames::new(h, w);
            let mut rng = noop_rng(5);
            for t in 0..300 {
                ale.act(actions[rng.gen_range(0..actions.len())]);
                if ale.game_over() {
                    ale.reset_game();
                }
                // Mostly the env's pattern (slot 0, then 1), sometimes the same slot twice.
                let slot = usize::from(t % 2 == 1 || t % 7 == 0);
                frames.grab(slot, |i| ale.screen_indices(i), |g| ale.screen_grayscale(g));
                ale.screen_grayscale(&mut want);
                assert!(frames.gray(slot) == want, "{game}, frame {t}");
                if t % 50 == 0 {
                    frames.copy(slot, 1 - slot);
                    assert!(frames.gray(1 - slot) == want, "{game}, copy at {t}");
                }
                if t == 150 {
                    frames.forget();
                }
            }
        }
    }

    #[test]
    fn ale_seeds_are_never_zero_and_differ_across_seeds() {
        let cfg = AtariConfig::default();
        let seeds: Vec<i32> = (0..1000).map(|s| ale_settings(&cfg, s).seed).collect();
        assert!(seeds.iter().all(|&s| s > 0));
        let mut unique = seeds.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seeds.len());
    }
}
