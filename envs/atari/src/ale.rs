//! A minimal safe wrapper over ale-sys's C API.
//!
//! ALE keeps static state that two threads loading ROMs at once corrupt, so creating,
//! loading and deleting an interface all take one process-wide lock. Acting on different
//! interfaces from different threads needs no lock (each owns its emulator).

use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use crate::AtariError;

/// Serialises everything that touches ALE's static state (see the module docs).
static ALE_LOCK: Mutex<()> = Mutex::new(());

fn ale_lock() -> MutexGuard<'static, ()> {
    // The lock guards no data, so a panic while holding it leaves nothing inconsistent.
    ALE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// ALE's logger levels (`ale::Logger::mode`).
const LOGGER_INFO: i32 = 0;
const LOGGER_ERROR: i32 = 2;

/// Settings that must be in place before the ROM loads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AleSettings {
    /// ALE's `random_seed`; never 0 (0 means "seed from the clock").
    pub seed: i32,
    /// ALE's `repeat_action_probability` (sticky actions).
    pub repeat_action_probability: f32,
    /// Silence ALE's console output (process-wide: ALE's logger is global).
    pub quiet: bool,
}

/// One ALE emulator with a loaded ROM.
pub(crate) struct Ale {
    ptr: NonNull<ale_sys::ALEInterface>,
    rom: CString,
    minimal_actions: Vec<i32>,
    /// Screen size (210×160 for nearly every game; Adventure's is 250×160).
    height: usize,
    width: usize,
}

// SAFETY: an `ALEInterface` owns its emulator and has no thread affinity (no thread-locals);
// what is not thread-safe is ALE's static state, which only ROM loading and construction
// touch, and those run under `ALE_LOCK`. `Ale` is not `Sync` and every call takes
// `&mut self` or `&self` of the single owner, so the handle is used by one thread at a time.
unsafe impl Send for Ale {}

impl Ale {
    /// Creates an emulator and loads the ROM at `rom`, which must already be validated
    /// (ALE calls `exit(1)` on a missing or unrecognised ROM) and named `<ale_name>.bin`.
    pub(crate) fn new(rom: &Path, settings: AleSettings) -> Result<Self, AtariError> {
        let rom = path_to_cstring(rom)?;
        let (ale, height, width) = {
            let _guard = ale_lock();
            // SAFETY: `setLoggerMode` writes a static, under the lock.
            unsafe { ale_sys::setLoggerMode(logger_mode(settings.quiet)) };
            // SAFETY: plain constructor; null is checked below.
            let ptr =
                NonNull::new(unsafe { ale_sys::ALE_new() }).ok_or_else(|| AtariError::BadRom {
                    path: rom.to_string_lossy().into_owned(),
                    why: "ALE could not allocate an emulator".into(),
                })?;
            let mut ale = Ale {
                ptr,
                rom,
                minimal_actions: Vec::new(),
                height: 0,
                width: 0,
            };
            ale.load_locked(settings);
            // SAFETY: live interface with a loaded ROM.
            let (h, w) = unsafe {
                let p = ale.ptr.as_ptr();
                (ale_sys::getScreenHeight(p), ale_sys::getScreenWidth(p))
            };
            (ale, h, w)
            // The guard is released here, before `ale` can be dropped (its drop takes the
            // lock, which is not re-entrant).
        };
        let mut ale = ale;
        (ale.height, ale.width) = (height.max(0) as usize, width.max(0) as usize);
        if ale.height == 0 || ale.width == 0 {
            return Err(AtariError::BadRom {
                path: ale.rom.to_string_lossy().into_owned(),
                why: format!("ALE reports a {height}x{width} screen"),
            });
        }
        Ok(ale)
    }

    /// Reloads the ROM with a new seed (ALE's RNG can only be reseeded by reloading).
    pub(crate) fn reload(&mut self, settings: AleSettings) {
        let _guard = ale_lock();
        self.load_locked(settings);
    }

    fn load_locked(&mut self, settings: AleSettings) {
        debug_assert!(settings.seed != 0, "ALE seed 0 means seed from the clock");
        // SAFETY: `self.ptr` is a live interface; keys are NUL-terminated; the ROM file was
        // validated by the caller, so `loadROM` does not exit. Runs under `ALE_LOCK`.
        unsafe {
            let p = self.ptr.as_ptr();
            ale_sys::setLoggerMode(if settings.quiet {
                LOGGER_ERROR
            } else {
                LOGGER_INFO
            });
            ale_sys::setInt(p, c"random_seed".as_ptr(), settings.seed);
            ale_sys::setFloat(
                p,
                c"repeat_action_probability".as_ptr(),
                settings.repeat_action_probability,
            );
            ale_sys::setBool(p, c"display_screen".as_ptr(), false);
            ale_sys::setBool(p, c"sound".as_ptr(), false);
            ale_sys::loadROM(p, self.rom.as_ptr());
            let n = ale_sys::getMinimalActionSize(p).max(0) as usize;
            self.minimal_actions = vec![0; n];
            ale_sys::getMinimalActionSet(p, self.minimal_actions.as_mut_ptr());
        }
    }

