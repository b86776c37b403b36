"""benchmarks/bench_quick_preset.py reading a finished `make demo` when other targets ran after it."""

import os
import time

# `python -m pytest` (make test) runs from the repository root, which puts `benchmarks` on sys.path
from benchmarks.bench_quick_preset import _wall_from_logs, _workflow_log, rule_breakdown


def _log(folder, name, text, mtime):
    path = folder / ".snakemake" / "log" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


def _bench(folder, job, seconds, mtime):
    path = folder / "results" / "benchmarks" / job
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{seconds}\t0:00:01\t100\t{seconds}\n")
    os.utime(path, (mtime, mtime))


def test_a_later_target_run_is_not_taken_for_the_demo(tmp_path):
    demo_start = time.mktime(time.strptime("2026-11-30T110108", "%Y-%m-%dT%H%M%S"))
    demo_end = demo_start + 1112
    demo = _log(tmp_path, "2026-11-30T110108.064937.snakemake.log",
                "Job stats:\njob  count\ntrain  8\nall  1\ntotal  136\n136 of 136 steps (100%) done\n", demo_end)
    _log(tmp_path, "2026-11-30T112000.000000.snakemake.log",  # make demo's report run: no steps
         "Creating report...\n", demo_end + 30)
    _log(tmp_path, "2026-11-30T112100.000000.snakemake.log",  # make transfer, after it
         "Job stats:\njob  count\nscan_transfer  1\ntrust_transfer  1\ntotal  26\n26 of 26 steps (100%) done\n",
         demo_end + 300)
    _bench(tmp_path, "train/deepnet/sigma9/member0.tsv", 168.0, demo_end - 100)
    _bench(tmp_path, "scan/transfer.tsv", 58.0, demo_end + 200)

    assert _workflow_log(tmp_path) == demo
    assert abs(_wall_from_logs(tmp_path) - 1112) < 1
    per_rule, jobs = rule_breakdown(tmp_path, until=demo.stat().st_mtime + 1)
    assert list(jobs["job"]) == ["train/deepnet/sigma9/member0.tsv"]
    assert list(rule_breakdown(tmp_path)[1]["job"]) == ["scan/transfer.tsv", "train/deepnet/sigma9/member0.tsv"]
