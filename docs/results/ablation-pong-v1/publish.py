#!/usr/bin/env python3
"""Writes docs/results/ablation-pong-v1/ (this page, report/ and its figures) from the files the
repository holds: runs/<id>.csv (each run's episodes), runs/runs.json (the sweep's spec and each
run's steps/s, parameters, provenance), lesions/<id>.json and probes/<id>.json (what `brims
lesion` and `brims probe` wrote for the run's final checkpoint).

    python3 docs/results/ablation-pong-v1/publish.py               # redraw from the repository
    python3 docs/results/ablation-pong-v1/publish.py --from OUT    # OUT: run.sh's output folder

With --from, it first rewrites those files from OUT/grid (the sweep), OUT/lesions and OUT/probes.
The report and its learning curves are drawn by `brims sweep report --from-csv` (the Rust plots,
with the project's one palette of core colours and bootstrap bands), never here. Standard
library only. See run.sh for the whole reproduction.
"""
import argparse, csv, importlib.util, json, os, random, shutil, statistics, subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
# atari-v1's publish.py holds the one reader of a run directory (and its provenance line).
_spec = importlib.util.spec_from_file_location(
    "atari_v1_publish", os.path.join(HERE, "..", "atari-v1", "publish.py"))
_atari_v1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_atari_v1)
built_from, last20, read_run = _atari_v1.built_from, _atari_v1.last20, _atari_v1.read_run
write_episodes_csv = _atari_v1.write_episodes_csv

# The grid's cores, in the order the page lists them: the two anchors first.
CORES = ["brims", "lstm", "brims_no_top_down", "brims_dense", "brims_one_module", "lstm_matched"]
WHAT = {
    "brims": "BRIMs as in atari-v1 (2 layers, top-down, 4 of 8 and 2 of 4 modules active)",
    "lstm": "CleanRL's LSTM(128), as in atari-v1",
    "brims_no_top_down": "BRIMs without the top-down path",
    "brims_dense": "BRIMs with every module active (no sparsity)",
    "brims_one_module": "BRIMs with one module per layer (no modularity)",
    "lstm_matched": "LSTM(272) with input norm: BRIMs' core size and what the Atari config adds",
}
BOOTSTRAP = 2000
RNG_SEED = 0


def bootstrap_mean(values, rng):
    """The 95% percentile bootstrap interval of the mean of `values` (resampling them)."""
    means = sorted(statistics.mean(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP))
    return means[int(0.025 * BOOTSTRAP)], means[int(0.975 * BOOTSTRAP) - 1]


def p_improvement(xs, ys):
    """P(X > Y): the chance that a run of X beats a run of Y (ties count half), as rliable's
    probability of improvement on one task."""
    wins = sum((x > y) + 0.5 * (x == y) for x in xs for y in ys)
    return wins / (len(xs) * len(ys))


def p_improvement_ci(xs, ys, rng):
    """P(X > Y) with its 95% bootstrap interval, resampling each side's seeds independently
    (a stratified bootstrap: the strata are the two configs)."""
    ps = sorted(p_improvement(rng.choices(xs, k=len(xs)), rng.choices(ys, k=len(ys)))
                for _ in range(BOOTSTRAP))
    return p_improvement(xs, ys), (ps[int(0.025 * BOOTSTRAP)], ps[int(0.975 * BOOTSTRAP) - 1])


