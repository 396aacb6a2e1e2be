//! The game registry: bundled ROMs by name, user ROMs by path (validated before ALE sees
//! them), and the reference scores for human-normalised scores.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ale::BundledRom;
use md5::{Digest, Md5};

use crate::AtariError;

/// The games whose ROMs the `ale` crate bundles: (CamelCase name as in `ALE/<Name>-v5`, ROM).
/// Defender is left out: see [`HANGS_ALE`].
static BUNDLED: [(&str, BundledRom); 61] = [
    ("Adventure", BundledRom::Adventure),
    ("AirRaid", BundledRom::AirRaid),
    ("Alien", BundledRom::Alien),
    ("Amidar", BundledRom::Amidar),
    ("Assault", BundledRom::Assault),
    ("Asterix", BundledRom::Asterix),
    ("Asteroids", BundledRom::Asteroids),
    ("Atlantis", BundledRom::Atlantis),
    ("BankHeist", BundledRom::BankHeist),
    ("BattleZone", BundledRom::BattleZone),
    ("BeamRider", BundledRom::BeamRider),
    ("Berzerk", BundledRom::Berzerk),
    ("Bowling", BundledRom::Bowling),
    ("Boxing", BundledRom::Boxing),
    ("Breakout", BundledRom::Breakout),
    ("Carnival", BundledRom::Carnival),
    ("Centipede", BundledRom::Centipede),
    ("ChopperCommand", BundledRom::ChopperCommand),
    ("CrazyClimber", BundledRom::CrazyClimber),
    ("DemonAttack", BundledRom::DemonAttack),
    ("DoubleDunk", BundledRom::DoubleDunk),
    ("ElevatorAction", BundledRom::ElevatorAction),
    ("Enduro", BundledRom::Enduro),
    ("FishingDerby", BundledRom::FishingDerby),
    ("Freeway", BundledRom::Freeway),
    ("Frostbite", BundledRom::Frostbite),
    ("Gopher", BundledRom::Gopher),
    ("Gravitar", BundledRom::Gravitar),
    ("Hero", BundledRom::Hero),
    ("IceHockey", BundledRom::IceHockey),
    ("Jamesbond", BundledRom::JamesBond),
    ("JourneyEscape", BundledRom::JourneyEscape),
    ("Kaboom", BundledRom::Kaboom),
    ("Kangaroo", BundledRom::Kangaroo),
    ("Krull", BundledRom::Krull),
    ("KungFuMaster", BundledRom::KungFuMaster),
    ("MontezumaRevenge", BundledRom::MontezumaRevenge),
    ("MsPacman", BundledRom::MsPacman),
    ("NameThisGame", BundledRom::NameThisGame),
    ("Phoenix", BundledRom::Phoenix),
    ("Pitfall", BundledRom::Pitfall),
    ("Pong", BundledRom::Pong),
    ("Pooyan", BundledRom::Pooyan),
    ("PrivateEye", BundledRom::PrivateEye),
    ("Qbert", BundledRom::QBert),
    ("Riverraid", BundledRom::RiverRaid),
    ("RoadRunner", BundledRom::RoadRunner),
    ("Robotank", BundledRom::RoboTank),
    ("Seaquest", BundledRom::Seaquest),
    ("Skiing", BundledRom::Skiing),
    ("SpaceInvaders", BundledRom::SpaceInvaders),
    ("StarGunner", BundledRom::StarGunner),
    ("Tennis", BundledRom::Tennis),
    ("TimePilot", BundledRom::TimePilot),
    ("Tutankham", BundledRom::Tutankham),
    ("UpNDown", BundledRom::UpNDown),
    ("Venture", BundledRom::Venture),
    ("VideoPinball", BundledRom::VideoPinball),
    ("WizardOfWor", BundledRom::WizardOfWor),
    ("YarsRevenge", BundledRom::YarsRevenge),
    ("Zaxxon", BundledRom::Zaxxon),
];

/// ROM dumps that make ALE 0.6 loop forever inside `loadROM` (its mode selection presses
/// SELECT until RAM shows a mode this dump never shows): (MD5, game, the MD5 ALE expects).
/// The `ale` crate bundles the first.
const HANGS_ALE: [(&str, &str, &str); 1] = [(
    "e1029676edb3d35b76ca943da7434da8",
    "defender",
    "0f643c34e40e3f1daafd9c524d3ffe64",
)];

