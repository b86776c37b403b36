"""The quick preset end to end (``snakemake --cores 2 --configfile config/quick.yaml``), with a per-rule breakdown.

The whole workflow runs in a scratch directory (``--directory``; the repository's ``config/`` is
linked into it, since the Snakefile names ``config/config.yaml`` relative to the working
directory), from nothing: phantoms, scans, reconstructions, training, recovery, evaluation,
figures. Its wall time is the row's time; the breakdown comes from the Snakemake ``benchmark:``
files the rules write (``results/benchmarks/**.tsv``: seconds, peak RSS, CPU time per job),
summed per rule. The peak memory is the largest summed RSS of Snakemake and all its jobs,
sampled every 0.5 s.

``--quick-results DIR`` reads the benchmark files of a finished run in DIR instead of running it
(the wall time then comes from DIR/quick_run.json when this script made the run, else from
DIR/.snakemake/log: the newest log's start, in its name, to its last write).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import harness

NAME = "quick_preset"
TITLE = "Quick preset end to end"
DEFAULTS = {"cores": 2, "timeout_s": 3000, "quick_results": None, "target_s": 20 * 60}


def _opts(options):
    return harness.merged_options(DEFAULTS, options)


def run_workflow(scratch: Path, cores: int, timeout_s: float) -> dict:
    """Run the quick preset from nothing in ``scratch``; return wall time, exit code, peak tree RSS."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    (scratch / "config").symlink_to(harness.ROOT / "config", target_is_directory=True)
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [
        str(snakemake) if snakemake.exists() else "snakemake",
        "-s", str(harness.ROOT / "Snakefile"),
        "--directory", str(scratch),
        "--cores", str(cores),
        "--configfile", str(harness.ROOT / "config" / "quick.yaml"),
    ]
    log_path = scratch / "snakemake_stdout.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=scratch)
        with harness.TreeRssSampler(proc.pid) as sampler:
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                returncode = "timeout"
    wall = time.perf_counter() - t0
    info = {
        "wall_s": round(wall, 1),
        "returncode": returncode,
        "peak_tree_rss_mb": round(sampler.peak_mb, 1),
        "command": " ".join(cmd),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (scratch / "quick_run.json").write_text(json.dumps(info, indent=1))
    return info


_STEPS = r"^(\d+) of (\d+) steps"


#: the job-stats line of a run that built the default target (``make demo``), not another target
#: run after it (``make transfer``, ``make learning-curves``: their logs list no job ``all``)
_DEFAULT_TARGET = r"^all\s+1\s*$"


def _workflow_log(directory: Path) -> Path | None:
    """The newest Snakemake log of a run of the whole workflow that executed jobs (``make demo``'s
    report run has none; a later run of another target is not the workflow's)."""
    import re

    for log in sorted((directory / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True):
        text = log.read_text(errors="replace")
        if re.search(_STEPS, text, flags=re.M) and re.search(_DEFAULT_TARGET, text, flags=re.M):
            return log
    return None


def _wall_from_logs(directory: Path) -> float | None:
    log = _workflow_log(directory)
    if log is None:
        return None
    try:
        start = dt.datetime.strptime(log.name.split(".")[0], "%Y-%m-%dT%H%M%S")
    except ValueError:
        return None
    end = dt.datetime.fromtimestamp(log.stat().st_mtime)
    return (end - start).total_seconds()


def progress_from_logs(directory: Path) -> tuple[int, int] | None:
    """(steps done, steps in all) from the last "N of M steps" line of the run's Snakemake log."""
    import re

    log = _workflow_log(directory)
    if log is None:
        return None
    found = re.findall(_STEPS, log.read_text(errors="replace"), flags=re.M)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def rule_breakdown(directory: Path, until: float | None = None):
    """Per-rule sums of the benchmark files under ``directory/results/benchmarks`` (a DataFrame).

    ``until``: a time stamp (seconds since the epoch); files written after it (by a later run of
    another target, e.g. ``make transfer``) are left out.
    """
    import pandas as pd

    base = directory / "results" / "benchmarks"
    rows = []
    for tsv in sorted(base.rglob("*.tsv")):
        if until is not None and tsv.stat().st_mtime > until:
            continue
        frame = pd.read_csv(tsv, sep="\t")
        if frame.empty:
            continue
        rule = tsv.relative_to(base).parts[0]
        rec = frame.iloc[-1]
        rows.append(
            {
                "rule": rule,
                "job": str(tsv.relative_to(base)),
                "s": float(rec["s"]),
                "max_rss_mb": float(pd.to_numeric(rec.get("max_rss"), errors="coerce")),
                "cpu_time_s": float(pd.to_numeric(rec.get("cpu_time"), errors="coerce")),
            }
        )
    jobs = pd.DataFrame(rows)
    if jobs.empty:
        return jobs, jobs
    per_rule = (
        jobs.groupby("rule")
        .agg(jobs=("s", "size"), total_s=("s", "sum"), slowest_job_s=("s", "max"), max_rss_mb=("max_rss_mb", "max"),
             cpu_time_s=("cpu_time_s", "sum"))
        .sort_values("total_s", ascending=False)
        .reset_index()
    )
    return per_rule, jobs


def run(workdir: Path, options: dict | None = None) -> dict:
    o = _opts(options)
    workdir = Path(workdir)
    if o["quick_results"]:
        directory = Path(o["quick_results"]).resolve()
        info_file = directory / "quick_run.json"
        info = json.loads(info_file.read_text()) if info_file.exists() else {"wall_s": _wall_from_logs(directory)}
        source = f"reused the finished run in {directory}"
    else:
        directory = workdir / "quick_run"
        info = run_workflow(directory, o["cores"], o["timeout_s"])
        source = f"ran `{info['command']}`"
    log = _workflow_log(directory)
    # a reused run's jobs are those finished by the end of its log (not a later target's)
    per_rule, jobs = rule_breakdown(directory, until=log.stat().st_mtime + 1.0 if o["quick_results"] and log else None)
    wall = info.get("wall_s")
    row = {
        "name": NAME,
        "title": TITLE,
        "sizes": "config/quick.yaml: 160³ at 3.2 µm, 2 realizations, σ 1/3/5/7/9 µm, 3 methods, all figures",
        "ours_label": f"snakemake --cores {o['cores']} --configfile config/quick.yaml (whole workflow)",
        "peer_label": "per-rule breakdown from the Snakemake benchmark files",
        "ours": {"median_s": wall, "times_s": [wall] if wall else [], "n_runs": 1 if wall else 0,
                 "peak_rss_mb": info.get("peak_tree_rss_mb")},
        "peer": None,
        "peer_note": "(the breakdown below)",
        "peer_short": "breakdown",
        "ratio": None,
        "target": f"≤ {o['target_s'] // 60} min on {o['cores']} cores; name the slowest rule",
        "notes": [source + "."],
    }
    ok = info.get("returncode", 0) == 0
    if not ok:
        row["notes"].append(f"Snakemake exited with {info.get('returncode')}: see {directory}/snakemake_stdout.log.")
    progress = progress_from_logs(directory)
    if progress and progress[0] < progress[1]:
        ok = False
        row["notes"].append(f"The run is incomplete: {progress[0]} of {progress[1]} steps done (still running or "
                            "stopped); the wall time is up to its last log line.")
    row["progress"] = progress
    if per_rule is None or len(per_rule) == 0:
        row["check"] = "no benchmark files found"
        row["met"] = False
        return row
    slowest = per_rule.iloc[0]
    slowest_job = jobs.sort_values("s", ascending=False).iloc[0]
    total_job_s = float(jobs["s"].sum())
    row["check"] = (
        f"{len(jobs)} jobs with benchmark files, {total_job_s:.0f} s of job time in all; slowest rule "
        f"`{slowest['rule']}` ({slowest['total_s']:.0f} s over {int(slowest['jobs'])} jobs, "
        f"{100 * slowest['total_s'] / total_job_s:.0f}%); slowest job `{slowest_job['job']}` ({slowest_job['s']:.0f} s)"
    )
    row["check_short"] = f"slowest rule `{slowest['rule']}` ({slowest['total_s']:.0f} s)"
    table = ["| rule | jobs | total s | slowest job s | CPU s | max RSS MB |", "|---|---|---|---|---|---|"]
    for _, r in per_rule.iterrows():
        table.append(f"| {r['rule']} | {int(r['jobs'])} | {r['total_s']:.1f} | {r['slowest_job_s']:.1f} | "
                     f"{r['cpu_time_s']:.0f} | {r['max_rss_mb']:.0f} |")
    row["breakdown"] = per_rule.to_dict(orient="records")
    row["notes"].append("Per-rule breakdown (job seconds overlap: 2 jobs run at once on 2 cores):\n\n" + "\n".join(table))
    row["met"] = bool(ok and wall is not None and wall <= o["target_s"])
    return row


if __name__ == "__main__":
    def _extra(parser):
        parser.add_argument("--quick-results", type=Path, default=None)
        parser.add_argument("--cores", type=int, default=2)

    harness.standalone(run, __doc__.splitlines()[0], _extra)
