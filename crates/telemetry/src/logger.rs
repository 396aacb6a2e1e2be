//! One TensorBoard event file per `RunLogger`, written with our own TFRecord framing.
//!
//! tensorboard-rs's `FileWriter` names files by the second and pid (two writers on one
//! directory in the same second truncate each other), panics on I/O errors in its writer thread,
//! garbles non-square images and panics in `add_text`/`add_hparams`; so the summaries are built
//! here from tensorboard-proto types and framed by `record`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protobuf::well_known_types::Value as PbValue;
use protobuf::{Message, RepeatedField};
use tensorboard_proto::api::{
    DataType as HpDataType, Experiment, HParamInfo, MetricInfo, MetricName, Status,
};
use tensorboard_proto::event::{Event, SessionLog, SessionLog_SessionStatus};
use tensorboard_proto::plugin_hparams::{HParamsPluginData, SessionEndInfo, SessionStartInfo};
use tensorboard_proto::plugin_text::TextPluginData;
use tensorboard_proto::summary::{
    HistogramProto, Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Image,
    Summary_Value,
};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::{TensorShapeProto, TensorShapeProto_Dim};
use tensorboard_proto::types::DataType;

use crate::activity::encode_png;
use crate::record::write_record;
use crate::{labelled_module_activity_image, tags, ActivityBand, StepEvents, TelemetryError};

/// Events are flushed to disk at least this often, so a live TensorBoard sees them.
const AUTO_FLUSH: Duration = Duration::from_secs(5);
/// Histogram bucket count (TensorBoard re-bins to 30 for display anyway).
const HISTOGRAM_BUCKETS: usize = 30;
/// Tags TensorBoard's HParams plugin looks for (the same as PyTorch's `add_hparams`).
const HPARAMS_EXPERIMENT_TAG: &str = "_hparams_/experiment";
const HPARAMS_SESSION_START_TAG: &str = "_hparams_/session_start_info";
const HPARAMS_SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// Distinguishes writers created by one process within the same nanosecond.
static WRITER_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A hyperparameter value for TensorBoard's HParams tab.
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    /// A number (learning rate, module count, …).
    F64(f64),
    /// A string (core kind, game, …).
    Str(String),
    /// A flag.
    Bool(bool),
}

/// Writes scalars, histograms, images, text and hparams of one run to a new event file.
///
/// Every logger owns its own file `events.out.tfevents.<secs>.<host>.<pid>.<nanos>-<n>`,
/// created with `create_new`, so several loggers (even in several processes) can write into one
/// directory at the same instant without losing data, and no existing file is ever truncated.
pub struct RunLogger {
    path: PathBuf,
    out: BufWriter<File>,
    last_flush: Instant,
}

