//! Checkpoint files: `ckpt-<update>.safetensors` (model + Adam moments) and `ckpt-<update>.json`
//! (header). Written atomically (temp file, fsync, rename); the header goes last, so a header
//! on disk always names a complete tensor file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

use crate::config::PpoConfig;
use crate::error::{PpoError, Result};
use crate::network::NetworkConfig;

/// Version of the checkpoint layout; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// The JSON header of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointHeader {
    /// [`FORMAT_VERSION`] at write time.
    pub format_version: u32,
    /// PPO hyperparameters of the run.
    pub ppo: PpoConfig,
    /// The network.
    pub network: NetworkConfig,
    /// Shape of one observation.
    pub obs_shape: Vec<usize>,
    /// Number of actions.
    pub n_actions: usize,
    /// Environment steps consumed.
    pub global_step: u64,
    /// Updates done.
    pub updates: u64,
    /// Adam's step count.
    pub adam_step: u64,
    /// The learner's RNG state.
    pub rng: Pcg64,
    /// The tensor file's name (same directory).
    pub tensors_file: String,
    /// The tensor file's size in bytes (detects truncation).
    pub tensors_bytes: u64,
    /// Time the run has spent up to this checkpoint, as the driver measured it (absent in
    /// checkpoints written without it); a resumed run adds to it, so its speed covers the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<RunClock>,
    /// The effective config of the run that wrote it (the driver's TOML, opaque here), so a
    /// checkpoint copied out of its run directory still says what it was trained on (absent
    /// in checkpoints written without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_config: Option<String>,
}

/// Wall-clock totals of a run up to a checkpoint, kept by the driver across resumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunClock {
    /// Environment steps these seconds cover.
    pub steps: u64,
    /// Seconds of training (acting, updating, logging, checkpointing).
    pub wall_secs: f64,
    /// Of which acting in the envs (collecting rollouts).
    pub rollout_secs: f64,
    /// Of which PPO updates.
    pub update_secs: f64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PpoError + '_ {
    move |source| PpoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The suffix of the checkpoint writer's temp files (`ckpt-<update>.safetensors.tmp`).
const TEMP_SUFFIX: &str = ".tmp";

/// Writes `path` via `path.tmp`: `fill` writes the temp file, which is fsynced and renamed.
/// A failed write removes its temp file (a full disk must not keep a 15 MB leftover); one that
/// a kill cut short is removed by [`remove_temp_files`] when the run continues.
fn write_atomic(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TEMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let written = fill(&tmp).and_then(|()| {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if let Some(dir) = path.parent() {
        // Make the rename durable; not every platform can open a directory, so best effort.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Checkpoint headers in `dir`, oldest first, as `(update, header path)`.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(num) = name
            .strip_prefix("ckpt-")
            .and_then(|n| n.strip_suffix(".json"))
        {
            if let Ok(u) = num.parse::<u64>() {
                out.push((u, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes the checkpoint writer's temp files from `dir` (`ckpt-*.tmp`: writes that a kill or
/// a crash cut short; a complete checkpoint never needs one). Call it only while holding the
/// run's lock, so no other process is writing there. Returns the files removed.
pub fn remove_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    if !dir.exists() {
        return Ok(removed);
    }
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("ckpt-") && name.ends_with(TEMP_SUFFIX) && path.is_file() {
            fs::remove_file(&path).map_err(io(&path))?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

/// The newest checkpoint header in `dir`, if any.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(dir)?.pop().map(|(_, p)| p))
}

pub(crate) fn write(
    dir: &Path,
    mut header: CheckpointHeader,
    tensors: &HashMap<String, Tensor>,
    keep: usize,
) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let stem = format!("ckpt-{:08}", header.updates);
    let tensors_path = dir.join(format!("{stem}.safetensors"));
    let header_path = dir.join(format!("{stem}.json"));
    write_atomic(&tensors_path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(|e| PpoError::Checkpoint {
            path: tmp.to_path_buf(),
            why: e.to_string(),
        })
    })?;
    header.tensors_file = format!("{stem}.safetensors");
    header.tensors_bytes = fs::metadata(&tensors_path)
        .map_err(io(&tensors_path))?
        .len();
    let json = serde_json::to_vec_pretty(&header).map_err(|e| PpoError::Checkpoint {
        path: header_path.clone(),
        why: e.to_string(),
    })?;
    write_atomic(&header_path, |tmp| {
        let mut f = File::create(tmp).map_err(io(tmp))?;
        f.write_all(&json).map_err(io(tmp))
    })?;
    // Keep the newest `keep`; delete headers first so no header ever names a missing file.
    let all = list_checkpoints(dir)?;
    let excess = all.len().saturating_sub(keep.max(1));
    for (_, old) in all.into_iter().take(excess) {
        if old == header_path {
            continue;
        }
        if let Ok(h) = read_header(&old) {
            fs::remove_file(&old).map_err(io(&old))?;
            let t = dir.join(h.tensors_file);
            if t.exists() {
                fs::remove_file(&t).map_err(io(&t))?;
            }
        }
    }
    Ok(header_path)
}

/// Reads and checks a checkpoint header.
pub fn read_header(path: &Path) -> Result<CheckpointHeader> {
    let bytes = fs::read(path).map_err(io(path))?;
    let header: CheckpointHeader =
        serde_json::from_slice(&bytes).map_err(|e| PpoError::Checkpoint {
            path: path.to_path_buf(),
            why: format!("not a checkpoint header: {e}"),
        })?;
    if header.format_version != FORMAT_VERSION {
        return Err(PpoError::Checkpoint {
            path: path.to_path_buf(),
            why: format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                header.format_version
            ),
        });
    }
    Ok(header)
}

/// Loads the tensors a header names (on the CPU), checking the file's size first and every
/// floating-point value after: a NaN or infinite weight is [`PpoError::NonFiniteCheckpoint`].
pub(crate) fn read_tensors(
    header_path: &Path,
    header: &CheckpointHeader,
) -> Result<(PathBuf, HashMap<String, Tensor>)> {
    let dir = header_path.parent().unwrap_or(Path::new("."));
    let path = dir.join(&header.tensors_file);
    let len = fs::metadata(&path).map_err(io(&path))?.len();
    if len != header.tensors_bytes {
        return Err(PpoError::Checkpoint {
            path,
            why: format!(
                "file has {len} bytes, the header says {} (truncated or replaced)",
                header.tensors_bytes
            ),
        });
    }
    let tensors =
        candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| PpoError::Checkpoint {
            path: path.clone(),
            why: format!("unreadable safetensors: {e}"),
        })?;
    check_finite(&path, &tensors)?;
    Ok((path, tensors))
}

/// Refuses tensors holding NaN or infinite values (a diverged run saved, or a damaged file).
fn check_finite(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if !t.dtype().is_float() {
            continue;
        }
        let values = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(PpoError::NonFiniteCheckpoint {
                path: path.to_path_buf(),
                tensor: name.clone(),
                count: bad,
                total: values.len(),
            });
        }
    }
    Ok(())
}
