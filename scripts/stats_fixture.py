#!/usr/bin/env python3
"""Writes fixtures/stats/rliable_reference.json: reference values for crates/rlstats.

The numbers come from rliable (Agarwal et al., "Deep RL at the Edge of the Statistical
Precipice", NeurIPS 2021), SciPy and NumPy, never from the Rust code, so the Rust tests
(crates/rlstats/tests/stats.rs) check the statistics against an independent implementation.

Usage (from the repository root):

    python3 scripts/stats_fixture.py [--venv DIR] [--out FILE]

Without rliable importable, the script creates a virtualenv outside the repository (default
/tmp/rliable-venv, or $RLIABLE_VENV), installs the pinned versions below into it, and runs itself
again with that interpreter. The output is deterministic: the same versions give the same file.

What is in the file:
- `cases`: small score matrices (runs x tasks) per algorithm, with ties, one single-task case
  and one with different run counts, and for each: rliable's mean, median, IQM, optimality gap
  (gamma = 1), performance profile (fraction of runs with score > tau) at the listed taus, the
  probability of improvement of every ordered pair, and rliable's 95% stratified-bootstrap
  percentile intervals for all of them (seeded NumPy global RNG, `bootstrap_reps` resamples).
  Point estimates are exact; the intervals depend on the RNG and are compared with a tolerance.
- `t_intervals`: mean and Student-t interval over seeds (scipy.stats.t).
- `auc`: trapezoid area under a learning curve divided by the frame span (numpy.trapezoid).
- `human_normalized`: (score - random) / (human - random).
"""

import argparse
import json
import os
import subprocess
import sys

# pandas < 3: arch 7.2 fails to import with pandas 3 (deprecate_kwarg signature).
PINNED = ["rliable==1.2.0", "numpy==2.4.6", "scipy==1.17.1", "arch==7.2.0", "pandas==2.3.3"]
BOOTSTRAP_REPS = 50_000
BOOTSTRAP_SEED = 0


