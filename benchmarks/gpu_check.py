"""Every CUDA path of resrecover run once, in one command of at most 8 minutes on one GPU.

::

    python -m benchmarks.gpu_check --prepare DIR        # on a CPU machine (make gpu-check-prepare)
    python -m benchmarks.gpu_check --out OUT --prepared DIR   # on the GPU machine (make gpu-check)
    python -m benchmarks.gpu_check --cpu --out OUT      # the same at tiny sizes on the CPU (tests)

Sub-checks (``--checks a,b,...``; each in a fresh worker process with its own time limit, so a
failing or hanging one never stops the others; run in the order of :data:`STAGES`: the measurements
(a), (c), (d) alone, then (b) in the background while (g) and (e) run, then (f)):

(a) DeepNet / SRCNN-3D training at the paper's settings, float32 (TF32) and bf16: it/s, loss;
(b) the test preset through Snakemake with ``--resources gpu=1`` from CT inputs made on a CPU;
(c) Richardson-Lucy 512³ × 30 on the GPU vs the CPU path;
(d) tiled DeepNet inference, 512³ in memory and 2048×2048×256 HDF5 out of core;
(e) two GPU jobs at once on one GPU under the per-GPU lock;
(f) the paper preset's projected wall time on one GPU;
(g) CUDA out of memory during inference caught and retried with smaller batches.

Writes ``OUT/GPU_RESULTS.md`` and ``OUT/gpu_results.json`` (and ``OUT/logs``, ``OUT/parts``); large
scratch files go to ``--workdir`` (a temporary folder by default), never under OUT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.gpu_check_common import (
    FAIL,
    NOT_RUN,
    PASS,
    ROOT,
    TITLES,
    CheckResult,
    WorkerContext,
    json_default,
    load_part,
    machine_summary,
    parts_dir,
    save_part,
)

#: The order the sub-checks run in. In a stage of several, the first runs in the background while the
#: others run one after another: (b) only checks correctness, so it overlaps the two short correctness
#: checks, never the measurements of (a), (c) and (d).
STAGES = (("a",), ("c",), ("d",), ("b", "g", "e"), ("f",))
CHECK_ORDER = tuple(check for stage in STAGES for check in stage)
#: Seconds each worker may take at most, and what it is expected to take (kept free for the later stages).
TIME_LIMITS = {
    "gpu": {"a": 100, "c": 90, "d": 150, "b": 260, "g": 45, "e": 60, "f": 45},
    "cpu": {"a": 120, "c": 60, "d": 90, "b": 900, "g": 60, "e": 90, "f": 60},
}
EXPECTED_S = {
    "gpu": {"a": 50, "c": 50, "d": 100, "b": 200, "g": 25, "e": 30, "f": 20},
    "cpu": {"a": 40, "c": 10, "d": 20, "b": 300, "g": 20, "e": 20, "f": 15},
}
#: Seconds for all sub-checks with the setup (the report comes after): the whole run stays under 8 minutes.
DEFAULT_BUDGET_S = {"gpu": 455, "cpu": 1200}
DEFAULT_PREPARED = ROOT / "benchmarks" / "_work" / "gpu_prepared"


# ------------------------------------------------------------------------------ command line
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="results folder (GPU_RESULTS.md, gpu_results.json, logs)")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (no GPU needed)")
    parser.add_argument("--checks", default=",".join(CHECK_ORDER), help="comma-separated sub-checks (a-g)")
    parser.add_argument("--prepared", type=Path, default=None,
                        help=f"folder made by --prepare (default {DEFAULT_PREPARED.relative_to(ROOT)} when present)")
    parser.add_argument("--prepare", type=Path, metavar="DIR",
                        help="on a CPU machine: make the test preset's CT inputs, a CPU reference run and the wheels")
    parser.add_argument("--wheels-only", action="store_true", help="with --prepare: download the wheels only")
    parser.add_argument("--target-python", default=None,
                        help="with --prepare: the GPU machine's Python version for the wheels (default 3.12)")
    parser.add_argument("--budget-s", type=float, default=None, help="total seconds for all sub-checks")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder for large files")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--site", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prepared is None and DEFAULT_PREPARED.is_dir():
        args.prepared = DEFAULT_PREPARED
    if args.prepared is not None:
        args.prepared = args.prepared.resolve()
    if args.prepare is None and args.out is None:
        parser.error("--out is required (or --prepare DIR)")
    unknown = sorted(set(args.checks.split(",")) - set(CHECK_ORDER))
    if unknown:
        parser.error(f"--checks: {','.join(unknown)} unknown; expected some of {','.join(CHECK_ORDER)}")
    return args


def mode_of(args: argparse.Namespace) -> str:
    return "cpu" if args.cpu else "gpu"


# ------------------------------------------------------------------------------ worker side
def run_worker(args: argparse.Namespace) -> int:
    """Run one sub-check in this (fresh) process and save its result part; 0 unless it crashed."""
    from benchmarks import gpu_check_compute, gpu_check_locks, gpu_check_projection, gpu_check_workflow

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = WorkerContext(mode=mode_of(args), out=args.out, workdir=args.workdir, deadline=args.deadline,
                        prepared=args.prepared)
    checks = {**gpu_check_compute.CHECKS, "e": gpu_check_locks.check_locks,
              "b": gpu_check_workflow.check_workflow, "f": gpu_check_projection.check_projection}
    started = time.perf_counter()
    try:
        result = checks[args.worker](ctx, args.site) if args.worker in ("b", "f") else checks[args.worker](ctx)
    except Exception as exc:  # noqa: BLE001 - recorded as the sub-check's failure; the others go on
        traceback.print_exc()
        result = CheckResult(args.worker, TITLES[args.worker])
        partial = load_part(args.out, args.worker)
        if partial:
            result = CheckResult(**partial)
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        result.fail(f"{type(exc).__name__}: {first_line[:300]}")
    result.seconds = time.perf_counter() - started
    save_part(args.out, result)
    return 0


# ------------------------------------------------------------------------------ parent side
def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def prepare_environment(args: argparse.Namespace, workdir: Path) -> dict:
    """Make Snakemake, jsonschema, zarr and tifffile importable (install the brought wheels if missing)."""
    from benchmarks.gpu_check_wheels import install_wheels, missing_modules

    missing = missing_modules()
    setup = {"missing_before": missing, "site": None}
    if missing:
        if args.prepared is None or not (args.prepared / "wheels").is_dir():
            setup["error"] = f"{', '.join(missing)} not installed and no prepared wheels folder (--prepared)"
            return setup
        started = time.perf_counter()
        setup.update(install_wheels(args.prepared / "wheels", workdir / "site"))
        setup["install_s"] = round(time.perf_counter() - started, 1)
        sys.path.insert(0, setup["site"])
    return setup


def worker_command(args: argparse.Namespace, check: str, workdir: Path, deadline: float, site) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--worker", check, "--out", str(args.out),
               "--workdir", str(workdir), "--deadline", f"{deadline:.1f}"]
    if args.cpu:
        command.append("--cpu")
    if args.prepared:
        command += ["--prepared", str(args.prepared)]
    if site:
        command += ["--site", str(site)]
    return command


def worker_environment(site) -> dict:
    paths = [str(ROOT), str(ROOT / "src")] + ([str(site)] if site else []) + [os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))


class Worker:
    """One sub-check's worker process, killed with its children (whole process group) at its deadline."""

    def __init__(self, args: argparse.Namespace, check: str, timeout_s: float, workdir: Path, site):
        (parts_dir(args.out) / f"{check}.json").unlink(missing_ok=True)
        self.args, self.check, self.timeout_s = args, check, timeout_s
        self.started = time.perf_counter()
        self.deadline = time.time() + timeout_s
        self.log_file = open(args.out / "logs" / f"{check}.log", "w")
        self.proc = subprocess.Popen(worker_command(args, check, workdir, self.deadline, site), cwd=ROOT,
                                     stdout=self.log_file, stderr=subprocess.STDOUT, env=worker_environment(site),
                                     start_new_session=True)

    def finish(self) -> dict:
        """Wait for the worker (until its deadline); return its result part, marked FAIL if it had none."""
        try:
            code, timed_out = self.proc.wait(timeout=max(0.0, self.deadline - time.time())), False
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code, timed_out = self.proc.wait(), True
        self.log_file.close()
        part = load_part(self.args.out, self.check)
        result = CheckResult(**part) if part else CheckResult(self.check, TITLES[self.check])
        if timed_out:
            result.fail(f"stopped at its time limit of {self.timeout_s:.0f} s (numbers above are what it had)")
        elif result.status == NOT_RUN:
            result.fail(f"the worker exited {code} without a result; see logs/{self.check}.log")
        result.seconds = round(time.perf_counter() - self.started, 1)
        save_part(self.args.out, result)
        return result.to_dict()