def collect(out):
    """Rewrites runs/, lesions/ and probes/ from run.sh's output folder `out`."""
    grid = os.path.join(out, "grid")
    spec = json.load(open(os.path.join(grid, "sweep.json")))
    runs_dir = os.path.join(HERE, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    facts = []
    for planned in spec["runs"]:
        run = os.path.join(grid, "runs", planned["id"])
        r = read_run(run) if os.path.isdir(run) else None
        if not write_episodes_csv(os.path.join(runs_dir, f"{planned['id']}.csv"), r):
            # Unfinished: listed without a CSV, so the page and the report can name it.
            facts.append(dict(id=planned["id"], game=planned["game"], config=planned["config"],
                              seed=planned["seed"], total_frames=planned["total_frames"],
                              frames=None, sps=None, param_count=None, rev=None, dirty=None,
                              canary_max=None))
            continue
        facts.append(dict(id=planned["id"], game=planned["game"], config=planned["config"],
                          seed=planned["seed"], total_frames=planned["total_frames"],
                          frames=r["frames"], sps=r["sps"], param_count=r["params"],
                          rev=r["rev"], dirty=r["dirty"],
                          # NaN (no canary logged) is not JSON.
                          canary_max=r["canary_max"] if r["canary_max"] == r["canary_max"] else None))
        for kind, name in (("lesions", "lesions.json"), ("probes", "probes.json")):
            src = os.path.join(out, kind, planned["id"], name)
            if os.path.exists(src):
                os.makedirs(os.path.join(HERE, kind), exist_ok=True)
                shutil.copyfile(src, os.path.join(HERE, kind, f"{planned['id']}.json"))
    json.dump(dict(note="Written by publish.py from the sweep's run directories.",
                   name=spec["name"], configs=spec["configs"], seeds=spec["seeds"],
                   total_frames=spec["total_frames"], overrides=spec["overrides"], runs=facts),
              open(os.path.join(runs_dir, "runs.json"), "w"), indent=1)


def returns_table(finished, seeds, rng):
    """The final-return table: per seed, mean, 95% interval, P(improvement) vs BRIMs and LSTM."""
    lines = ["| core | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean [95% interval] | P(> BRIMs) | P(> LSTM) |",
             "|---|" + "---:|" * len(seeds) + "---:|---:|---:|"]
    finals = {c: [finished[(c, s)]["last20"] for s in seeds if (c, s) in finished] for c in CORES}
    for core in CORES:
        xs = finals[core]
        if not xs:
            continue
        cells = [f"{finished[(core, s)]['last20']:.2f}" if (core, s) in finished else "–"
                 for s in seeds]
        lo, hi = bootstrap_mean(xs, rng)
        vs = []
        for anchor in ("brims", "lstm"):
            ys = finals[anchor]
            if core == anchor or not ys:
                vs.append("–")
                continue
            p, (plo, phi) = p_improvement_ci(xs, ys, rng)
            vs.append(f"{p:.2f} [{plo:.2f}, {phi:.2f}]")
        lines.append(f"| {core} | " + " | ".join(cells)
                     + f" | {statistics.mean(xs):.2f} [{lo:.2f}, {hi:.2f}] | " + " | ".join(vs) + " |")
    return lines


def lesion_table(lesions):
    """Per core and condition: the score change (lesioned − intact) of each seed's run, with the
    run's own verdict, and their mean."""
    conditions = []
    for doc in lesions.values():
        for row in doc["rows"]:
            if row["condition"] not in conditions and row["condition"] != "intact":
                conditions.append(row["condition"])
    lines = ["| core | condition | change per seed (verdict) | mean change |", "|---|---|---|---:|"]
    for core in CORES:
        runs = sorted((seed, doc) for (c, seed), doc in lesions.items() if c == core)
        for cond in conditions:
            changes = []
            for seed, doc in runs:
                row = next((r for r in doc["rows"] if r["condition"] == cond), None)
                if row:
                    changes.append((seed, row["change"], row["verdict"]))
            if not changes:
                continue
            cells = "; ".join(f"s{s}: {c:+.2f} ({v})" for s, c, v in changes)
            mean = statistics.mean(c for _, c, _ in changes)
            lines.append(f"| {core} | {cond} | {cells} | {mean:+.2f} |")
    return lines


def probe_table(probes):
    """Per core, target and representation: each seed's cross-validated score and their mean."""
    lines = ["| core | target | representation | score | per seed | mean |",
             "|---|---|---|---|---|---:|"]
    for core in CORES:
        runs = sorted((seed, doc) for (c, seed), doc in probes.items() if c == core)
        keys = []
        for _, doc in runs:
            for cell in doc["cells"]:
                key = (cell["target"], cell["representation"], cell["score"])
                if key not in keys:
                    keys.append(key)
        for target, rep, score in keys:
            values = []
            for seed, doc in runs:
                for cell in doc["cells"]:
                    if (cell["target"], cell["representation"], cell["score"]) == (target, rep, score):
                        mean = cell["cv"].get("mean") if isinstance(cell["cv"], dict) else None
                        if mean is not None:
                            values.append((seed, mean))
            if values:
                cells = ", ".join(f"s{s}: {v:.2f}" for s, v in values)
                avg = statistics.mean(v for _, v in values)
                lines.append(f"| {core} | {target} | {rep} | {score} | {cells} | {avg:.2f} |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="source", help="run.sh's output folder: rewrite the data first")
    ap.add_argument("--brims", default=os.path.join(HERE, "..", "..", "..", "target", "release",
                                                   "brims"),
                    help="the brims binary that draws the report (default: target/release/brims)")
    args = ap.parse_args()
    if args.source:
        collect(args.source)
    published = json.load(open(os.path.join(HERE, "runs", "runs.json")))
    finished, unfinished = {}, []
    for f in published["runs"]:
        path = os.path.join(HERE, "runs", f"{f['id']}.csv")
        if f.get("frames") is None or not os.path.exists(path):
            unfinished.append(f["id"])
            continue
        returns = [float(r["episodic_return"]) for r in csv.DictReader(open(path))]
        finished[(f["config"], f["seed"])] = dict(last20=last20(returns), **f)
    if finished:
        subprocess.run([args.brims, "sweep", "report", "--from-csv", HERE], check=True,
                       stdout=subprocess.DEVNULL)

    def studies(kind):
        found = {}
        for f in published["runs"]:
            path = os.path.join(HERE, kind, f"{f['id']}.json")
            if os.path.exists(path):
                found[(f["config"], f["seed"])] = json.load(open(path))
        return found

    rng = random.Random(RNG_SEED)
    seeds = published["seeds"]
    lines = [
        "# Why BRIMs learns Pong faster: ablations on fresh seeds, lesions and probes",
        "",
        f"PPO on Pong, {published['total_frames'] // 4:,} agent steps "
        f"({published['total_frames']:,} frames) per run, the learning rate annealed over that "
        f"budget, seeds {', '.join(map(str, seeds))} (none of them looked at before), every run "
        "from one binary. The cores:",
        "",
    ]
    lines += [f"- `{c}` (configs/pong_{c}.toml): {WHAT[c]}" for c in CORES]
    lines += ["", "Reproduce with `bash docs/results/ablation-pong-v1/run.sh OUT`; this page is "
              "written by `publish.py --from OUT` from the runs' files, and "
              "`python3 docs/results/ablation-pong-v1/publish.py` redraws it from the repository.",
              ""]
    if finished:
        lines += ["Built from commit(s): " + built_from(finished.values()) + ".", ""]
    if unfinished:
        lines += [f"**Not finished yet** ({len(unfinished)} of {len(published['runs'])} runs, "
                  "left out below): " + ", ".join(unfinished) + ".", ""]
    lines += ["## Final return (mean of each run's last 20 episodes)", "",
              "Mean over seeds with its 95% percentile bootstrap interval (resampling seeds; "
              f"{BOOTSTRAP} resamples). P(> BRIMs) and P(> LSTM): the probability that a run of "
              "the row's core ends above a run of the anchor, with its 95% stratified bootstrap "
              "interval (each side's seeds resampled on their own). With 3 seeds a side these "
              "intervals are wide: read them as such.", ""]
    lines += returns_table(finished, seeds, rng) if finished else ["(no run has finished)"]
    lines += ["", "Learning curves (mean across seeds, 95% bootstrap band, the project's core "
              "colours) and the AUC table: [report/report.md](report/report.md).", ""]
    lesions, probes = studies("lesions"), studies("probes")
    lines += ["## Test-time lesions of each run's final checkpoint", "",
              "Score change = lesioned − intact on the same episodes (env seeds), averaged over "
              "episodes; each run's verdict is its paired 95% bootstrap interval over episodes "
              "(`brims lesion`; lesions/<run>.json hold every episode).", ""]
    lines += lesion_table(lesions) if lesions else ["(no lesion study yet)"]
    lines += ["", "## Linear probes of each layer's state", "",
              "Ridge probes (λ = 10), cross-validated by episode (`brims probe`; "
              "probes/<run>.json): reactive targets (the ball's next position, a point conceded "
              "within a few steps) and long-horizon ones (the discounted return, points won over "
              "the next 200 steps), read from the CNN features and from each layer's state. "
              "A score is R² (continuous targets) or AUC (events).", ""]
    lines += probe_table(probes) if probes else ["(no probe study yet)"]
    open(os.path.join(HERE, "README.md"), "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
