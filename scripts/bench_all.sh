#!/usr/bin/env bash
# The benches behind docs/benchmarks.md, each writing its JSON into one folder, then the page
# regenerated from every folder under docs/benchmarks-data/:
#
#   BRIMS_ANCHOR_PYTHON=.venv-anchors/bin/python bash scripts/bench_all.sh [BIN]
#
# BIN defaults to target/release/brims (build it first). The anchors' virtualenv comes from
# scripts/anchors-venv.sh; without it the anchors are skipped and the JSON says why. Run it on a
# quiet machine: pause training runs first (kill -STOP), as each ratio is only as good as the
# machine was quiet while both sides ran. Each bench runs twice, as issue 26 asks ("twice in a
# row"), except the 5-iteration CleanRL runs of the BRIMs config, which has no anchor.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/brims}
commit=$(git rev-parse --short=7 HEAD)
out=docs/benchmarks-data/$(date -u +%Y%m%d)-$commit
mkdir -p "$out"
for i in 1 2; do
  "$BIN" bench env --game Breakout --envs 16 --threads 2 --seconds 10 --json "$out/env$i.json"
  "$BIN" bench cnn --batch 256 --json "$out/cnn$i.json"
  "$BIN" bench train --config configs/breakout_lstm.toml --seconds 60 --cleanrl-iterations 5 \
    --cleanrl-threads 0 --cleanrl-threads 1 --json "$out/train$i.json"
  "$BIN" bench train --config configs/breakout_brims.toml --seconds 60 --json "$out/train_brims$i.json"
  "$BIN" bench core --core lstm --json "$out/core_lstm$i.json"
  "$BIN" bench core --core brims --json "$out/core_brims$i.json"
done
python3 scripts/benchmarks_md.py docs/benchmarks-data/*/*.json --out docs/benchmarks.md
echo "wrote $out and docs/benchmarks.md"
