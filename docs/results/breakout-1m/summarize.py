#!/usr/bin/env python3
"""Writes docs/results/breakout-1m/README.md (and one CSV per run) from the run directories
that run.sh made. Standard library only; the numbers come from the runs' own files:
summary.json, returns.csv, run.json and the TensorBoard event files.

    python3 docs/results/breakout-1m/summarize.py runs/breakout-1m
"""
import csv, glob, json, os, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORES = ["lstm", "rims", "brims"]
BUDGET_STEPS = 250_000


def varint(b, i):
    r = s = 0
    while True:
        c = b[i]; i += 1; r |= (c & 0x7F) << s; s += 7
        if c < 0x80:
            return r, i


def fields(b):
    i = 0
    while i < len(b):
        k, i = varint(b, i); f, w = k >> 3, k & 7
        if w == 0: v, i = varint(b, i)
        elif w == 1: v = b[i:i + 8]; i += 8
        elif w == 5: v = b[i:i + 4]; i += 4
        elif w == 2: n, i = varint(b, i); v = b[i:i + n]; i += n
        else: raise ValueError(w)
        yield f, w, v


def scalars(run, tag):
    """(step, value) of a scalar tag, from every event file of the run, in step order."""
    out = {}
    for path in sorted(glob.glob(os.path.join(run, "events.out.tfevents.*"))):
        b = open(path, "rb").read(); i = 0
        while i + 12 <= len(b):
            n = struct.unpack("<Q", b[i:i + 8])[0]; data = b[i + 12:i + 12 + n]; i += 12 + n + 4
            step = 0; vals = []
            for f, w, v in fields(data):
                if f == 2: step = v
                if f == 5:
                    for f2, _, v2 in fields(v):
                        if f2 != 1: continue
                        t = val = None
                        for f3, w3, v3 in fields(v2):
                            if f3 == 1: t = v3.decode()
                            if f3 == 2 and w3 == 5: val = struct.unpack("<f", v3)[0]
                        if t == tag and val is not None: vals.append(val)
            for v in vals: out[step] = v
    return sorted(out.items())


def main(out_dir):
    rows = {}
    os.makedirs(os.path.join(HERE, "runs"), exist_ok=True)
    for core in CORES:
        for seed in (1, 2, 3):
            run = os.path.join(out_dir, f"{core}-s{seed}")
            summary_path = os.path.join(run, "summary.json")
            if not os.path.exists(summary_path):
                rows[(core, seed)] = None
                continue
            summary = json.load(open(summary_path))
            meta = json.load(open(os.path.join(run, "run.json")))
            episodes = list(csv.DictReader(open(os.path.join(run, "returns.csv"))))
            with open(os.path.join(HERE, "runs", f"{core}-s{seed}.csv"), "w", newline="") as f:
                w = csv.writer(f); w.writerow(["frames", "episodic_return"])
                for e in episodes: w.writerow([e["frames"], e["episodic_return"]])
            ev = scalars(run, "losses/explained_variance")
            ev_cross = next((s for s, v in ev if v > 0.5), None)
            mid = [v for s, v in ev if 100_000 <= s < 150_000]
            ev_mid = sum(mid) / len(mid) if mid else float("nan")
            windows = []
            for k in range(0, BUDGET_STEPS, 25_000):
                xs = [float(e["episodic_return"]) for e in episodes if k <= int(e["global_step"]) < k + 25_000]
                windows.append(sum(xs) / len(xs) if xs else float("nan"))
            rows[(core, seed)] = dict(
                finished=not summary["interrupted"] and summary["frames"] >= 4 * BUDGET_STEPS,
                last20=summary["mean_return_last_20"], sps=summary["sps"],
                ev_cross=ev_cross, ev_mid=ev_mid, windows=windows, rev=(meta.get("git_revision") or "?")[:7],
                params=summary["param_count"])
    lines = ["# Breakout, 1M frames: LSTM vs RIMs vs BRIMs, 3 seeds", "",
             "The check of issue \"BRIMs-PPO does not learn Breakout\": each core trained for 250k agent "
             "steps (1M frames), CleanRL's v4 settings (no sticky actions; the other Atari settings as in "
             "configs/breakout_*.toml), the learning rate annealed over that budget, seeds 1-3. Made by "
             "`bash docs/results/breakout-1m/run.sh OUT` then `python3 docs/results/breakout-1m/summarize.py OUT`; "
             "every number below is read from the runs' files. `runs/*.csv` hold each run's episodes "
             "(frames, raw return).", "",
             "| core | seed | last-20 return | explained variance first > 0.5 at step | mean explained variance, steps 100k–150k | steps/s | parameters | commit |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    means = {}
    for core in CORES:
        vals = []
        for seed in (1, 2, 3):
            r = rows[(core, seed)]
            if r is None or not r["finished"]:
                lines.append(f"| {core} | {seed} | (not finished) | | | | | |")
                continue
            vals.append(r["last20"])
            lines.append(f"| {core} | {seed} | {r['last20']:.2f} | {r['ev_cross'] if r['ev_cross'] is not None else 'never'} "
                         f"| {r['ev_mid']:.2f} | {r['sps']:.0f} | {r['params']:,} | {r['rev']} |")
        means[core] = (sum(vals) / len(vals), len(vals)) if vals else (float("nan"), 0)
    lines += ["", "| core | seeds finished | mean last-20 return | ÷ LSTM's |", "|---|---:|---:|---:|"]
    for core in CORES:
        m, n = means[core]
        ratio = m / means["lstm"][0] if means["lstm"][1] else float("nan")
        lines.append(f"| {core} | {n} | {m:.2f} | {ratio:.2f} |")
    lines += ["", "Mean return per 25k-step window (seeds averaged):", ""]
    for core in CORES:
        ws = [rows[(core, s)]["windows"] for s in (1, 2, 3) if rows[(core, s)] and rows[(core, s)]["finished"]]
        if ws:
            avg = [sum(w[i] for w in ws) / len(ws) for i in range(len(ws[0]))]
            lines.append(f"- {core}: " + " ".join(f"{x:.1f}" for x in avg))
    lines += ["", "Steps/s differ with what else ran on the 2-core machine (two runs at a time, plus "
              "builds): they are not a speed comparison. The commit column is run.json's "
              "`git_revision`: the checkout's HEAD when the run started, which need not be the source of "
              "the binary that ran it (target/release was rebuilt while this grid ran). Between these revisions the "
              "training computation did not change: telemetry, tooling, resume handling, and a "
              "restructuring of the sampler and the BRIMs kernel whose outputs and gradients are "
              "bit-identical."]
    analyses = sorted(d for d in os.listdir(HERE) if d.startswith("analysis-"))
    if analyses:
        lines += ["", "Module dynamics of trained agents (`brims analyze OUT/<run> --episodes 10 --out "
                  "docs/results/breakout-1m/analysis-<run>`): " + ", ".join(f"[{d}]({d}/analysis.md)" for d in analyses) + "."]
    open(os.path.join(HERE, "README.md"), "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/breakout-1m")
