//! The command line of `brims sweep`: its subcommands and the options of a run.

use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Arguments of `brims sweep`.
#[derive(Args, Debug, Clone)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
    brims sweep configs/sweeps/cartpole.toml --out runs/sweep-cartpole --jobs 2\n  \
    brims sweep status runs/sweep-cartpole\n  \
    brims sweep report runs/sweep-cartpole\n  \
    brims sweep configs/sweeps/atari.toml --out /shared/sweep-atari --executor slurm \
    --partition gpu --time 12:00:00 --cpus-per-task 4 --mem 16G"
)]
pub(crate) struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    #[command(flatten)]
    pub run: SweepRunArgs,
}

/// `brims sweep status|report DIR`.
#[derive(Subcommand, Debug, Clone)]
pub(crate) enum SweepCommand {
    /// The grid with each run's state and progress (frames done / budget).
    #[command(after_help = "Example:\n  brims sweep status runs/sweep-cartpole")]
    Status {
        /// The sweep directory.
        dir: PathBuf,
    },
    /// Redraw report.md and the plots from the finished runs.
    #[command(after_help = "Examples:\n  \
        brims sweep report runs/sweep-cartpole\n  \
        brims sweep report --from-csv docs/results/atari-v1")]
    Report {
        /// The sweep directory.
        dir: PathBuf,
        /// DIR is a published results directory instead (runs/runs.json and one
        /// runs/<id>.csv of `frames,episodic_return` per run, as docs/results/atari-v1 holds):
        /// the same report is drawn from those files into DIR/report.
        #[arg(long)]
        from_csv: bool,
    },
    /// One run of a sweep: a new run, or its continuation (what each Slurm task executes).
    #[command(
        hide = true,
        after_help = "Example:\n  brims sweep run-one runs/sweep-cartpole cartpole_lstm-s1"
    )]
    RunOne {
        /// The sweep directory.
        dir: PathBuf,
        /// The run's id (as in manifest.json).
        id: String,
    },
}

/// Where the runs execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub(crate) enum Executor {
    /// Child processes on this machine.
    Local,
    /// One Slurm array job.
    Slurm,
}

/// `brims sweep SPEC.toml …`.
#[derive(Args, Debug, Clone)]
pub(crate) struct SweepRunArgs {
    /// The sweep spec (TOML: name, games, configs, seeds, total_frames, overrides).
    pub spec: Option<PathBuf>,
    /// The sweep directory (default: runs/sweep-<name>); rerunning on it continues the sweep.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the runs execute.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,
    /// Local: runs at once; each gets cores / jobs threads.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Slurm: partition (`--partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm: time limit per task (`--time`, e.g. 12:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Slurm: CPUs per task (`--cpus-per-task`); also the run's thread count.
    #[arg(long)]
    pub cpus_per_task: Option<usize>,
    /// Slurm: memory per task (`--mem`, e.g. 16G).
    #[arg(long)]
    pub mem: Option<String>,
    /// Slurm: a file of extra `#SBATCH` or set-up lines for this site, copied into the script.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Slurm: wait until the array job has left the queue, then report.
    #[arg(long)]
    pub wait: bool,
    /// No progress bar: a plain line when a run changes state.
    #[arg(long)]
    pub quiet: bool,
}
