//! Ctrl-C, SIGTERM and SIGHUP stop a run cleanly: the handler sets a flag the driver checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The stop flag, raised by Ctrl-C (SIGINT), SIGTERM or SIGHUP (how Slurm, systemd, Docker
/// and Kubernetes stop a job): the run abandons the rollout it is collecting (or finishes the
/// update it is in), writes a checkpoint and exits 0. A second signal exits at once (130).
pub(crate) fn install_stop_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "interrupt: stopping (a rollout being collected is dropped, an update in progress \
             finishes), then writing a checkpoint"
        );
    });
    stop
}