def ensure_rliable(venv):
    """Returns when rliable is importable; otherwise builds the venv and re-executes in it."""
    try:
        import rliable  # noqa: F401

        return
    except ImportError:
        pass
    python = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        sys.exit(f"rliable is not importable inside {venv}; remove it and run again")
    if not os.path.exists(python):
        print(f"creating {venv} with {' '.join(PINNED)}", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([python, "-m", "pip", "install", "--quiet", *PINNED])
    os.execv(python, [python, *sys.argv])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=os.environ.get("RLIABLE_VENV", "/tmp/rliable-venv"))
    parser.add_argument(
        "--out", default=os.path.join(here, "..", "fixtures", "stats", "rliable_reference.json")
    )
    args = parser.parse_args()
    ensure_rliable(args.venv)

    from importlib.metadata import version

    import numpy as np
    import scipy.stats
    from rliable import library as rly
    from rliable import metrics

    def as_list(a):
        return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]

    def matrix(a):
        return [[float(v) for v in row] for row in np.asarray(a, dtype=np.float64)]

    aggregates = {
        "mean": metrics.aggregate_mean,
        "median": metrics.aggregate_median,
        "iqm": metrics.aggregate_iqm,
        "optimality_gap": metrics.aggregate_optimality_gap,
    }

    def interval(score_dict_value, func):
        """rliable's stratified bootstrap percentile interval (lower, upper) for one entry."""
        np.random.seed(BOOTSTRAP_SEED)  # rliable 1.2.0 draws from NumPy's global RNG
        _, ci = rly.get_interval_estimates(
            {"k": score_dict_value}, func, reps=BOOTSTRAP_REPS, confidence_interval_size=0.95
        )
        return np.asarray(ci["k"], dtype=np.float64)  # shape (2, k): lower row, upper row

    def case(name, algos, taus):
        out = {"name": name, "taus": [float(t) for t in taus], "algorithms": {}, "pairs": []}
        for alg, scores in algos.items():
            scores = np.asarray(scores, dtype=np.float64)
            entry = {"scores": matrix(scores)}
            for key, fn in aggregates.items():
                entry[key] = float(fn(scores))
                ci = interval(scores, lambda s, fn=fn: np.array([fn(s)]))
                entry[key + "_ci"] = [float(ci[0, 0]), float(ci[1, 0])]
            profile_fn = lambda s: rly.score_distributions(s, np.asarray(taus))  # noqa: E731
            entry["profile"] = as_list(profile_fn(scores))
            ci = interval(scores, profile_fn)
            entry["profile_ci_lower"] = as_list(ci[0])
            entry["profile_ci_upper"] = as_list(ci[1])
            out["algorithms"][alg] = entry
        for x in algos:
            for y in algos:
                if x == y:
                    continue
                sx = np.asarray(algos[x], dtype=np.float64)
                sy = np.asarray(algos[y], dtype=np.float64)
                poi = metrics.probability_of_improvement
                ci = interval([sx, sy], lambda a, b: np.array([poi(a, b)]))
                out["pairs"].append(
                    {
                        "x": x,
                        "y": y,
                        "probability_of_improvement": float(poi(sx, sy)),
                        "ci": [float(ci[0, 0]), float(ci[1, 0])],
                    }
                )
        return out

    rng = np.random.default_rng(13)
    # Three algorithms x 5 runs x 3 tasks, normalised-score-like (some above 1), rounded to
    # 2 decimals so that ties occur; C shares task 0 with A exactly (PoI takes its 0.5 branch).
    a = np.round(rng.normal(0.6, 0.3, size=(5, 3)), 2)
    b = np.round(rng.normal(0.8, 0.4, size=(5, 3)), 2)
    c = np.round(rng.normal(0.5, 0.2, size=(5, 3)), 2)
    a[1, 2] = a[3, 2] = 0.5  # ties within a column
    b[0, 1] = a[2, 1]  # ties across algorithms
    b[4, 0] = a[0, 0]
    c[:, 0] = a[:, 0]
    taus_three = list(np.round(np.linspace(-0.25, 1.75, 9), 4)) + [0.5, float(a[0, 0])]
    cases = [case("three_algorithms", {"A": a, "B": b, "C": c}, taus_three)]
    # One task: IQM over 5 scores trims one at each end; many ties.
    cases.append(
        case(
            "single_task",
            {
                "lstm": [[1.0], [2.0], [2.0], [3.0], [10.0]],
                "brims": [[2.0], [2.0], [4.0], [0.0], [3.0]],
            },
            [0.0, 1.0, 2.0, 2.5, 3.0, 9.99],
        )
    )
    # Different run counts (4 and 6) over 2 tasks: 8 and 12 scores for the IQM.
    cases.append(
        case(
            "uneven_runs",
            {
                "x": [[0.1, 1.2], [0.4, 0.9], [0.4, 1.5], [0.8, 0.2]],
                "y": [[0.3, 0.9], [0.2, 1.1], [0.4, 0.7], [0.9, 1.3], [0.0, 0.9], [0.6, 2.0]],
            },
            [0.0, 0.4, 0.9, 1.0],
        )
    )

    t_intervals = []
    for values, confidence in [
        ([1.0, 2.0, 3.0], 0.95),
        ([21.0, 18.5, 30.25, 11.0, 19.0], 0.95),
        ([4.0, 9.0], 0.99),
        (list(np.round(rng.normal(100.0, 15.0, size=10), 3)), 0.9),
        (list(np.round(rng.normal(-5.0, 2.0, size=31), 3)), 0.95),
        (list(np.round(rng.normal(0.0, 1.0, size=200), 3)), 0.95),
    ]:
        v = np.asarray(values, dtype=np.float64)
        mean, sem = float(np.mean(v)), float(scipy.stats.sem(v))
        lower, upper = scipy.stats.t.interval(confidence, len(v) - 1, loc=mean, scale=sem)
        t_intervals.append(
            {
                "values": as_list(v),
                "confidence": confidence,
                "mean": mean,
                "lower": float(lower),
                "upper": float(upper),
            }
        )

    auc = []
    for frames, values in [
        ([0.0, 10.0], [0.0, 2.0]),
        ([0.0, 1000.0, 3000.0, 3500.0, 10000.0], [1.0, 5.0, -2.0, 7.5, 20.0]),
        ([250.0, 500.0, 4000.0], [3.0, 3.0, 9.0]),
    ]:
        x, y = np.asarray(frames), np.asarray(values)
        auc.append(
            {
                "frames": as_list(x),
                "values": as_list(y),
                "auc": float(np.trapezoid(y, x) / (x[-1] - x[0])),
            }
        )

    human_normalized = [
        {"score": s, "random": r, "human": h, "normalized": (s - r) / (h - r)}
        for s, r, h in [(30.5, 1.7, 30.5), (400.0, 1.7, 30.5), (-21.0, -20.7, 14.6), (0.0, 0.0, 7.0)]
    ]

    fixture = {
        "command": "python3 scripts/stats_fixture.py",
        "venv": f"python3 -m venv {args.venv} && {args.venv}/bin/pip install {' '.join(PINNED)}",
        "versions": {
            "python": sys.version.split()[0],
            **{p: version(p) for p in ["rliable", "numpy", "scipy", "arch", "pandas"]},
        },
        "bootstrap_reps": BOOTSTRAP_REPS,
        "bootstrap_seed": f"numpy.random.seed({BOOTSTRAP_SEED}) before each interval",
        "confidence": 0.95,
        "cases": cases,
        "t_intervals": t_intervals,
        "auc": auc,
        "human_normalized": human_normalized,
    }
    out = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(out)


if __name__ == "__main__":
    main()
