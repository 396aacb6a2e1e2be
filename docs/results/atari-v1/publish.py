#!/usr/bin/env python3
"""Writes docs/results/atari-v1/ (this page, report/ and its figures) from the files the
repository holds: runs/<id>.csv (each run's episodes), runs/runs.json (the sweep's spec and each
run's steps/s, parameters, provenance) and check.json (the LSTM check against CleanRL).

    python3 docs/results/atari-v1/publish.py                  # redraw from the repository
    python3 docs/results/atari-v1/publish.py --sweep runs/atari-v1 \
        --check runs/breakout-cleanrl-check --cleanrl runs/cleanrl-250k/*/

With --sweep (a finished `brims sweep` of configs/sweeps/atari-v1.toml), --check (the LSTM check
sweep, configs/sweeps/breakout-cleanrl-check.toml) and --cleanrl (CleanRL's own runs), it first
rewrites those files from the runs' files (summary.json, returns.csv, run.json, TensorBoard
events). The report and its figures are drawn by `brims sweep report --from-csv` (the Rust plots,
with their one palette of core colours and bootstrap bands), never here. Standard library only.
See run.sh for the whole reproduction.
"""
import argparse, csv, glob, json, os, statistics, subprocess, sys, tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "breakout-1m"))
from summarize import scalars  # noqa: E402  (the TensorBoard reader, one copy)

CANARY_BOUND = 1e-4
CORES = ["lstm", "rims", "brims"]


def last20(returns):
    tail = returns[-20:]
    return sum(tail) / len(tail) if tail else float("nan")


def range_word(x, values):
    """Whether `x` lies within the range of `values`: "within" or "outside"."""
    return "within" if min(values) <= x <= max(values) else "outside"


def built_from(runs):
    """The commits our runs' binaries were built from, as the page states them."""
    revs = sorted({(r["rev"], r["dirty"]) for r in runs})
    return ", ".join(f"`{rev}`" + (" (tree dirty at build)" if dirty else "") for rev, dirty in revs)


def last20_verdict(ours, theirs):
    """One sentence: both sides' last-20 returns, whether our seed mean lies within CleanRL's
    range, and Welch's t of the difference of the means."""
    mean_ours, mean_theirs = statistics.mean(ours), statistics.mean(theirs)
    line = (f"ours {', '.join(f'{x:.2f}' for x in ours)}, mean {mean_ours:.2f}; CleanRL "
            f"{', '.join(f'{t:.2f}' for t in theirs)}, mean {mean_theirs:.2f} (range "
            f"{min(theirs):.2f}–{max(theirs):.2f}). Our seed mean lies "
            f"{range_word(mean_ours, theirs)} CleanRL's range")
    if len(ours) > 1 and len(theirs) > 1:
        se = (statistics.variance(ours) / len(ours)
              + statistics.variance(theirs) / len(theirs)) ** 0.5
        line += f"; Welch's t of the difference = {(mean_ours - mean_theirs) / se:.2f}"
    return line + "."


def read_run(run):
    """One of our runs: its episodes, summary and provenance, or None if it has not finished."""
    summary_path = os.path.join(run, "summary.json")
    if not os.path.exists(summary_path):
        return None
    summary = json.load(open(summary_path))
    with open(os.path.join(run, "config.toml"), "rb") as f:
        total = tomllib.load(f)["total_frames"]
    if summary["interrupted"] or summary["frames"] < total:
        return None
    meta = json.load(open(os.path.join(run, "run.json")))
    episodes = list(csv.DictReader(open(os.path.join(run, "returns.csv"))))
    canary = [v for _, v in scalars(run, "losses/first_ratio_deviation")]
    return dict(
        episodes=episodes, last20=summary["mean_return_last_20"], sps=summary["sps"],
        step_returns=[(int(e["global_step"]), float(e["episodic_return"])) for e in episodes],
        frames=summary["frames"], wall_h=summary["frames"] / 4 / summary["sps"] / 3600,
        canary_max=max(canary) if canary else float("nan"), updates=len(canary),
        rev=(meta.get("git_revision") or "?")[:7], dirty=meta.get("git_dirty_at_build"),
        params=summary["param_count"])


def read_cleanrl(run):
    """CleanRL's run: its episodes as (agent step, return), their last-20 mean, its agent
    steps, wall seconds and last logged SPS."""
    step_returns = scalars(run, "charts/episodic_return")
    sps = scalars(run, "charts/SPS")
    steps = sps[-1][0] if sps else 0
    # CleanRL logs SPS = global_step / (time since start), so wall time = steps / SPS.
    wall = steps / sps[-1][1] if sps and sps[-1][1] > 0 else float("nan")
    return dict(step_returns=step_returns, last20=last20([v for _, v in step_returns]),
                steps=steps, wall=wall, sps=sps[-1][1] if sps else float("nan"))