/// Every ROM ALE 0.6 supports, by the file stem ALE matches it with, and the MD5 of the dump
/// its md5.txt lists ("" where it lists none).
const SUPPORTED: [(&str, &str); 76] = [
    ("adventure", ""),
    ("air_raid", "35be55426c1fec32dfb503b4f0651572"),
    ("alien", "f1a0a23e6464d954e3a9579c4ccd01c8"),
    ("amidar", "acb7750b4d0c4bd34969802a7deb2990"),
    ("assault", "de78b3a064d374390ac0710f95edde92"),
    ("asterix", "89a68746eff7f266bbf08de2483abe55"),
    ("asteroids", "ccbd36746ed4525821a8083b0d6d2c2c"),
    ("atlantis", "9ad36e699ef6f45d9eb6c4cf90475c9f"),
    ("bank_heist", "00ce0bdd43aed84a983bef38fe7f5ee3"),
    ("battle_zone", "41f252a66c6301f1e8ab3612c19bc5d4"),
    ("beam_rider", "79ab4123a83dc11d468fb2108ea09e2e"),
    ("berzerk", "136f75c4dd02c29283752b7e5799f978"),
    ("bowling", "c9b7afad3bfd922e006a6bfc1d4f3fe7"),
    ("boxing", "c3ef5c4653212088eda54dc91d787870"),
    ("breakout", "f34f08e5eb96e500e851a80be3277a56"),
    ("carnival", "028024fb8e5e5f18ea586652f9799c96"),
    ("centipede", "91c2098e88a6b13f977af8c003e0bca5"),
    ("chopper_command", "c1cb228470a87beb5f36e90ac745da26"),
    ("crazy_climber", "55ef7b65066428367844342ed59f956c"),
    ("defender", "0f643c34e40e3f1daafd9c524d3ffe64"),
    ("demon_attack", "f0e0addc07971561ab80d9abe1b8d333"),
    ("donkey_kong", "36b20c427975760cb9cf4a47e41369e4"),
    ("double_dunk", "368d88a6c071caba60b4f778615aae94"),
    ("elevator_action", "71f8bacfbdca019113f3f0801849057e"),
    ("enduro", "94b92a882f6dbaa6993a46e2dcc58402"),
    ("fishing_derby", "b8865f05676e64f3bec72b9defdacfa7"),
    ("freeway", "8e0ab801b1705a740b476b7f588c6d16"),
    ("frogger", "081e2c114c9c20b61acf25fc95c71bf4"),
    ("frostbite", "4ca73eb959299471788f0b685c3ba0b5"),
    ("galaxian", "211774f4c5739042618be8ff67351177"),
    ("gopher", "c16c79aad6272baffb8aae9a7fff0864"),
    ("gravitar", "8ac18076d01a6b63acf6e2cab4968940"),
    ("hero", "fca4a5be1251927027f2c24774a02160"),
    ("ice_hockey", "a4c08c4994eb9d24fb78be1793e82e26"),
    ("jamesbond", "e51030251e440cffaab1ac63438b44ae"),
    ("journey_escape", "718ae62c70af4e5fd8e932fee216948a"),
    ("kaboom", "5428cdfada281c569c74c7308c7f2c26"),
    ("kangaroo", "4326edb70ff20d0ee5ba58fa5cb09d60"),
    ("keystone_kapers", "6c1f3f2e359dbf55df462ccbcdd2f6bf"),
    ("king_kong", "0dd4c69b5f9a7ae96a7a08329496779a"),
    ("koolaid", "534e23210dd1993c828d944c6ac4d9fb"),
    ("krull", "4baada22435320d185c95b7dd2bcdb24"),
    ("kung_fu_master", "5b92a93b23523ff16e2789b820e2a4c5"),
    ("laser_gates", "8e4cd60d93fcde8065c1a2b972a26377"),
    ("lost_luggage", "2d76c5d1aad506442b9e9fb67765e051"),
    ("montezuma_revenge", "3347a6dd59049b15a38394aa2dafa585"),
    ("mr_do", "aa7bb54d2c189a31bb1fa20099e42859"),
    ("ms_pacman", "87e79cd41ce136fd4f72cc6e2c161bee"),
    ("name_this_game", "36306070f0c90a72461551a7a4f3a209"),
    ("phoenix", "7e52a95074a66640fcfde124fffd491a"),
    ("pitfall", "3e90cf23106f2e08b2781e41299de556"),
    ("pong", "60e0ea3cbe0913d39803477945e9e5ec"),
    ("pooyan", "4799a40b6e889370b7ee55c17ba65141"),
    ("private_eye", "ef3a4f64b6494ba770862768caf04b86"),
    ("qbert", "484b0076816a104875e00467d431c2d2"),
    ("riverraid", "393948436d1f4cc3192410bb918f9724"),
    ("road_runner", "2bd00beefdb424fa39931a75e890695d"),
    ("robotank", "4f618c2429138e0280969193ed6c107e"),
    ("seaquest", "240bfbac5163af4df5ae713985386f92"),
    ("sir_lancelot", "dd0cbe5351551a538414fb9e37fc56e8"),
    ("skiing", "b76fbadc8ffb1f83e2ca08b6fb4d6c9f"),
    ("solaris", "e72eb8d4410152bdcb69e7fba327b420"),
    ("space_invaders", "72ffbef6504b75e69ee1045af9075f66"),
    ("star_gunner", "a3c1c70024d7aabb41381adbfb6d3b25"),
    ("tennis", "42cdd6a9e42a3639e190722b8ea3fc51"),
    ("tetris", "b0e1ee07fbc73493eac5651a52f90f00"),
    ("time_pilot", "fc2104dd2dadf9a6176c1c1c8f87ced9"),
    ("trondead", "fb27afe896e7c928089307b32e5642ee"),
    ("turmoil", ""),
    ("tutankham", "085322bae40d904f53bdcc56df0593fc"),
    ("up_n_down", "a499d720e7ee35c62424de882a3351b6"),
    ("venture", "3e899eba0ca8cd2972da1ae5479b4f0d"),
    ("video_pinball", "107cc025334211e6d29da0b6be46aec7"),
    ("wizard_of_wor", "7e8aa18bc9502eb57daaf5e7c1e94da7"),
    ("yars_revenge", "c5930d0e8cdae3e037349bfa08e871be"),
    ("zaxxon", "eea0da9b987d661264cce69a7c13c3bd"),
];

