//! `cargo run --release -p brims --example fixture_check -- FIXTURE.safetensors`
//!
//! Checks the BRIMs cell against a reference fixture (the JSON of the same stem must sit beside
//! it); exits 0 only when every case matches (f32 ≤ 1e-5, f64 ≤ 1e-10, every mask equal).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fixture_check FIXTURE.safetensors");
        return ExitCode::from(2);
    };
    let report = match brims::check_fixture(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for case in &report.cases {
        println!(
            "case {:<10} {:?}: worst abs err {:.3e} at {} ({} tensors, tol {:.0e}); masks {}; {}",
            case.name,
            case.dtype,
            case.max_abs_err,
            case.worst,
            case.compared,
            case.tolerance,
            if case.mask_mismatches.is_empty() {
                "all match".to_string()
            } else {
                format!(
                    "{} differ: {:?}",
                    case.mask_mismatches.len(),
                    case.mask_mismatches
                )
            },
            if case.passed() { "PASS" } else { "FAIL" }
        );
    }
    if report.passed() {
        println!("fixture {}: PASS", path.display());
        ExitCode::SUCCESS
    } else {
        println!("fixture {}: FAIL", path.display());
        ExitCode::FAILURE
    }
}