impl RunLogger {
    /// Creates `dir` (and parents) if needed and a new event file inside it.
    pub fn create(dir: &Path) -> Result<Self, TelemetryError> {
        std::fs::create_dir_all(dir).map_err(|source| TelemetryError::Io {
            op: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = hostname();
        let pid = std::process::id();
        // create_new makes the name unique even if the counter and clock both repeat
        // (another process with a recycled pid): on a clash take the next counter.
        let (path, file) = loop {
            let n = WRITER_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(
                "events.out.tfevents.{:010}.{host}.{pid}.{:09}-{n}",
                now.as_secs(),
                now.subsec_nanos()
            ));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(TelemetryError::Io {
                        op: "create event file",
                        path,
                        source,
                    })
                }
            }
        };
        let mut logger = Self {
            path,
            out: BufWriter::new(file),
            last_flush: Instant::now(),
        };
        let mut first = Event::new();
        first.set_wall_time(now.as_secs_f64());
        first.set_file_version("brain.Event:2".to_string());
        logger.write_event(&first)?;
        logger.flush()?;
        Ok(logger)
    }

    /// Marks a restart of the run at `step`: TensorBoard drops, from every earlier event file
    /// of this directory, the events at steps >= `step` (a `SessionLog` START event, what
    /// PyTorch's `SummaryWriter(purge_step=…)` writes; TensorBoard's fast Rust loader instead
    /// drops a tag's points from the step of its first new one). A run resumed from a checkpoint
    /// at step `s` calls this first with `s + 1`, so what was logged after the checkpoint and
    /// is logged again does not appear twice.
    pub fn purge_from(&mut self, step: u64) -> Result<(), TelemetryError> {
        let mut log = SessionLog::new();
        log.set_status(SessionLog_SessionStatus::START);
        let mut event = Event::new();
        event.set_wall_time(unix_secs());
        event.set_step(i64::try_from(step).map_err(|_| {
            TelemetryError::Invalid(format!("step {step} does not fit TensorBoard's i64"))
        })?);
        event.set_session_log(log);
        self.write_event(&event)?;
        self.flush()
    }

    /// The event file this logger writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs one scalar (stored as f32, as TensorBoard does).
    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<(), TelemetryError> {
        let mut v = value_with_tag(tag)?;
        v.set_simple_value(value as f32);
        self.write_summary(v, step)
    }

    /// Logs a histogram of `values` (non-finite values are dropped; nothing is written if none
    /// remain) in 30 equal-width buckets between their min and max.
    pub fn histogram(
        &mut self,
        tag: &str,
        values: &[f64],
        step: u64,
    ) -> Result<(), TelemetryError> {
        let mut v = value_with_tag(tag)?;
        let Some(histo) = histogram_proto(values) else {
            return Ok(());
        };
        v.set_histo(histo);
        self.write_summary(v, step)
    }

    /// Logs an RGB image: `rgb` is `[height, width, 3]` row-major u8, PNG-encoded here.
    pub fn image_rgb(
        &mut self,
        tag: &str,
        width: u32,
        height: u32,
        rgb: &[u8],
        step: u64,
    ) -> Result<(), TelemetryError> {
        let png = encode_png(width, height, rgb)?;
        let mut image = Summary_Image::new();
        image.set_width(to_i32(width, "image width")?);
        image.set_height(to_i32(height, "image height")?);
        image.set_colorspace(3);
        image.set_encoded_image_string(png);
        let mut v = value_with_tag(tag)?;
        v.set_image(image);
        self.write_summary(v, step)
    }

    /// Logs Markdown text (TensorBoard's Text tab renders tables, lists and code).
    pub fn text(&mut self, tag: &str, markdown: &str, step: u64) -> Result<(), TelemetryError> {
        let mut plugin = TextPluginData::new();
        plugin.set_version(0);
        let mut v = value_with_tag(tag)?;
        v.set_metadata(plugin_metadata(
            "text",
            encode(&plugin, "text plugin data")?,
        ));
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_STRING);
        let mut dim = TensorShapeProto_Dim::new();
        dim.set_size(1);
        let mut shape = TensorShapeProto::new();
        shape.set_dim(RepeatedField::from_vec(vec![dim]));
        tensor.set_tensor_shape(shape);
        tensor.set_string_val(RepeatedField::from_vec(vec![markdown.as_bytes().to_vec()]));
        v.set_tensor(tensor);
        self.write_summary(v, step)
    }

    /// Declares this run's hyperparameters for TensorBoard's HParams tab, with `metrics` naming
    /// scalar tags of this run (e.g. `charts/episodic_return`) shown as its metric columns.
    /// Writes the experiment, session-start and session-end summaries PyTorch's `add_hparams`
    /// writes; call it once per run.
    pub fn hparams(
        &mut self,
        hparams: &[(String, HParamValue)],
        metrics: &[&str],
    ) -> Result<(), TelemetryError> {
        let mut infos = Vec::with_capacity(hparams.len());
        let mut values = HashMap::with_capacity(hparams.len());
        for (name, value) in hparams {
            if name.is_empty() {
                return Err(TelemetryError::Invalid("empty hparam name".into()));
            }
            let mut info = HParamInfo::new();
            info.set_name(name.clone());
            let mut pb = PbValue::new();
            match value {
                HParamValue::F64(x) => {
                    info.set_field_type(HpDataType::DATA_TYPE_FLOAT64);
                    pb.set_number_value(*x);
                }
                HParamValue::Str(s) => {
                    info.set_field_type(HpDataType::DATA_TYPE_STRING);
                    pb.set_string_value(s.clone());
                }
                HParamValue::Bool(b) => {
                    info.set_field_type(HpDataType::DATA_TYPE_BOOL);
                    pb.set_bool_value(*b);
                }
            }
            infos.push(info);
            values.insert(name.clone(), pb);
        }
        let metric_infos = metrics
            .iter()
            .map(|tag| {
                let mut name = MetricName::new();
                name.set_tag((*tag).to_string());
                let mut info = MetricInfo::new();
                info.set_name(name);
                info
            })
            .collect();
        let now = unix_secs();

        let mut experiment = Experiment::new();
        experiment.set_hparam_infos(RepeatedField::from_vec(infos));
        experiment.set_metric_infos(RepeatedField::from_vec(metric_infos));
        experiment.set_time_created_secs(now);
        let mut data = HParamsPluginData::new();
        data.set_experiment(experiment);
        self.write_hparams_data(HPARAMS_EXPERIMENT_TAG, &data)?;

        let mut start = SessionStartInfo::new();
        start.set_hparams(values);
        start.set_start_time_secs(now);
        let mut data = HParamsPluginData::new();
        data.set_session_start_info(start);
        self.write_hparams_data(HPARAMS_SESSION_START_TAG, &data)?;

        let mut end = SessionEndInfo::new();
        end.set_status(Status::STATUS_SUCCESS);
        end.set_end_time_secs(now);
        let mut data = HParamsPluginData::new();
        data.set_session_end_info(end);
        self.write_hparams_data(HPARAMS_SESSION_END_TAG, &data)
    }

    /// Logs BRIMs diagnostics for `layers` (index 0 = bottom layer): each module's active rate
    /// as `brims/layer{l}/module{j}_active_rate`, the null-attention scores of layers that have
    /// them as the histogram `brims/layer{l}/null_attention`, and with `with_image` the picture
    /// of [`labelled_module_activity_image`] as `brims/module_activity`.
    pub fn brims_activity(
        &mut self,
        layers: &[ActivityBand],
        step: u64,
        with_image: bool,
    ) -> Result<(), TelemetryError> {
        for (l, band) in layers.iter().enumerate() {
            for (j, rate) in band.active_rates().into_iter().enumerate() {
                self.scalar(&tags::module_active_rate(l, j), rate, step)?;
            }
            if let Some(scores) = band.null_attention() {
                let scores: Vec<f64> = scores.iter().map(|&x| f64::from(x)).collect();
                self.histogram(&tags::null_attention(l), &scores, step)?;
            }
        }
        if with_image && !layers.is_empty() {
            self.brims_activity_image(layers, None, step)?;
        }
        Ok(())
    }

    /// Logs the picture of [`labelled_module_activity_image`] (layers named, modules numbered,
    /// and with `events` the rewards and lives lost above) as `brims/module_activity`.
    pub fn brims_activity_image(
        &mut self,
        layers: &[ActivityBand],
        events: Option<&StepEvents>,
        step: u64,
    ) -> Result<(), TelemetryError> {
        let img = labelled_module_activity_image(layers, events);
        self.image_rgb(tags::MODULE_ACTIVITY, img.width, img.height, &img.rgb, step)
    }

    /// Pushes buffered events to the OS (also done automatically every few seconds and on drop).
    pub fn flush(&mut self) -> Result<(), TelemetryError> {
        self.last_flush = Instant::now();
        self.out.flush().map_err(|source| TelemetryError::Io {
            op: "flush event file",
            path: self.path.clone(),
            source,
        })
    }

    fn write_hparams_data(
        &mut self,
        tag: &str,
        data: &HParamsPluginData,
    ) -> Result<(), TelemetryError> {
        let mut with_version = data.clone();
        with_version.set_version(0);
        let mut v = value_with_tag(tag)?;
        v.set_metadata(plugin_metadata(
            "hparams",
            encode(&with_version, "hparams plugin data")?,
        ));
        self.write_summary(v, 0)
    }

    fn write_summary(&mut self, value: Summary_Value, step: u64) -> Result<(), TelemetryError> {
        let mut summary = Summary::new();
        summary.set_value(RepeatedField::from_vec(vec![value]));
        let mut event = Event::new();
        event.set_wall_time(unix_secs());
        event.set_step(i64::try_from(step).map_err(|_| {
            TelemetryError::Invalid(format!("step {step} does not fit TensorBoard's i64"))
        })?);
        event.set_summary(summary);
        self.write_event(&event)?;
        if self.last_flush.elapsed() >= AUTO_FLUSH {
            self.flush()?;
        }
        Ok(())
    }

    fn write_event(&mut self, event: &Event) -> Result<(), TelemetryError> {
        let bytes = encode(event, "event")?;
        write_record(&mut self.out, &bytes).map_err(|source| TelemetryError::Io {
            op: "write event",
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for RunLogger {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; call `flush` first to see them.
        let _ = self.out.flush();
    }
}

/// Builds the histogram proto; `None` when no finite value is given.
fn histogram_proto(values: &[f64]) -> Option<HistogramProto> {
    let finite: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let min = finite.iter().copied().reduce(f64::min)?;
    let max = finite.iter().copied().reduce(f64::max)?;
    // A constant sample still gets increasing edges: a unit-wide range centred on it.
    let (lo, hi) = if max > min {
        (min, max)
    } else {
        (min - 0.5, max + 0.5)
    };
    let width = (hi - lo) / HISTOGRAM_BUCKETS as f64;
    let mut counts = vec![0.0; HISTOGRAM_BUCKETS];
    for &x in &finite {
        counts[(((x - lo) / width) as usize).min(HISTOGRAM_BUCKETS - 1)] += 1.0;
    }
    // Right edges; the last is `hi` exactly so every value lies inside some bucket.
    let limits: Vec<f64> = (1..=HISTOGRAM_BUCKETS)
        .map(|i| {
            if i == HISTOGRAM_BUCKETS {
                hi
            } else {
                lo + width * i as f64
            }
        })
        .collect();
    let mut h = HistogramProto::new();
    h.set_min(min);
    h.set_max(max);
    h.set_num(finite.len() as f64);
    h.set_sum(finite.iter().sum());
    h.set_sum_squares(finite.iter().map(|x| x * x).sum());
    h.set_bucket_limit(limits);
    h.set_bucket(counts);
    Some(h)
}

fn value_with_tag(tag: &str) -> Result<Summary_Value, TelemetryError> {
    if tag.is_empty() {
        return Err(TelemetryError::Invalid("empty TensorBoard tag".into()));
    }
    let mut v = Summary_Value::new();
    v.set_tag(tag.to_string());
    Ok(v)
}

fn plugin_metadata(plugin: &str, content: Vec<u8>) -> SummaryMetadata {
    let mut data = SummaryMetadata_PluginData::new();
    data.set_plugin_name(plugin.to_string());
    data.set_content(content);
    let mut meta = SummaryMetadata::new();
    meta.set_plugin_data(data);
    meta
}

fn encode(msg: &impl Message, what: &'static str) -> Result<Vec<u8>, TelemetryError> {
    msg.write_to_bytes()
        .map_err(|source| TelemetryError::Encode { what, source })
}

fn to_i32(x: u32, what: &str) -> Result<i32, TelemetryError> {
    i32::try_from(x).map_err(|_| TelemetryError::Invalid(format!("{what} {x} is too large")))
}

fn unix_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The host name for the event file name (TensorBoard only needs "tfevents" in it).
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if clean.is_empty() {
        "localhost".to_string()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_every_finite_value_once() {
        let values: Vec<f64> = (0..100)
            .map(|i| i as f64 / 10.0)
            .chain([f64::NAN])
            .collect();
        let h = histogram_proto(&values).unwrap();
        assert_eq!(h.get_num(), 100.0);
        assert_eq!(h.get_bucket().iter().sum::<f64>(), 100.0);
        assert_eq!(h.get_min(), 0.0);
        assert_eq!(h.get_max(), 9.9);
        assert_eq!(*h.get_bucket_limit().last().unwrap(), 9.9);
        assert!(h.get_bucket_limit().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn histogram_of_constant_values_has_one_full_bucket() {
        let h = histogram_proto(&[0.5; 7]).unwrap();
        assert!(h.get_bucket_limit().windows(2).all(|w| w[0] < w[1]));
        assert_eq!((h.get_min(), h.get_max()), (0.5, 0.5));
        assert_eq!(h.get_bucket().iter().filter(|&&c| c > 0.0).count(), 1);
        assert_eq!(h.get_bucket().iter().sum::<f64>(), 7.0);
    }

    #[test]
    fn histogram_of_nothing_finite_is_none() {
        assert!(histogram_proto(&[]).is_none());
        assert!(histogram_proto(&[f64::INFINITY]).is_none());
    }
}