    /// ALE's minimal action set for the game (ALE action ids `0..18`).
    pub(crate) fn minimal_actions(&self) -> &[i32] {
        &self.minimal_actions
    }

    /// Emulates one frame with ALE action id `action` (`0..18`); returns the reward.
    #[inline]
    pub(crate) fn act(&mut self, action: i32) -> i32 {
        debug_assert!((0..18).contains(&action));
        // SAFETY: live interface; `action` is one of ALE's 18 action ids (callers map agent
        // actions through an action set of such ids).
        unsafe { ale_sys::act(self.ptr.as_ptr(), action) }
    }

    /// Whether the game is over.
    #[inline]
    pub(crate) fn game_over(&self) -> bool {
        // SAFETY: live interface.
        unsafe { ale_sys::game_over(self.ptr.as_ptr()) }
    }

    /// Resets the game (not the RNG).
    pub(crate) fn reset_game(&mut self) {
        // SAFETY: live interface.
        unsafe { ale_sys::reset_game(self.ptr.as_ptr()) }
    }

    /// The console's RAM (128 bytes on the 2600).
    pub(crate) fn ram(&self) -> Vec<u8> {
        // SAFETY: live interface; getRAM writes getRAMSize bytes into the buffer.
        let size = unsafe { ale_sys::getRAMSize(self.ptr.as_ptr()) }.max(0) as usize;
        let mut ram = vec![0u8; size];
        unsafe { ale_sys::getRAM(self.ptr.as_ptr(), ram.as_mut_ptr()) };
        ram
    }

    /// Lives left (0 for games without lives).
    #[inline]
    pub(crate) fn lives(&self) -> i32 {
        // SAFETY: live interface.
        unsafe { ale_sys::lives(self.ptr.as_ptr()) }
    }

    /// Frames emulated by `act` since the ROM was (re)loaded: ALE's own counter. It does not
    /// include the 60 frames `reset_game` emulates inside ALE before a game starts.
    #[inline]
    pub(crate) fn frame_number(&self) -> u64 {
        // SAFETY: live interface.
        let frames = unsafe { ale_sys::getFrameNumber(self.ptr.as_ptr()) };
        frames.max(0) as u64
    }

    /// Frames since the last `reset_game`.
    #[inline]
    pub(crate) fn episode_frame_number(&self) -> i32 {
        // SAFETY: live interface.
        unsafe { ale_sys::getEpisodeFrameNumber(self.ptr.as_ptr()) }
    }

    /// Screen `(height, width)`.
    pub(crate) fn screen_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// Writes the grayscale screen, `[height, width]` row-major, into `out`.
    #[inline]
    pub(crate) fn screen_grayscale(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.height * self.width, "grayscale buffer size");
        // SAFETY: live interface; `out` holds exactly width × height bytes (asserted), the
        // amount ALE writes.
        unsafe { ale_sys::getScreenGrayscale(self.ptr.as_ptr(), out.as_mut_ptr()) }
    }

    /// Writes the screen as ALE's palette indices, `[height, width]` row-major, into `out`.
    #[inline]
    pub(crate) fn screen_indices(&self, out: &mut [u8]) {
        assert_eq!(
            out.len(),
            self.height * self.width,
            "palette index buffer size"
        );
        // SAFETY: live interface; `out` holds exactly width × height bytes (asserted), the
        // amount ALE copies (one byte per pixel).
        unsafe { ale_sys::getScreen(self.ptr.as_ptr(), out.as_mut_ptr()) }
    }

    /// Writes the RGB screen, `[height, width, 3]` row-major, into `out`.
    pub(crate) fn screen_rgb(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.height * self.width * 3, "RGB buffer size");
        // SAFETY: live interface; `out` holds exactly width × height × 3 bytes (asserted).
        unsafe { ale_sys::getScreenRGB(self.ptr.as_ptr(), out.as_mut_ptr()) }
    }

    /// The ROM file ALE loaded.
    #[allow(dead_code)]
    pub(crate) fn rom(&self) -> &CStr {
        &self.rom
    }
}

impl Drop for Ale {
    fn drop(&mut self) {
        let _guard = ale_lock();
        // SAFETY: `ptr` came from `ALE_new` and is deleted exactly once, here.
        unsafe { ale_sys::ALE_del(self.ptr.as_ptr()) }
    }
}

fn logger_mode(quiet: bool) -> i32 {
    if quiet {
        LOGGER_ERROR
    } else {
        LOGGER_INFO
    }
}

fn path_to_cstring(path: &Path) -> Result<CString, AtariError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| AtariError::BadRom {
        path: path.display().to_string(),
        why: "the path contains a NUL byte".into(),
    })
}
