#!/usr/bin/env bash
# Creates the Python virtualenv that holds the benches' anchors (issue 16), from PyPI only:
#
#   bash scripts/anchors-venv.sh [DIR]        # DIR defaults to .venv-anchors (git-ignored)
#
# - torch, for `brims bench cnn` (and CleanRL). PyPI's Linux torch wheel is the CUDA build and
#   pulls NVIDIA's CUDA libraries (a few GB); the benches use it on the CPU only. The CPU-only
#   wheel lives on PyTorch's own index, which this script does not use.
# - envpool, for `brims bench env` (it ships the Atari ROMs).
# - CleanRL's ppo_atari_lstm.py, for `brims bench train --cleanrl-iterations N`: taken from the
#   `cleanrl` package on PyPI (its last release, 1.2.0) into DIR/share/brims-anchors/, never into
#   the repository. That script is written for `gym` 0.23.1 (the old API: reset() -> obs,
#   step() -> 4 values) and stable-baselines3 1.2.0's Atari wrappers, which CleanRL 1.2.0 pins;
#   the ale-py CleanRL pinned for it (0.7.4) has no wheel for this Python and no ROMs, so the
#   bench registers `<Game>NoFrameskip-v4` with gym itself over ale-py's ALEInterface (see
#   agents/brims-agent/src/bench/anchors/cleanrl_runner.py).
# - gymnasium and ale-py, as envpool and the runner need them; numpy < 2, as gym 0.23.1 and
#   stable-baselines3 1.2.0 need.
#
# Python 3.11 exactly: envpool's wheel needs >= 3.11 and CleanRL's script imports distutils,
# which Python 3.12 removed. Set PYTHON=/path/to/python3.11 if `python3` is another version.
#
# Idempotent: on a finished virtualenv it only checks the pinned versions (and exits non-zero,
# saying what differs, if they are not there). An interrupted install is resumed.
set -euo pipefail

VENV=${1:-.venv-anchors}
PYTHON=${PYTHON:-python3}
# Pinned versions: the set checked to install together from PyPI on Python 3.11 (x86_64 Linux).
PINS=(
  "torch==2.15.0"
  "envpool==1.2.5"
  "gymnasium==1.2.2"
  "ale-py==0.12.1"
  "numpy==1.26.4"
  "gym==0.23.1"
  "stable-baselines3==1.2.0"
  "opencv-python-headless==4.11.0.86"
  "tensorboard==2.20.0"
)
CLEANRL_VERSION=1.2.0
# sha256 of cleanrl-1.2.0-py3-none-any.whl as PyPI serves it.
CLEANRL_SHA256=002f6dac6cd0efb5889cd9096a252da1b4bc98a8f52ccb1f47a7215c18b30369
SHARE="$VENV/share/brims-anchors"
DONE="$VENV/.brims-anchors-complete"

usage() {
  local py
  py="$(cd "$VENV" && pwd)/bin/python"
  cat <<EOF

Anchors ready in $VENV. Point the benches at it with --python or BRIMS_ANCHOR_PYTHON:

  export BRIMS_ANCHOR_PYTHON=$py
  brims bench env --game Breakout --envs 16 --threads 2 --seconds 10     # + EnvPool
  brims bench cnn --batch 256                                            # + torch
  brims bench train --config configs/breakout_lstm.toml --seconds 60 --cleanrl-iterations 5
EOF
}

# Checks that every pin is installed, the anchors import, and CleanRL's script is in place.
check() {
  "$VENV/bin/python" - "$SHARE/ppo_atari_lstm.py" "${PINS[@]}" <<'EOF'
import contextlib
import importlib.metadata as md
import io
import sys

script, pins = sys.argv[1], sys.argv[2:]
bad = []
for pin in pins:
    name, want = pin.split("==")
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name}: want {want}, have {have}")
try:
    # gym 0.23.1 prints a notice on import (gym_notices); it says nothing about this check.
    with contextlib.redirect_stderr(io.StringIO()):
        import envpool, torch, gym, gymnasium, ale_py  # noqa: F401
        from stable_baselines3.common import atari_wrappers  # noqa: F401
except Exception as e:  # any import failure is reported, not raised
    bad.append(f"import: {type(e).__name__}: {e}")
try:
    open(script).close()
except OSError as e:
    bad.append(f"CleanRL's script: {e}")
for line in bad:
    print("  " + line)
sys.exit(1 if bad else 0)
EOF
}

if [[ -f "$DONE" ]]; then
  echo "checking the anchors in $VENV (already installed)"
  if check; then
    echo "all pinned versions present"
    usage
    exit 0
  fi
  echo "$VENV differs from the pins (above); remove it and run this script again" >&2
  exit 1
fi

version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "not runnable")
if [[ "$version" != "3.11" ]]; then
  echo "$PYTHON: Python $version; the anchors need 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

start=$(date +%s)
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "${PINS[@]}"

# CleanRL's script, from its PyPI wheel (Requires-Python < 3.11 is about the whole package and
# its pins, none of which is installed: only the one file is taken).
mkdir -p "$SHARE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/python" -m pip download --disable-pip-version-check --quiet --no-deps \
  --ignore-requires-python -d "$tmp" "cleanrl==$CLEANRL_VERSION"
"$VENV/bin/python" - "$tmp"/cleanrl-"$CLEANRL_VERSION"-py3-none-any.whl "$CLEANRL_SHA256" "$SHARE" <<'EOF'
import hashlib
import sys
import zipfile

wheel, sha, share = sys.argv[1:]
got = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
if got != sha:
    sys.exit(f"{wheel}: sha256 {got}, expected {sha}")
with zipfile.ZipFile(wheel) as z:
    data = z.read("cleanrl/ppo_atari_lstm.py")
with open(f"{share}/ppo_atari_lstm.py", "wb") as f:
    f.write(data)
with open(f"{share}/SOURCE", "w") as f:
    f.write(f"cleanrl/ppo_atari_lstm.py from cleanrl-{wheel.rsplit('cleanrl-', 1)[1]} (sha256 {sha})\n")
EOF

if ! check; then
  echo "the install finished but the check above failed" >&2
  exit 1
fi
# Everything installed, for the record (the pins above are the top-level packages).
"$VENV/bin/python" -m pip freeze --disable-pip-version-check > "$SHARE/pip-freeze.txt"
touch "$DONE"
echo "installed in $(( $(date +%s) - start )) s; $(du -sh "$VENV" | cut -f1) on disk"
usage