/// The standard random and human scores (random, human) of the Atari-57 literature (Mnih et
/// al. 2015; Badia et al. 2020), keyed by ALE ROM name.
const REFERENCE_SCORES: [(&str, f64, f64); 57] = [
    ("alien", 227.8, 7127.7),
    ("amidar", 5.8, 1719.5),
    ("assault", 222.4, 742.0),
    ("asterix", 210.0, 8503.3),
    ("asteroids", 719.1, 47388.7),
    ("atlantis", 12850.0, 29028.1),
    ("bank_heist", 14.2, 753.1),
    ("battle_zone", 2360.0, 37187.5),
    ("beam_rider", 363.9, 16926.5),
    ("berzerk", 123.7, 2630.4),
    ("bowling", 23.1, 160.7),
    ("boxing", 0.1, 12.1),
    ("breakout", 1.7, 30.5),
    ("centipede", 2090.9, 12017.0),
    ("chopper_command", 811.0, 7387.8),
    ("crazy_climber", 10780.5, 35829.4),
    ("defender", 2874.5, 18688.9),
    ("demon_attack", 152.1, 1971.0),
    ("double_dunk", -18.6, -16.4),
    ("enduro", 0.0, 860.5),
    ("fishing_derby", -91.7, -38.7),
    ("freeway", 0.0, 29.6),
    ("frostbite", 65.2, 4334.7),
    ("gopher", 257.6, 2412.5),
    ("gravitar", 173.0, 3351.4),
    ("hero", 1027.0, 30826.4),
    ("ice_hockey", -11.2, 0.9),
    ("jamesbond", 29.0, 302.8),
    ("kangaroo", 52.0, 3035.0),
    ("krull", 1598.0, 2665.5),
    ("kung_fu_master", 258.5, 22736.3),
    ("montezuma_revenge", 0.0, 4753.3),
    ("ms_pacman", 307.3, 6951.6),
    ("name_this_game", 2292.3, 8049.0),
    ("phoenix", 761.4, 7242.6),
    ("pitfall", -229.4, 6463.7),
    ("pong", -20.7, 14.6),
    ("private_eye", 24.9, 69571.3),
    ("qbert", 163.9, 13455.0),
    ("riverraid", 1338.5, 17118.0),
    ("road_runner", 11.5, 7845.0),
    ("robotank", 2.2, 11.9),
    ("seaquest", 68.4, 42054.7),
    ("skiing", -17098.1, -4336.9),
    ("solaris", 1236.3, 12326.7),
    ("space_invaders", 148.0, 1668.7),
    ("star_gunner", 664.0, 10250.0),
    ("surround", -10.0, 6.5),
    ("tennis", -23.8, -8.3),
    ("time_pilot", 3568.0, 5229.2),
    ("tutankham", 11.4, 167.6),
    ("up_n_down", 533.4, 11693.2),
    ("venture", 0.0, 1187.5),
    ("video_pinball", 16256.9, 17667.9),
    ("wizard_of_wor", 563.5, 4756.5),
    ("yars_revenge", 3092.9, 54576.9),
    ("zaxxon", 32.5, 9173.3),
];

