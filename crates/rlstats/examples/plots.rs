//! Draws a performance-profile and a sample-efficiency PNG from made-up scores of two
//! algorithms (5 seeds × 4 games, at 5 checkpoints), to see what the plots look like:
//!
//! ```text
//! cargo run -p rlstats --example plots -- OUT_DIR
//! ```

use std::path::PathBuf;

use rlstats::{
    iqm, performance_profile, plot_performance_profiles, plot_sample_efficiency, sample_efficiency,
    Band, Bootstrap, Scores,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let cfg = Bootstrap::default();
    let frames = [2e5, 4e5, 6e5, 8e5, 1e6];
    // Deterministic "scores": algorithm skill × progress × a per-run, per-game wobble.
    let scores = |skill: f64, progress: f64| {
        let values = (0..5 * 4)
            .map(|i| {
                let wobble = ((i * 7919 % 113) as f64 / 113.0 - 0.5) * 0.6;
                (skill * progress + wobble * progress.sqrt()).max(-0.1)
            })
            .collect();
        Scores::new(5, 4, values)
    };
    let taus: Vec<f64> = (0..=40).map(|i| i as f64 * 0.05).collect();
    let mut profiles = Vec::new();
    let mut curves = Vec::new();
    for (label, skill) in [("LSTM", 0.8), ("BRIMs", 1.1)] {
        let checkpoints = frames
            .iter()
            .map(|&f| scores(skill, f / 1e6))
            .collect::<Result<Vec<_>, _>>()?;
        let last = checkpoints.last().expect("five checkpoints");
        profiles.push(Band {
            label: label.into(),
            x: taus.clone(),
            y: performance_profile(last, &taus, &cfg)?,
        });
        curves.push(Band {
            label: label.into(),
            x: frames.to_vec(),
            y: sample_efficiency(&checkpoints, iqm, &cfg)?,
        });
    }
    plot_performance_profiles(
        &out.join("performance_profiles.png"),
        &profiles,
        "human-normalised score",
    )?;
    plot_sample_efficiency(
        &out.join("sample_efficiency.png"),
        &curves,
        "human-normalised score",
    )?;
    println!("{}", out.display());
    Ok(())
}
