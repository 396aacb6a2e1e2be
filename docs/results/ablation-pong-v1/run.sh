#!/usr/bin/env bash
# Reproduces docs/results/ablation-pong-v1/ (issue 25): the Pong ablation grid, then test-time
# lesions and linear probes of every run's final checkpoint.
#
#   bash docs/results/ablation-pong-v1/run.sh [OUT_DIR]      (default: runs/ablation-pong-v1-out)
#
# The grid is 18 runs of 1M agent steps (6 cores x seeds 4, 5, 6), two at a time with a core
# each: about 8-9 hours on 2 Zen 4 cores at atari-v1's speed. Rerunning continues: finished runs
# are skipped, interrupted ones resume from their last checkpoint (every 10 updates). Every run
# must come from one binary: build it once, and pass BRIMS_BIN to reuse a frozen copy when the
# grid spans sessions. Lesions and probes skip an output directory that exists.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=${1:-runs/ablation-pong-v1-out}
mkdir -p "$out"
if [ -z "${BRIMS_BIN:-}" ]; then
    cargo build --release --bin brims
    BRIMS_BIN=target/release/brims
fi
brims=$BRIMS_BIN

# 1. The grid.
$brims sweep configs/sweeps/ablation-pong-v1.toml --out "$out/grid" --jobs 2 --quiet

# 2. Lesions (30 episodes per condition, the same seeds intact and lesioned) and probes (30
# episodes, 5 folds by episode) of every run's final checkpoint.
for run in "$out"/grid/runs/*/; do
    name=$(basename "$run")
    [ -d "$out/lesions/$name" ] || $brims lesion "$run" --episodes 30 --out "$out/lesions/$name"
    [ -d "$out/probes/$name" ] || $brims probe "$run" --episodes 30 --out "$out/probes/$name"
done

# 3. The page: data files, report and figures into docs/results/ablation-pong-v1/.
python3 docs/results/ablation-pong-v1/publish.py --from "$out" --brims "$brims"