def write_episodes_csv(path, run):
    """Writes a finished run's episodes (frames, raw return) to `path`, the CSV that
    `brims sweep report --from-csv` reads; for an unfinished run (`run` None) removes it, so
    the page and the report count the run as not finished. Returns whether the run finished."""
    if run is None:
        if os.path.exists(path):
            os.remove(path)
        return False
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frames", "episodic_return"])
        for e in run["episodes"]:
            w.writerow([e["frames"], e["episodic_return"]])
    return True


def binned_means(episodes, width, total):
    """Mean return of the episodes ending in each `width`-step bin of `[0, total)`, from
    (agent step, return) pairs; NaN for an empty bin."""
    sums, counts = [0.0] * (total // width), [0] * (total // width)
    for step, ret in episodes:
        b = int(step // width)
        if 0 <= b < len(sums):
            sums[b] += ret
            counts[b] += 1
    return [s / c if c else float("nan") for s, c in zip(sums, counts)]


def collect(args):
    """Rewrites runs/<id>.csv, runs/runs.json and check.json from the run directories."""
    runs_dir = os.path.join(HERE, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    spec = json.load(open(os.path.join(args.sweep, "sweep.json")))
    facts = []
    for planned in spec["runs"]:
        run = os.path.join(args.sweep, "runs", planned["id"])
        r = read_run(run) if os.path.isdir(run) else None
        if not write_episodes_csv(os.path.join(runs_dir, f"{planned['id']}.csv"), r):
            continue
        facts.append(dict(id=planned["id"], game=planned["game"], config=planned["config"],
                          seed=planned["seed"], total_frames=planned["total_frames"],
                          frames=r["frames"], sps=r["sps"], param_count=r["params"],
                          rev=r["rev"], dirty=r["dirty"], canary_max=r["canary_max"],
                          updates=r["updates"]))
    canaries = [f["canary_max"] for f in facts if f["canary_max"] == f["canary_max"]]
    doc = dict(note="Written by publish.py from the sweep's run directories.",
               name=spec["name"], configs=spec["configs"], seeds=spec["seeds"],
               total_frames=spec["total_frames"], overrides=spec["overrides"],
               canary_max=max(canaries, default=None),
               updates=sum(f["updates"] for f in facts), runs=facts)
    # Planned but unfinished runs stay listed (without a CSV) so the page can name them.
    finished = {f["id"] for f in facts}
    doc["runs"] += [dict(id=p["id"], game=p["game"], config=p["config"], seed=p["seed"],
                         total_frames=p["total_frames"], frames=None, sps=None, param_count=None,
                         rev=None, dirty=None, canary_max=None, updates=0)
                    for p in spec["runs"] if p["id"] not in finished]
    json.dump(doc, open(os.path.join(runs_dir, "runs.json"), "w"), indent=1)

    width, total = 50_000, 250_000
    ours = []
    for run in sorted(glob.glob(os.path.join(args.check, "runs", "*"))):
        r = read_run(run)
        if r:
            ours.append(dict(id=os.path.basename(run), last20=r["last20"], sps=r["sps"],
                             rev=r["rev"], dirty=r["dirty"],
                             bins=binned_means(r["step_returns"], width, total)))
    cleanrl = []
    for c in args.cleanrl:
        r = read_cleanrl(c)
        cleanrl.append(dict(name=os.path.basename(os.path.normpath(c)),
                            episodes=len(r["step_returns"]), steps=r["steps"],
                            wall_min=r["wall"] / 60, last20=r["last20"], sps=r["sps"],
                            bins=binned_means(r["step_returns"], width, total)))
    json.dump(dict(note="Written by publish.py from the check sweep's run directories and "
                        "CleanRL's runs.", bin_width=width, total_steps=total, ours=ours,
                   cleanrl=cleanrl),
              open(os.path.join(HERE, "check.json"), "w"), indent=1)


def last20_of_csv(path):
    """The mean return of a run's last 20 episodes (summary.json's mean_return_last_20)."""
    return last20([float(row["episodic_return"]) for row in csv.DictReader(open(path))])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", help="a finished sweep directory: rewrite the data files first")
    ap.add_argument("--check", help="the check sweep's directory (with --sweep)")
    ap.add_argument("--cleanrl", nargs="*", default=[])
    ap.add_argument("--brims", default=os.path.join(HERE, "..", "..", "..", "target", "release",
                                                   "brims"),
                    help="the brims binary that draws the report (default: target/release/brims)")
    args = ap.parse_args()
    if args.sweep:
        if not args.check:
            ap.error("--sweep needs --check")
        collect(args)

    # The report and its figures: the Rust report, drawn from the CSVs.
    subprocess.run([args.brims, "sweep", "report", "--from-csv", HERE], check=True,
                   stdout=subprocess.DEVNULL)

    published = json.load(open(os.path.join(HERE, "runs", "runs.json")))
    rows, unfinished = {}, []
    for f in published["runs"]:
        path = os.path.join(HERE, "runs", f"{f['id']}.csv")
        if not os.path.exists(path):
            unfinished.append(f["id"])
            continue
        rows[(f["game"], f["config"], f"s{f['seed']}")] = dict(
            last20=last20_of_csv(path), sps=f["sps"], rev=f["rev"], dirty=f["dirty"],
            wall_h=f["frames"] / 4 / f["sps"] / 3600)
    check = json.load(open(os.path.join(HERE, "check.json")))

    lines = [
        "# LSTM vs RIMs vs BRIMs on Atari: Breakout and Pong, 3 seeds, 1M agent steps",
        "",
        "PPO with CleanRL's `ppo_atari_lstm.py` settings (environment, network, initialisation "
        "and hyperparameters; `configs/breakout_lstm.toml`), and the same PPO with a RIMs core "
        "(one BRIMs layer, `configs/breakout_rims.toml`) and a two-layer BRIMs core "
        "(`configs/breakout_brims.toml`). Each run: 1M agent steps (4M emulator frames), the "
        "learning rate annealed over that budget, seeds 1-3. Reproduce with `bash "
        "docs/results/atari-v1/run.sh OUT` (the commands are in it); this page is written by "
        "`publish.py` from the runs' files as the repository holds them (`runs/`, "
        "`check.json`; `python3 docs/results/atari-v1/publish.py` redraws it).",
        "",
        "Built from commit(s): " + built_from(rows.values()) + ".",
        "",
    ]
    if unfinished:
        lines += [f"**Not finished yet** ({len(unfinished)} runs, left out below): "
                  + ", ".join(unfinished) + ".", ""]
    lines += ["## Final return (mean of each run's last 20 episodes)", "",
              "| game | core | seed 1 | seed 2 | seed 3 | mean | steps/s | wall h per run |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    games = sorted({g for g, _, _ in rows})
    for game in games:
        for core in CORES:
            rs = [rows.get((game, core, f"s{s}")) for s in (1, 2, 3)]
            done = [r for r in rs if r]
            if not done:
                continue
            cells = [f"{r['last20']:.2f}" if r else "–" for r in rs]
            mean = statistics.mean(r["last20"] for r in done)
            lines.append(f"| {game} | {core} | " + " | ".join(cells) + f" | {mean:.2f} | "
                         f"{statistics.mean(r['sps'] for r in done):.0f} | "
                         f"{statistics.mean(r['wall_h'] for r in done):.2f} |")
    total_h = sum(r["wall_h"] for r in rows.values())
    worst = published["canary_max"] if published["canary_max"] is not None else float("nan")
    lines += ["",
              f"Steps/s are whole-run agent steps per second with two runs at a time on a 2-core "
              f"machine (one thread each), so they compare the cores under equal load; "
              f"{total_h:.1f} run-hours in all.",
              "",
              f"The acting-vs-replay canary (`losses/first_ratio_deviation`, |ratio − 1| on the "
              f"first minibatch of every update): largest value over all "
              f"{published['updates']} updates of all runs = {worst:.1e} "
              f"({'within' if worst <= CANARY_BOUND else 'ABOVE'} the bound {CANARY_BOUND:.0e}).",
              "",
              "The aggregate across games (human-normalised IQM, probability of improvement, "
              "performance profiles, sample efficiency; rliable's methods) is the sweep's own "
              "report, drawn from `runs/*.csv` by `brims sweep report --from-csv "
              "docs/results/atari-v1`: [report/report.md](report/report.md). `runs/*.csv` hold "
              "each run's episodes (frames, raw return), `runs/runs.json` each run's steps/s, "
              "parameters and provenance. Its figures colour each core as every figure of the "
              "project does (LSTM blue, RIMs vermillion, BRIMs green), and its intervals are "
              "bootstrap intervals within the game's possible returns (Pong: ±21).",
              ""]

    # The LSTM row against CleanRL at 250k steps.
    cleanrl = [(c["name"], c) for c in check["cleanrl"]]
    width, total = check["bin_width"], check["total_steps"]
    check = [(r["id"], r) for r in check["ours"]]
    lines += ["## Check: the LSTM against CleanRL's `ppo_atari_lstm.py`, Breakout, 250k agent steps", ""]
    if check:
        ours = [r["last20"] for _, r in check]
        lines += ["| run | last-20 return | steps/s |", "|---|---:|---:|"]
        lines += [f"| ours, {rid} | {r['last20']:.2f} | {r['sps']:.0f} |" for rid, r in check]
        for name, c in cleanrl:
            lines.append(f"| CleanRL, {name} ({c['episodes']} episodes, {c['steps']} "
                         f"steps, {c['wall_min']:.0f} min) | {c['last20']:.2f} | {c['sps']:.0f} |")
        lines += ["", "These steps/s are not a speed comparison: the runs shared two cores with "
                  "each other and with other work. The same-run comparison is `brims bench train "
                  "--cleanrl-iterations N` ([docs/benchmarks.md](../../benchmarks.md)). Our runs "
                  "here were built from commit(s): " + built_from(r for _, r in check) + "."]
        if cleanrl:
            theirs = [c["last20"] for _, c in cleanrl]
            lines += ["", f"**All seeds** ({len(ours)} ours, {len(theirs)} CleanRL's): "
                      + last20_verdict(ours, theirs)]
            # The check names 3 seeds; when more ran, its exact form is shown as well.
            # Seeds from the names: ours `Breakout-lstm-s4`, CleanRL's `{env}__{script}__4__{time}`.
            first3 = {"1", "2", "3"}
            their_seed = {name: name.split("__")[2] for name, _ in cleanrl}
            first3_ours = [r["last20"] for rid, r in check if rid.rsplit("-s", 1)[1] in first3]
            first3_theirs = [c["last20"] for name, c in cleanrl if their_seed[name] in first3]
            if len(ours) > 3 and len(first3_ours) == 3 and len(first3_theirs) == 3:
                lines += ["", "**Seeds 1–3 only** (the check as issue 14 states it): "
                          + last20_verdict(first3_ours, first3_theirs)]
                # How tight a 3-seed range is at this noise: CleanRL's later seeds against its
                # own first three, by the same rule.
                later_theirs = [c["last20"] for name, c in cleanrl
                                if their_seed[name] not in first3]
                if later_theirs:
                    lines[-1] += (f" For scale, by the same rule CleanRL's own other seeds "
                                  f"({', '.join(f'{t:.2f}' for t in later_theirs)}, mean "
                                  f"{statistics.mean(later_theirs):.2f}) lie "
                                  f"{range_word(statistics.mean(later_theirs), first3_theirs)} "
                                  f"its seeds 1–3's range.")
            # The last-20 mean rests on ~20 episodes of ~1,000 a run; the same curves binned by
            # 50k agent steps (~200 episodes a bin late in training) show whether the two
            # implementations learn alike over the whole budget, not only at its last moment.
            ours_curves = [(rid, r["bins"]) for rid, r in check]
            their_curves = [(name, c["bins"]) for name, c in cleanrl]
            lines += ["", f"The same runs' mean return per {width // 1000}k agent steps (all "
                      "episodes ending in the bin):", "",
                      "| run | " + " | ".join(f"{b * width // 1000}–{(b + 1) * width // 1000}k"
                                             for b in range(total // width)) + " |",
                      "|---|" + "---:|" * (total // width)]
            for label, rows_ in [("ours", ours_curves), ("CleanRL", their_curves)]:
                for name, curve in rows_:
                    lines.append(f"| {label}, {name} | " + " | ".join(f"{v:.2f}" for v in curve) + " |")
            last_ours = [c[-1] for _, c in ours_curves]
            last_theirs = [c[-1] for _, c in their_curves]
            lines += ["", f"Last bin: ours mean {statistics.mean(last_ours):.2f} "
                      f"({min(last_ours):.2f}–{max(last_ours):.2f}), CleanRL mean "
                      f"{statistics.mean(last_theirs):.2f} ({min(last_theirs):.2f}–"
                      f"{max(last_theirs):.2f}); our mean lies "
                      f"{range_word(statistics.mean(last_ours), last_theirs)} CleanRL's range."]
        else:
            lines += ["", f"Ours: mean {statistics.mean(ours):.2f} over {len(ours)} seeds, "
                      f"range {min(ours):.2f}–{max(ours):.2f} (no CleanRL run given)."]
    else:
        lines.append("(the check sweep has not finished)")
    open(os.path.join(HERE, "README.md"), "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
