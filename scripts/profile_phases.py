#!/usr/bin/env python3
"""Where training's time goes: a phase table from a `perf record --call-graph fp` profile.

Usage:
  # a binary with frame pointers and line tables (a separate target dir keeps the normal build):
  RUSTFLAGS="-C force-frame-pointers=yes" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    CARGO_TARGET_DIR=target-prof cargo build --release --bin brims
  perf record -e cpu-clock -F 999 --call-graph fp -o lstm.data \
    target-prof/release/brims bench train --config configs/breakout_lstm.toml --seconds 25
  python3 scripts/profile_phases.py lstm.data [brims.data ...] [--markdown]

Each sample (a CPU's time slice, every thread of the process) goes to the first phase below
whose pattern occurs in its call stack. Start-up (the peak measurement, network and env
construction) is reported but left out of the shares, as steps/s leaves it out.
"""
import re
import subprocess
import sys
from collections import Counter

# (phase, regex over the joined stack, leaf first). Order matters: the first match wins.
PHASES = [
    ("start-up (not in steps/s)", r"bench::peak|init::orthogonal|makeAveragePalette|ActorCritic>::new|Learner>::new|loadROM|prepare_run|ALEInterface::ALEInterface"),
    ("env: ALE emulation and preprocessing", r"envs_atari|ale::|StellaEnvironment|TIA::|M6502|System::|Cartridge|actors::pool"),
    # fastconv's chunks run on rayon's workers, whose stacks do not say forward or backward.
    ("CNN (fastconv): gemm", r"\A(gemm|[^\n]*gemm_)[^\n]*\n(.*\n)*.*fastconv::"),
    ("CNN (fastconv): im2col, col2im, layout copies", r"fastconv::"),
    ("core backward", r"brims_seq::backward|brims_seq::rows::backward|lstm_seq[^\n]*backward|LstmSeqOp[^\n]*bwd|BrimsSeqOp[^\n]*bwd"),
    ("core forward", r"brims_seq|lstm_seq|LstmSeqOp|BrimsSeqOp"),
    ("rollout: acting (core, heads, sampling)", r"ActorCritic>::act|Sampler[^\n]*collect|act_and_sample"),
    ("Adam", r"ppo::adam|Adam"),
    ("linear layers (fc, heads): candle matmul", r"BackendStorage>::matmul|gemm::gemm"),
    ("idle: candle pool spin-wait", r"BarrierGuard"),
    ("update: autograd, loss, elementwise, copies", r"Tensor>::backward|Learner>::update|ppo::loss|evaluate_sequence|candle_core"),
    ("idle: rayon workers waiting", r"rayon_core::registry|rayon_core::sleep"),
]


def samples(path):
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "comm,tid,ip,sym"],
        capture_output=True, text=True, check=True,
    ).stdout
    # Each sample: a header line "THREAD-NAME TID", then its frames (address, symbol), leaf first.
    thread, stack = "", []
    for line in out.splitlines() + [""]:
        if not line.strip():
            if stack:
                yield thread, stack
            thread, stack = "", []
        elif line.startswith("\t"):
            parts = line.split(None, 1)
            if len(parts) == 2 and re.match(r"^[0-9a-f]+$", parts[0]):
                stack.append(parts[1].rsplit(" (", 1)[0])
        else:
            thread = line.split()[0] if line.split() else ""


def classify(thread, stack):
    # candle's pool worker waits for work in a spin loop inlined into its thread's entry.
    if thread.startswith("candle-bp") and "__rust_begin_short_backtrace" in stack[0]:
        return "idle: candle pool spin-wait"
    joined = "\n".join(stack)
    for phase, pattern in PHASES:
        if re.search(pattern, joined, re.M):
            return phase
    return "other"


def table(path):
    counts = Counter(classify(t, s) for t, s in samples(path))
    startup = counts.pop("start-up (not in steps/s)", 0)
    total = sum(counts.values())
    return counts, total, startup


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    markdown = "--markdown" in sys.argv
    results = {p: table(p) for p in args}
    phases = [p for p, _ in PHASES[1:]] + ["other"]
    if markdown:
        print("| phase | " + " | ".join(results) + " |")
        print("|---|" + "---|" * len(results))
    for phase in phases:
        cells = []
        for counts, total, _ in results.values():
            cells.append(f"{100 * counts.get(phase, 0) / max(total, 1):.1f}%")
        if all(c == "0.0%" for c in cells):
            continue
        if markdown:
            print(f"| {phase} | " + " | ".join(cells) + " |")
        else:
            print(f"{phase:45s} " + " ".join(f"{c:>8s}" for c in cells))
    for path, (_, total, startup) in results.items():
        print(f"{'' if not markdown else '- '}{path}: {total} samples after start-up ({startup} in start-up)")


if __name__ == "__main__":
    main()
