"""Tests of scripts/benchmarks_md.py on the synthetic JSON in fixtures/benchmarks/.

Run from the repository root: python3 -m unittest discover -s scripts -p 'test_*.py'
"""

import glob
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import benchmarks_md  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "benchmarks")


def fixture_files():
    return sorted(glob.glob(os.path.join(FIXTURES, "*.json"))) + [os.path.join(FIXTURES, "core.txt")]


class BenchmarksMd(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self.tmp.name, "docs", "benchmarks.md")
        benchmarks_md.main(fixture_files() + ["--out", self.out])
        with open(self.out) as f:
            self.page = f.read()
        self.lines = self.page.splitlines()

    def tearDown(self):
        self.tmp.cleanup()

    def table(self, heading_start):
        """The data rows of the table under the heading that starts with `heading_start`."""
        start = next(i for i, l in enumerate(self.lines) if l.startswith("## " + heading_start))
        rows = []
        for line in self.lines[start + 1 :]:
            if line.startswith("## "):
                break
            if line.startswith("| ") and not line.startswith("| date"):
                rows.append(line)
        return rows

    def test_one_table_per_bench_in_a_fixed_order(self):
        headings = [l for l in self.lines if l.startswith("## ")]
        self.assertEqual(
            [h.split(" (")[0] for h in headings],
            ["## Environment pool", "## Nature CNN forward + backward", "## Training", "## Recurrent cores"],
        )

    def test_rows_carry_figure_anchor_version_ratio_command_machine_date_commit(self):
        (skipped, measured) = self.table("Environment pool")  # sorted by date
        self.assertIn("2026-01-02T03:04:05Z", measured)
        self.assertIn("12,000 frames/s", measured)
        self.assertIn("envpool 9.9.9: 10,000 frames/s", measured)
        self.assertIn("| 1.20× |", measured)
        self.assertIn("`brims bench env --envs 16 --seconds 10`", measured)
        self.assertNotIn("--json", measured)
        self.assertIn("2 cores, Test CPU \\| 2 GHz (avx2)", measured)  # the pipe is escaped
        self.assertIn("`0123456789`", measured)
        # A skipped anchor: the reason, and no ratio.
        self.assertIn("envpool: skipped (no Python given", skipped)
        self.assertIn("| — |", skipped)
        self.assertIn("(uncommitted changes)", skipped)
        self.assertTrue(all(r.count(" | ") == 6 for r in (skipped, measured)))

    def test_other_benches(self):
        (cnn,) = self.table("Nature CNN")
        self.assertIn("150.0 ms", cnn)
        self.assertIn("torch 9.9.9: 100.0 ms (2 threads)", cnn)
        self.assertIn("| 1.50 |", cnn)
        (train,) = self.table("Training")
        self.assertIn("cleanrl ppo_atari_lstm.py 1.2.0: 200 steps/s", train)
        self.assertIn("150 at 1 threads", train)
        self.assertNotIn("--json", train)
        (core,) = self.table("Recurrent cores")  # read from a stdout whose last line is JSON
        self.assertIn("lstm: step 0.25 ms", core)

    def test_the_page_is_a_function_of_its_inputs(self):
        again = os.path.join(self.tmp.name, "again.md")
        benchmarks_md.main(fixture_files() + ["--out", again])
        with open(again) as f:
            self.assertEqual(f.read(), self.page)

    def test_measured_peak_and_free_thread_shares_reach_the_cells(self):
        train = {
            "bench": "train", "sps": 200.0, "config": "c.toml", "flops_per_step": 181_000_000,
            "gflops": 36.2, "share_of_fp32_peak": 0.2125,
            "peak": {"fp32_gflops": 170.4, "fp32_isa": "avx2+fma"},
        }
        ours, _, _ = benchmarks_md.row(train)
        self.assertIn("181.0 MFLOP per step", ours)
        self.assertIn("36.2 GFLOP/s = 21% of the FP32 peak (170 GFLOP/s, avx2+fma", ours)
        env = {"bench": "env", "frames_per_sec": 1.0, "ratio_emulated_to_unsynchronised_threads": 0.891}
        self.assertIn("89% of free-running threads (target ≥ 95%)", benchmarks_md.row(env)[0])
        # Old JSON without the fields keeps its old cells.
        self.assertNotIn("GFLOP", benchmarks_md.row({"bench": "train", "sps": 1.0})[0])

    def test_a_file_without_json_is_an_error(self):
        bad = os.path.join(self.tmp.name, "bad.json")
        with open(bad, "w") as f:
            f.write("not json\n")
        with self.assertRaises(SystemExit) as e:
            benchmarks_md.main([bad, "--out", os.path.join(self.tmp.name, "x.md")])
        self.assertIn("bad.json", str(e.exception.code))


if __name__ == "__main__":
    unittest.main()
