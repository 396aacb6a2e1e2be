#!/usr/bin/env python3
"""Writes docs/benchmarks.md from the JSON of `brims bench …` runs (standard library only).

Usage (from the repository root):

    brims bench env --seconds 10 --json bench-env.json      # and cnn, train, core …
    python3 scripts/benchmarks_md.py bench-*.json [--out docs/benchmarks.md]

Each file holds one bench's JSON object: what `--json PATH` writes, or a saved stdout whose
last line is the object. Every figure in the page comes from these files, with the command,
the anchor's version (or why it was skipped), the machine, the date and the commit each JSON
records; nothing in the page is typed by hand. One table per bench, rows by date.

Tests: python3 -m unittest discover -s scripts -p 'test_*.py'
"""

import argparse
import json
import os
import sys

# Bench order in the page, with each table's heading and what its ratio column means.
BENCHES = {
    "env": (
        "Environment pool (`brims bench env`)",
        "ours / EnvPool, frames/s counted as agent steps × frame skip, same rounds "
        "(target ≥ 1.4×)",
    ),
    "cnn": (
        "Nature CNN forward + backward (`brims bench cnn`)",
        "our time / torch's time, fastest pass, same rounds (target ≤ 1)",
    ),
    "train": (
        "Training (`brims bench train`)",
        "our agent steps/s / CleanRL's (its own SPS, start-up excluded; "
        "the fastest of its thread settings) (target ≥ 3×)",
    ),
    "core": ("Recurrent cores (`brims bench core`)", "no anchor"),
}


def load(path):
    """The bench object in `path`: the whole file as JSON, else its last non-empty line."""
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"{path}: empty")
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: neither the file nor its last line is JSON ({e})")


def cell(text):
    """`text` made safe for one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def num(value, digits=0):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def command(run):
    """The command line, `brims …`, without `--json PATH` (where the JSON went)."""
    args = list(run.get("command") or [])
    if not args:
        return "—"
    out = ["brims"]
    skip = False
    for arg in args[1:]:
        if skip:
            skip = False
            continue
        if arg == "--json":
            skip = True
            continue
        if arg.startswith("--json="):
            continue
        out.append(arg)
    return "`" + " ".join(out) + "`"


def machine(run):
    m = run.get("machine") or {}
    cores = m.get("cores", "?")
    model = m.get("cpu_model") or "unknown CPU"
    simd = m.get("simd") or []
    text = f"{cores} cores, {model}"
    return text + (f" ({', '.join(simd)})" if simd else "")


def commit(run):
    c = run.get("git_commit")
    if not c:
        return "—"
    return f"`{c[:10]}`" + (" (uncommitted changes)" if run.get("git_dirty") else "")


def anchor(run, figure):
    """The anchor's name and version with its figure, or why it was skipped."""
    a = run.get("anchor") or {}
    if a.get("skipped") is not None:
        name = a.get("name")
        return f"{name}: skipped ({a['skipped']})" if name else "—"
    label = f"{a.get('name', '?')} {a.get('version', '?')}"
    return f"{label}: {figure}"


def ratio(value, suffix="×"):
    return "—" if value is None else f"{value:.2f}{suffix}"


def peak_share(run):
    """", X GFLOP/s = Y% of the measured FP32 peak" where the run measured both, else ""."""
    share, gflops = run.get("share_of_fp32_peak"), run.get("gflops")
    if share is None or gflops is None:
        return ""
    peak = run.get("peak") or {}
    return (
        f"; {num(gflops, 1)} GFLOP/s = {num(100 * share)}% of the FP32 peak "
        f"({num(peak.get('fp32_gflops'))} GFLOP/s, {peak.get('fp32_isa', '?')}, measured in the run)"
    )