/// Every bundled game, by the CamelCase name used in `ALE/<Name>-v5`.
pub fn list_games() -> Vec<&'static str> {
    BUNDLED.iter().map(|(name, _)| *name).collect()
}

/// The episodic returns a game can score, `(lowest, highest)`, where the rules bound them:
/// one table, keyed as [`game_key`] keys games. Pong ends when one side has 21 points, so an
/// episode scores between −21 and +21. Games outside the table have no known bound.
const RETURN_RANGES: &[(&str, f64, f64)] = &[("pong", -21.0, 21.0)];

/// The range of episodic returns of `game` (any accepted spelling), where the game's rules
/// bound it (see `RETURN_RANGES`); `None` where no bound is known.
pub fn return_range(game: &str) -> Option<(f64, f64)> {
    let key = game_key(game);
    RETURN_RANGES
        .iter()
        .find(|(name, _, _)| *name == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// The (random, human) reference scores of `game` (any accepted spelling), for
/// human-normalised scores `(score - random) / (human - random)`; `None` for games outside
/// the Atari-57 table.
pub fn reference_scores(game: &str) -> Option<(f64, f64)> {
    let key = normalize(game);
    REFERENCE_SCORES
        .iter()
        .find(|(name, _, _)| key_of(name) == key)
        .map(|&(_, random, human)| (random, human))
}

/// The key every spelling of one game shares: `Breakout`, `breakout`, `ALE/Breakout-v5` and
/// `BreakoutNoFrameskip-v4` are all `breakout`, `space_invaders` and `SpaceInvaders` both
/// `spaceinvaders`; a ROM path is keyed by its file name (`roms/breakout.bin` → `breakout`).
pub fn game_key(game: &str) -> String {
    if looks_like_path(game) {
        let stem = Path::new(game).file_stem().and_then(|s| s.to_str());
        return normalize(stem.unwrap_or(game));
    }
    normalize(game)
}

/// A ROM ready to hand to ALE.
pub(crate) struct Rom {
    /// The name ALE recognises the game by (the ROM file must be `<ale_name>.bin`).
    pub ale_name: &'static str,
    /// The ROM image.
    pub bytes: Cow<'static, [u8]>,
    /// Hex MD5 of `bytes`.
    pub md5: String,
}

/// Resolves a game name (`Breakout`, `breakout`, `ALE/Breakout-v5`, `BreakoutNoFrameskip-v4`)
/// or a ROM file path to a validated ROM.
pub(crate) fn resolve(game: &str, allow_unknown_md5: bool) -> Result<Rom, AtariError> {
    if looks_like_path(game) {
        return load_user_rom(Path::new(game), allow_unknown_md5);
    }
    let key = normalize(game);
    if let Some((_, name, expected)) = HANGS_ALE.iter().find(|(_, name, _)| key_of(name) == key) {
        return Err(AtariError::BadRom {
            path: format!("{name}.bin (bundled)"),
            why: format!(
                "the bundled dump hangs ALE's loadROM; pass the dump ALE expects (MD5 \
                 {expected}) by path instead"
            ),
        });
    }
    if let Some((_, rom)) = BUNDLED.iter().find(|(name, _)| normalize(name) == key) {
        let bytes = rom.data();
        return Ok(Rom {
            ale_name: ale_name_of(rom),
            bytes: Cow::Borrowed(bytes),
            md5: md5_hex(bytes),
        });
    }
    Err(AtariError::UnknownGame {
        name: game.to_string(),
        suggestions: close_matches(&key),
    })
}

fn ale_name_of(rom: &BundledRom) -> &'static str {
    let stem = rom.filename().trim_end_matches(".bin");
    // Every bundled file name is an ALE-supported stem (checked by a unit test); fall back to
    // the stem itself rather than panic.
    SUPPORTED
        .iter()
        .find(|(name, _)| *name == stem)
        .map(|(name, _)| *name)
        .unwrap_or("unsupported")
}

/// A name is a path when it is an existing file, ends with a ROM extension, or has a
/// directory separator that is not the `ALE/` prefix.
fn looks_like_path(game: &str) -> bool {
    let lower = game.to_ascii_lowercase();
    Path::new(game).is_file()
        || [".bin", ".a26", ".rom"]
            .iter()
            .any(|ext| lower.ends_with(ext))
        || (game.contains(['/', '\\']) && !lower.starts_with("ale/"))
}

/// Lowercase alphanumerics of the bare game name: `ALE/` prefix, `-vN` suffix and the
/// `NoFrameskip`/`Deterministic` variants removed.
pub(crate) fn normalize(name: &str) -> String {
    let mut s = name.trim();
    if s.len() >= 4 && s[..4].eq_ignore_ascii_case("ale/") {
        s = &s[4..];
    }
    if let Some(pos) = s.rfind("-v") {
        if s[pos + 2..].chars().all(|c| c.is_ascii_digit()) && pos + 2 < s.len() {
            s = &s[..pos];
        }
    }
    let mut key: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    for suffix in ["noframeskip", "deterministic"] {
        if key.len() > suffix.len() && key.ends_with(suffix) {
            key.truncate(key.len() - suffix.len());
        }
    }
    key
}

fn key_of(ale_name: &str) -> String {
    ale_name.chars().filter(|&c| c != '_').collect()
}

/// Bundled games within a small edit distance of `key`, closest first (at most 3).
fn close_matches(key: &str) -> Vec<&'static str> {
    let mut scored: Vec<(usize, &'static str)> = BUNDLED
        .iter()
        .filter_map(|(name, _)| {
            let candidate = normalize(name);
            let d = strsim::levenshtein(key, &candidate);
            let close = d <= (candidate.len().max(key.len()) / 3).max(2)
                || (key.len() >= 4 && candidate.contains(key));
            close.then_some((d, *name))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, name)| name).collect()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Cartridge sizes Stella accepts: 2K..=512K in 2K steps, the 10K Pitfall II image, and
/// Supercharger loads (multiples of 8448 bytes).
fn valid_rom_size(len: usize) -> bool {
    (2048..=512 * 1024).contains(&len)
        && (len.is_multiple_of(2048) || len.is_multiple_of(8448) || matches!(len, 10495 | 10496))
}

/// Reads and validates a user ROM. ALE identifies a game by file name and calls `exit(1)`
/// on names it does not know, so the game is identified here: by MD5 (ALE's md5.txt and the
/// bundled dumps), else by the file name when `allow_unknown_md5`.
fn load_user_rom(path: &Path, allow_unknown_md5: bool) -> Result<Rom, AtariError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| AtariError::Io {
        path: shown.clone(),
        source,
    })?;
    if !valid_rom_size(bytes.len()) {
        return Err(AtariError::BadRom {
            path: shown,
            why: format!(
                "{} bytes is not an Atari 2600 cartridge size (2 KiB to 512 KiB in 2 KiB steps)",
                bytes.len()
            ),
        });
    }
    let md5 = md5_hex(&bytes);
    if let Some((_, name, expected)) = HANGS_ALE.iter().find(|(known, _, _)| *known == md5) {
        return Err(AtariError::BadRom {
            path: shown,
            why: format!(
                "this dump of `{name}` (MD5 {md5}) hangs ALE's loadROM; use the dump ALE \
                 expects (MD5 {expected})"
            ),
        });
    }
    let by_md5 = SUPPORTED
        .iter()
        .find(|(_, known)| *known == md5)
        .map(|(name, _)| *name)
        .or_else(|| {
            BUNDLED
                .iter()
                .find(|(_, rom)| md5_hex(rom.data()) == md5)
                .map(|(_, rom)| ale_name_of(rom))
        });
    if let Some(ale_name) = by_md5 {
        return Ok(Rom {
            ale_name,
            bytes: Cow::Owned(bytes),
            md5,
        });
    }
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or("");
    let by_name = SUPPORTED
        .iter()
        .find(|(name, _)| key_of(name) == normalize(stem));
    match by_name {
        Some((ale_name, _)) if allow_unknown_md5 => Ok(Rom {
            ale_name,
            bytes: Cow::Owned(bytes),
            md5,
        }),
        Some((ale_name, known)) => Err(AtariError::BadRom {
            path: shown,
            why: format!(
                "MD5 {md5} is not a known dump of `{ale_name}`{}; set allow_unknown_md5 = true \
                 to run it anyway",
                if known.is_empty() {
                    String::new()
                } else {
                    format!(" (ALE expects {known})")
                }
            ),
        }),
        None => Err(AtariError::BadRom {
            path: shown,
            why: format!(
                "MD5 {md5} matches no ROM ALE supports, and the file name does not name a \
                 supported game (ALE identifies games by file name, e.g. space_invaders.bin)"
            ),
        }),
    }
}

