//! Writes event files with `RunLogger` and reads them back with the independent `tfrecord`
//! crate (prost-generated TensorFlow protos, CRC integrity checked on every record).

use std::path::{Path, PathBuf};

use protobuf::Message;
use telemetry::{module_activity_image, tags, ActivityBand, HParamValue, RunLogger};
use tfrecord::protobuf::summary::value::Value as V;
use tfrecord::protobuf::{event::What, summary::Value};
use tfrecord::{EventIter, RecordReaderConfig};

/// (step, tag, value) of every summary value in one event file, after checking the file header.
fn read_values(path: &Path) -> Vec<(i64, Value)> {
    let events: Vec<_> = EventIter::open(path, RecordReaderConfig::default())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(matches!(
        &events[0].what,
        Some(What::FileVersion(v)) if v == "brain.Event:2"
    ));
    events[1..]
        .iter()
        .flat_map(|e| match &e.what {
            Some(What::Summary(s)) => s
                .value
                .iter()
                .map(|v| (e.step, v.clone()))
                .collect::<Vec<_>>(),
            other => panic!("expected a summary, got {other:?}"),
        })
        .collect()
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .contains("tfevents")
        })
        .collect();
    files.sort();
    files
}

fn scalars(values: &[(i64, Value)], tag: &str) -> Vec<(i64, f32)> {
    values
        .iter()
        .filter(|(_, v)| v.tag == tag)
        .map(|(step, v)| match v.value {
            Some(V::SimpleValue(x)) => (*step, x),
            ref other => panic!("{tag}: not a scalar: {other:?}"),
        })
        .collect()
}

fn plugin_name(v: &Value) -> &str {
    &v.metadata
        .as_ref()
        .unwrap()
        .plugin_data
        .as_ref()
        .unwrap()
        .plugin_name
}

#[test]
fn every_summary_kind_reads_back_with_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RunLogger::create(dir.path()).unwrap();
    for step in 0..5u64 {
        log.scalar(tags::EPISODIC_RETURN, step as f64 * 1.5 - 2.0, step * 128)
            .unwrap();
        log.scalar(tags::SPS, 1000.0 + step as f64, step * 128)
            .unwrap();
    }
    let values: Vec<f64> = (0..1000).map(|i| (i % 100) as f64 / 100.0).collect();
    log.histogram(&tags::null_attention(1), &values, 640)
        .unwrap();
    let config = "| key | value |\n|---|---|\n| core.kind | brims |\n| ppo.lr | 0.00025 |";
    log.text(tags::CONFIG, config, 0).unwrap();
    let band = ActivityBand::new(30, 2, (0..60).map(|i| i % 3 == 0).collect()).unwrap();
    let img = module_activity_image(&[band.clone(), band]);
    log.image_rgb(tags::MODULE_ACTIVITY, img.width, img.height, &img.rgb, 640)
        .unwrap();
    log.hparams(
        &[
            ("core.kind".into(), HParamValue::Str("brims".into())),
            ("ppo.lr".into(), HParamValue::F64(2.5e-4)),
            ("norm_adv".into(), HParamValue::Bool(true)),
        ],
        &[tags::EPISODIC_RETURN],
    )
    .unwrap();
    log.flush().unwrap();

    let files = event_files(dir.path());
    assert_eq!(files, vec![log.path().to_path_buf()]);
    let values = read_values(log.path());

    assert_eq!(
        scalars(&values, tags::EPISODIC_RETURN),
        vec![(0, -2.0), (128, -0.5), (256, 1.0), (384, 2.5), (512, 4.0)]
    );
    assert_eq!(scalars(&values, tags::SPS)[4], (512, 1004.0));

    let (step, histo) = values
        .iter()
        .find(|(_, v)| v.tag == "brims/layer1/null_attention")
        .unwrap();
    let Some(V::Histo(h)) = &histo.value else {
        panic!("not a histogram")
    };
    assert_eq!(*step, 640);
    assert_eq!((h.num, h.min, h.max), (1000.0, 0.0, 0.99));
    assert_eq!(h.bucket.iter().sum::<f64>(), 1000.0);
    assert_eq!(h.bucket.len(), h.bucket_limit.len());
    assert!((h.sum - values_sum()).abs() < 1e-9);

    let (_, text) = values.iter().find(|(_, v)| v.tag == tags::CONFIG).unwrap();
    assert_eq!(plugin_name(text), "text");
    let Some(V::Tensor(t)) = &text.value else {
        panic!("text is not a tensor")
    };
    assert_eq!(t.dtype, 7, "DT_STRING");
    assert_eq!(t.tensor_shape.as_ref().unwrap().dim[0].size, 1);
    assert_eq!(t.string_val, vec![config.as_bytes().to_vec()]);

    let (_, image) = values
        .iter()
        .find(|(_, v)| v.tag == tags::MODULE_ACTIVITY)
        .unwrap();
    let Some(V::Image(im)) = &image.value else {
        panic!("not an image")
    };
    assert_eq!((im.width, im.height, im.colorspace), (120, 34, 3));
    let decoder = png::Decoder::new(std::io::Cursor::new(&im.encoded_image_string));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (120, 34));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(&pixels[..info.buffer_size()], &img.rgb[..]);

    let hp: Vec<_> = values
        .iter()
        .filter(|(_, v)| v.tag.starts_with("_hparams_/"))
        .collect();
    let hp_tags: Vec<_> = hp.iter().map(|(_, v)| v.tag.as_str()).collect();
    assert_eq!(
        hp_tags,
        [
            "_hparams_/experiment",
            "_hparams_/session_start_info",
            "_hparams_/session_end_info"
        ]
    );
    assert!(hp.iter().all(|(_, v)| plugin_name(v) == "hparams"));
    // The plugin payload is TensorBoard's HParamsPluginData; decode it with the generated
    // types (same wire format as TensorBoard's, whatever the proto package is called).
    let content = |i: usize| {
        let meta = hp[i].1.metadata.as_ref().unwrap();
        tensorboard_proto::plugin_hparams::HParamsPluginData::parse_from_bytes(
            &meta.plugin_data.as_ref().unwrap().content,
        )
        .unwrap()
    };
    let experiment = content(0).get_experiment().clone();
    let names: Vec<_> = experiment
        .get_hparam_infos()
        .iter()
        .map(|i| i.get_name())
        .collect();
    assert_eq!(names, ["core.kind", "ppo.lr", "norm_adv"]);
    assert_eq!(
        experiment.get_metric_infos()[0].get_name().get_tag(),
        tags::EPISODIC_RETURN
    );
    let start = content(1).get_session_start_info().clone();
    assert_eq!(start.get_hparams()["core.kind"].get_string_value(), "brims");
    assert_eq!(start.get_hparams()["ppo.lr"].get_number_value(), 2.5e-4);
    assert!(start.get_hparams()["norm_adv"].get_bool_value());
}