def row(run):
    """(ours, anchor, ratio) cells of one run."""
    bench = run.get("bench")
    if bench == "env":
        ours = (
            f"{num(run.get('frames_per_sec'))} frames/s "
            f"({run.get('game', '?')}, {run.get('envs')} envs, {run.get('threads')} threads)"
        )
        free = run.get("ratio_emulated_to_unsynchronised_threads")
        if free is not None:
            ours += f"; {num(100 * free)}% of free-running threads (target ≥ 95%)"
        a = run.get("anchor") or {}
        theirs = (
            f"{num(run.get('envpool_frames_per_sec'))} frames/s (async, {a.get('num_envs')} envs, "
            f"batch {a.get('batch_size')}, {a.get('num_threads')} threads)"
        )
        return ours, anchor(run, theirs), ratio(run.get("ratio_to_envpool"))
    if bench == "cnn":
        ours = f"{num(run.get('fwd_bwd_ms'), 1)} ms (batch {run.get('batch')}, {run.get('threads')} threads{peak_share(run)})"
        a = run.get("anchor") or {}
        theirs = f"{num(run.get('torch_fwd_bwd_ms'), 1)} ms ({a.get('threads')} threads)"
        return ours, anchor(run, theirs), ratio(run.get("fastconv_over_torch"), "")
    if bench == "train":
        flops = run.get("flops_per_step")
        per_step = f"; {num(flops / 1e6, 1)} MFLOP per step" if flops else ""
        ours = f"{num(run.get('sps'))} steps/s ({run.get('config', '?')}{per_step}{peak_share(run)})"
        a = run.get("anchor") or {}
        runs = run.get("cleanrl_runs") or []
        per_threads = ", ".join(f"{num(r.get('sps'))} at {r.get('threads')} threads" for r in runs)
        theirs = f"{num(run.get('cleanrl_sps'))} steps/s ({per_threads}; torch {a.get('torch', '?')})"
        return ours, anchor(run, theirs), ratio(run.get("ratio_to_cleanrl"))
    if bench == "core":
        ours = (
            f"{run.get('core')}: step {num(run.get('step_fwd_ms'), 2)} ms, "
            f"128-step fwd+bwd {num(run.get('seq_fwd_bwd_ms'), 1)} ms"
        )
        return ours, anchor(run, ""), "—"
    return json.dumps({k: v for k, v in run.items() if isinstance(v, (int, float))}), anchor(run, ""), "—"


def render(runs, sources):
    """The Markdown page for `runs` (bench objects) read from `sources` (their file names)."""
    out = [
        "# Benchmarks",
        "",
        "Generated by `scripts/benchmarks_md.py` from the JSON that `brims bench … --json PATH` "
        "wrote; do not edit by hand. Each row is one run: our figure, the anchor measured in the "
        "same run (its version, or why it was skipped), their ratio, and what produced them. "
        "Figures from different rows were measured at different times and are not comparable; "
        "only a ratio within one row is.",
        "",
        "Sources: " + ", ".join(f"`{os.path.basename(s)}`" for s in sources) + ".",
    ]
    by_bench = {}
    for run in runs:
        by_bench.setdefault(run.get("bench", "other"), []).append(run)
    order = [b for b in BENCHES if b in by_bench] + sorted(b for b in by_bench if b not in BENCHES)
    for bench in order:
        title, meaning = BENCHES.get(bench, (f"`{bench}`", "—"))
        out += [
            "",
            f"## {title}",
            "",
            f"Ratio: {meaning}.",
            "",
            "| date (UTC) | ours | anchor, same run | ratio | command | machine | commit |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in sorted(by_bench[bench], key=lambda r: r.get("date") or ""):
            ours, theirs, r = row(run)
            cells = [run.get("date", "—"), ours, theirs, r, command(run), machine(run), commit(run)]
            out.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("json", nargs="+", help="bench JSON files")
    parser.add_argument("--out", default="docs/benchmarks.md", help="the page to write")
    args = parser.parse_args(argv)
    try:
        runs = [load(p) for p in args.json]
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    page = render(runs, args.json)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(page)
    print(f"wrote {args.out}: {len(runs)} runs")


if __name__ == "__main__":
    main()
