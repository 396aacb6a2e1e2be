#!/usr/bin/env bash
# Breakout, 1M frames (250k agent steps) per run, CleanRL's v4 settings (no sticky actions),
# LSTM vs RIMs vs BRIMs × seeds 1-3: the check of issue "BRIMs-PPO does not learn Breakout".
# Two runs at a time, one core each. Rerunning continues: finished runs are skipped,
# interrupted ones resume from their last checkpoint.
#
#   bash docs/results/breakout-1m/run.sh [OUT_DIR]      (default: runs/breakout-1m)
#   then: python3 docs/results/breakout-1m/summarize.py OUT_DIR > docs/results/breakout-1m/README.md
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=${1:-runs/breakout-1m}
mkdir -p "$out"
cargo build --release --bin brims
run_one() {
    local core=$1 seed=$2 out=$3 dir="$3/$1-s$2"
    if [ -d "$dir" ]; then
        RAYON_NUM_THREADS=1 target/release/brims train --run-dir "$dir" --resume --quiet \
            > "$dir.log" 2>&1 || echo "$dir: failed, see $dir.log" >&2
    else
        RAYON_NUM_THREADS=1 target/release/brims train --config "configs/breakout_$core.toml" \
            --set seed="$seed" --set total_frames=1000000 \
            --set env.atari.repeat_action_probability=0 \
            --set actors.threads=1 --set run.checkpoint_every=10 \
            --run-dir "$dir" --quiet > "$dir.log" 2>&1 || echo "$dir: failed, see $dir.log" >&2
    fi
}
export -f run_one
for seed in 1 2 3; do for core in brims rims lstm; do echo "$core $seed"; done; done |
    xargs -P 2 -L 1 bash -c 'run_one $0 $1 '"$out"