fn values_sum() -> f64 {
    (0..1000).map(|i| (i % 100) as f64 / 100.0).sum()
}

#[test]
fn loggers_created_at_the_same_instant_keep_all_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let loggers: Vec<RunLogger> = (0..4)
        .map(|_| RunLogger::create(dir.path()).unwrap())
        .collect();
    // Interleave writes, then drop them in reverse so any shared file would lose data.
    let mut loggers = loggers;
    for step in 0..50u64 {
        for (k, log) in loggers.iter_mut().enumerate() {
            log.scalar("x", (k * 1000) as f64 + step as f64, step)
                .unwrap();
        }
    }
    while let Some(log) = loggers.pop() {
        drop(log);
    }
    let files = event_files(dir.path());
    assert_eq!(files.len(), 4);
    let mut seen: Vec<f32> = Vec::new();
    for f in &files {
        let xs = scalars(&read_values(f), "x");
        assert_eq!(xs.len(), 50);
        let k = (xs[0].1 / 1000.0).floor();
        for (step, (s, x)) in xs.iter().enumerate() {
            assert_eq!((*s, *x), (step as i64, k * 1000.0 + step as f32));
        }
        seen.push(k);
    }
    seen.sort_by(f32::total_cmp);
    assert_eq!(seen, vec![0.0, 1.0, 2.0, 3.0]);
}

#[test]
fn create_never_truncates_an_existing_file_and_reports_bad_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = RunLogger::create(dir.path()).unwrap();
    first.scalar("a", 1.0, 1).unwrap();
    first.flush().unwrap();
    let len = std::fs::metadata(first.path()).unwrap().len();
    let _second = RunLogger::create(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(first.path()).unwrap().len(), len);

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = RunLogger::create(&file.join("run")).err().unwrap();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RunLogger::create(dir.path()).unwrap();
    assert!(log.scalar("", 1.0, 0).is_err());
    assert!(log.image_rgb("img", 4, 4, &[0; 47], 0).is_err());
    assert!(log.scalar("ok", 1.0, u64::MAX).is_err());
    log.histogram("h", &[f64::NAN], 0).unwrap();
    log.flush().unwrap();
    assert!(read_values(log.path()).is_empty());
}

#[test]
fn brims_activity_logs_rates_histograms_and_the_picture() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RunLogger::create(dir.path()).unwrap();
    // Layer 0: 2 modules, module 1 active 3 of 4 steps; layer 1: 1 module, never active.
    let l0 = ActivityBand::new(
        4,
        2,
        vec![true, false, false, true, true, true, false, true],
    )
    .unwrap()
    .with_null_attention(vec![0.1, 0.9, 0.8, 0.2, 0.3, 0.1, 0.7, 0.05])
    .unwrap();
    let l1 = ActivityBand::new(4, 1, vec![false; 4]).unwrap();
    log.brims_activity(&[l0, l1], 99, true).unwrap();
    log.flush().unwrap();
    let values = read_values(log.path());
    assert_eq!(
        scalars(&values, "brims/layer0/module0_active_rate"),
        vec![(99, 0.5)]
    );
    assert_eq!(
        scalars(&values, "brims/layer0/module1_active_rate"),
        vec![(99, 0.75)]
    );
    assert_eq!(
        scalars(&values, "brims/layer1/module0_active_rate"),
        vec![(99, 0.0)]
    );
    let histos: Vec<_> = values
        .iter()
        .filter_map(|(_, v)| match &v.value {
            Some(V::Histo(h)) => Some((v.tag.as_str(), h.num)),
            _ => None,
        })
        .collect();
    assert_eq!(histos, vec![("brims/layer0/null_attention", 8.0)]);
    let images = values
        .iter()
        .filter(|(_, v)| v.tag == tags::MODULE_ACTIVITY)
        .count();
    assert_eq!(images, 1);
}

#[test]
fn purge_from_writes_a_session_start_at_the_step() {
    use tfrecord::protobuf::session_log::SessionStatus;
    let dir = tempfile::tempdir().unwrap();
    let mut log = RunLogger::create(dir.path()).unwrap();
    log.purge_from(2049).unwrap();
    log.scalar("x", 1.0, 2080).unwrap();
    log.flush().unwrap();
    let events: Vec<_> = EventIter::open(log.path(), RecordReaderConfig::default())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1].step, 2049);
    match &events[1].what {
        Some(What::SessionLog(s)) => assert_eq!(s.status, SessionStatus::Start as i32),
        other => panic!("expected a session log, got {other:?}"),
    }
    assert!(log.purge_from(u64::MAX).is_err());
}