def stage_expected_s(stage, mode: str) -> float:
    """Seconds a stage is expected to take: its background check or the sum of the others, the longer."""
    expected = EXPECTED_S[mode]
    return max(expected[stage[0]], sum(expected[c] for c in stage[1:]))


def run_checks(args: argparse.Namespace, workdir: Path, setup: dict, budget_s: float) -> dict:
    """The selected sub-checks stage by stage (:data:`STAGES`), each limited so the whole fits ``budget_s``."""
    mode = mode_of(args)
    selected = args.checks.split(",")
    stages = [s for s in ([c for c in stage if c in selected] for stage in STAGES) if s]
    end = time.time() + budget_s
    results = {}

    def start(check: str, reserve: float):
        timeout_s = min(TIME_LIMITS[mode][check], end - time.time() - reserve)
        if check in ("b", "f") and setup.get("error"):
            results[check] = CheckResult(check, TITLES[check], status=FAIL, error=setup["error"]).to_dict()
        elif timeout_s < 10:
            results[check] = CheckResult(check, TITLES[check], status=NOT_RUN,
                                         summary="not run: the time budget was spent").to_dict()
        else:
            return Worker(args, check, timeout_s, workdir, setup.get("site"))
        return None

    def collect(check: str, worker) -> None:
        if worker is not None:
            results[check] = worker.finish()
        print(f"({check}) {results[check]['status']}: {results[check]['summary'] or results[check]['error']}",
              flush=True)

    for index, stage in enumerate(stages):
        reserve = sum(stage_expected_s(later, mode) for later in stages[index + 1 :])
        background = start(stage[0], reserve)
        for check in stage[1:]:
            collect(check, start(check, reserve))
        collect(stage[0], background)
    return {check: results[check] for check in CHECK_ORDER if check in results}