/// Counter that makes temporary file names unique within the process.
static TMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Writes the ROM where ALE can load it, `<tmp>/envs-atari-roms-<uid>/<md5>/<ale_name>.bin`,
/// reusing an identical file. Written to a unique name and renamed, so concurrent writers
/// (threads or processes) never expose a partial file.
pub(crate) fn rom_file(rom: &Rom) -> Result<PathBuf, AtariError> {
    // SAFETY: `getuid` has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir()
        .join(format!("envs-atari-roms-{uid}"))
        .join(&rom.md5);
    let path = dir.join(format!("{}.bin", rom.ale_name));
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| AtariError::Io { path, source }
    };
    if std::fs::read(&path).is_ok_and(|existing| existing == *rom.bytes) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        rom.ale_name,
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, &rom.bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_rom_is_supported_by_ale_and_valid() {
        for (name, rom) in BUNDLED.iter() {
            assert_ne!(ale_name_of(rom), "unsupported", "{name}");
            assert!(valid_rom_size(rom.data().len()), "{name}");
            assert_eq!(normalize(name), key_of(ale_name_of(rom)), "{name}");
        }
    }

    #[test]
    fn names_normalise_across_spellings() {
        for name in [
            "Breakout",
            "breakout",
            "ALE/Breakout-v5",
            "BreakoutNoFrameskip-v4",
            "Breakout-v4",
            "BreakoutDeterministic-v4",
            "BREAKOUT",
        ] {
            assert_eq!(normalize(name), "breakout", "{name}");
        }
        assert_eq!(normalize("space_invaders"), normalize("SpaceInvaders"));
    }

    #[test]
    fn unknown_game_suggests_close_names() {
        let Err(AtariError::UnknownGame { suggestions, .. }) = resolve("Breakot", false) else {
            panic!("expected UnknownGame");
        };
        assert_eq!(suggestions.first(), Some(&"Breakout"));
        let Err(AtariError::UnknownGame { suggestions, .. }) = resolve("pacman", false) else {
            panic!("expected UnknownGame");
        };
        assert!(suggestions.contains(&"MsPacman"), "{suggestions:?}");
    }

    #[test]
    fn the_defender_dump_that_hangs_ale_is_refused_by_name_and_by_content() {
        let Err(AtariError::BadRom { why, .. }) = resolve("Defender", false) else {
            panic!("expected BadRom");
        };
        assert!(why.contains("0f643c34e40e3f1daafd9c524d3ffe64"), "{why}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("defender.bin");
        std::fs::write(&path, BundledRom::Defender.data()).expect("write");
        let path = path.to_str().expect("utf8");
        assert!(matches!(
            resolve(path, true),
            Err(AtariError::BadRom { .. })
        ));
    }

    #[test]
    fn reference_scores_accept_any_spelling() {
        assert_eq!(reference_scores("Breakout"), Some((1.7, 30.5)));
        assert_eq!(reference_scores("ALE/Pong-v5"), Some((-20.7, 14.6)));
        assert_eq!(reference_scores("space_invaders"), Some((148.0, 1668.7)));
        assert_eq!(reference_scores("Adventure"), None);
        assert_eq!(return_range("PongNoFrameskip-v4"), Some((-21.0, 21.0)));
        assert_eq!(return_range("Breakout"), None);
    }

    #[test]
    fn rom_sizes() {
        assert!(valid_rom_size(2048) && valid_rom_size(4096) && valid_rom_size(10495));
        assert!(!valid_rom_size(0) && !valid_rom_size(1000) && !valid_rom_size(4097));
        assert!(!valid_rom_size(1024 * 1024));
    }
}