# ------------------------------------------------------------------------------ report
def not_run_lines(args: argparse.Namespace, results: dict) -> list[str]:
    """What this run did not exercise, said plainly."""
    import importlib.util

    lines = [f"({c}) {TITLES[c]}: not selected (--checks)" for c in CHECK_ORDER if c not in results]
    astra = importlib.util.find_spec("astra") is not None
    lines.append("ASTRA backend (projection/FDK on CUDA): " + (
        "astra-toolbox is installed here but no sub-check exercises it: not run" if astra else
        "astra-toolbox is not installed here (not installable offline): not run"))
    lines.append("RTK simulation (itk-rtk): not run here; the test preset's CT inputs were made on a CPU machine "
                 "(`--prepare`) and brought along" if not args.cpu else
                 "RTK simulation: run by (b) only when it makes its CT inputs itself")
    return lines


def cell(value) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def check_section(result: dict) -> list[str]:
    lines = [f"## ({result['check']}) {result['title']}", "", f"**{result['status']}**"
             + (f" ({result['seconds']:.0f} s)" if result.get("seconds") else "")
             + (f": {result['summary']}" if result.get("summary") else ""), ""]
    if result.get("error"):
        lines += [f"Error: `{cell(result['error'])}`", ""]
    if result["rows"]:
        lines += ["| measurement | value | unit | criterion | ok |", "|---|---|---|---|---|"]
        for row in result["rows"]:
            ok = {True: "PASS", False: "FAIL", None: ""}[row["ok"]]
            lines.append(f"| {cell(row['what'])} | {cell(row['value'])} | {cell(row['unit'])} | "
                         f"{cell(row['criterion'])} | {ok} |")
        lines.append("")
    lines += [f"- {note}" for note in result.get("notes", [])]
    return lines + [""]


def render_markdown(report: dict) -> str:
    machine = report["machine"]
    device = (f"{machine.get('gpu')} ({machine.get('gpu_memory_gb')} GB, compute {machine.get('capability')})"
              if machine.get("cuda_available") else "no GPU (CPU mode)")
    lines = [
        "# GPU check: every CUDA path of resrecover run once", "",
        f"- Date: {report['started']}; mode: **{report['mode']}** "
        + ("(tiny sizes on the CPU: numbers are not GPU numbers)" if report["mode"] == "cpu" else ""),
        f"- Device: {device}; torch {machine['torch']} (CUDA {machine.get('cuda_runtime')}); Python "
        f"{machine['python']}; {machine['cores']} cores; {machine['ram_gb']} GB RAM",
        f"- Command: `{report['command']}`",
        f"- Wall time: {report['wall_s']:.0f} s (budget {report['budget_s']:.0f} s for the sub-checks); "
        f"setup: {cell(report['setup'])}", "",
        "| check | what | status | s | result |", "|---|---|---|---|---|",
    ]
    for check, result in report["checks"].items():
        seconds = f"{result['seconds']:.0f}" if result.get("seconds") else "–"
        lines.append(f"| ({check}) | {cell(result['title'])} | **{result['status']}** | {seconds} | "
                     f"{cell(result['summary'] or result.get('error') or '')} |")
    lines += ["", "Not run:", ""] + [f"- {line}" for line in report["not_run"]] + ["", ""]
    for result in report["checks"].values():
        lines += check_section(result)
    return "\n".join(lines)


def write_report(args: argparse.Namespace, report: dict) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_results.json").write_text(json.dumps(report, indent=1, default=json_default))
    (args.out / "GPU_RESULTS.md").write_text(render_markdown(report))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    if args.prepare:
        from benchmarks.gpu_check_workflow import prepare

        manifest = prepare(args.prepare, wheels_only=args.wheels_only, python_version=args.target_python)
        print(json.dumps(manifest, indent=1))
        return 0
    if not args.cpu and not cuda_available():
        print("gpu_check: torch sees no CUDA device; run on a GPU machine, or pass --cpu for the tiny CPU mode",
              file=sys.stderr)
        return 2
    return run_all(args)


def run_all(args: argparse.Namespace) -> int:
    """Set up, run the selected sub-checks, write the report; 0 when every sub-check run passed."""
    started, clock = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter()
    args.out = args.out.resolve()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(parts_dir(args.out), ignore_errors=True)
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check_")) if own_workdir else args.workdir.resolve()
    try:
        setup = prepare_environment(args, workdir)
        budget_s = args.budget_s or DEFAULT_BUDGET_S[mode_of(args)]
        results = run_checks(args, workdir, setup, budget_s - (time.perf_counter() - clock))
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "started": started, "mode": mode_of(args), "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_summary(mode_of(args)), "setup": setup, "budget_s": budget_s,
        "wall_s": time.perf_counter() - clock, "checks": results, "not_run": not_run_lines(args, results),
        "all_passed": all(r["status"] == PASS for r in results.values()),
    }
    write_report(args, report)
    print(f"{args.out / 'GPU_RESULTS.md'}: " + ", ".join(f"({c}) {r['status']}" for c, r in results.items()))
    return 0 if report["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
