"""(e) Two GPU jobs at once on one GPU: the per-GPU lock of :mod:`resrecover.methods.device` serializes them.

Both jobs are started together, wait until both have imported torch, then ask for the lock at the
same moment; each records when it held the lock. On the GPU each job calls
``recover_volume(device=None)``, the rules' own path (``acquire_device``); in CPU mode each holds
``claim_gpu`` on one lock file standing for one GPU and runs on the CPU.

``python -m benchmarks.gpu_check_locks lock-job ...`` is one of the two jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.gpu_check_common import (
    ROOT,
    TITLES,
    CheckResult,
    WorkerContext,
    check_device,
    mode_config,
    save_random_model,
    synthetic_foam,
    write_h5_volume,
)
from benchmarks.gpu_check_compute import RecordingHandler


def lock_job_command(ctx: WorkerContext, paths: dict, k: int, inference_config: dict) -> list[str]:
    """The command of job ``k`` of (e): it writes ``ready{k}`` once imported, then waits for ``go``."""
    return [sys.executable, "-m", "benchmarks.gpu_check_locks", "lock-job", "--mode", ctx.mode,
            "--weights", str(paths["weights"]), "--settings", str(paths["settings"]), "--input", str(paths["input"]),
            "--output", str(paths["folder"] / f"out{k}.h5"), "--report", str(paths["folder"] / f"job{k}.json"),
            "--lock-dir", str(paths["folder"] / "locks"), "--inference", json.dumps(inference_config),
            "--ready", str(paths["folder"] / f"ready{k}"), "--go", str(paths["folder"] / "go")]


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def max_difference(path_a: Path, path_b: Path) -> float:
    import h5py

    with h5py.File(path_a, "r") as fa, h5py.File(path_b, "r") as fb:
        return float(np.abs(fa["volume"][...].astype(np.float64) - fb["volume"][...]).max())


def check_locks(ctx: WorkerContext) -> CheckResult:
    """(e) Two inference jobs started at once on one GPU: the per-GPU lock runs them one after the other."""
    from resrecover.methods.infer import recover_volume

    result = CheckResult("e", TITLES["e"])
    config = mode_config(ctx.mode)
    folder = ctx.scratch("e")
    weights, settings_path = save_random_model(config, "deepnet", folder)
    source, reference = folder / "input.h5", folder / "reference.h5"
    write_h5_volume(source, tuple(ctx.sizes["locks"]["shape"]), synthetic_foam((48, 96, 96), seed=4))
    recover_volume(weights, settings_path, source, reference, config["inference"], device=check_device(ctx.mode),
                   progress=False)
    paths = {"weights": weights, "settings": settings_path, "input": source, "folder": folder}
    jobs = []
    for k in (1, 2):
        command = lock_job_command(ctx, paths, k, config["inference"])
        log_file = open(ctx.out / "logs" / f"e_job{k}.log", "w")
        jobs.append((subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT), log_file))
    start_at = release_together(folder, [proc for proc, _ in jobs], timeout_s=min(120.0, ctx.seconds_left() / 2))
    codes = []
    for proc, log_file in jobs:
        codes.append(proc.wait(timeout=max(10.0, ctx.seconds_left() - 5)))
        log_file.close()
    reports = [json.loads((folder / f"job{k}.json").read_text()) for k in (1, 2) if (folder / f"job{k}.json").is_file()]
    result.numbers = {"exit_codes": codes, "jobs": reports}
    result.add("both jobs exit 0", codes, "", "[0, 0]", codes == [0, 0])
    if len(reports) != 2:
        result.fail("a job wrote no report (see logs/e_job*.log)")
        return result
    spans = [(r["acquired"], r["released"]) for r in reports]
    seen = all(math.isfinite(acquired) for acquired, _ in spans)
    result.add("each job logged when it got the lock", seen, "", "both", seen)
    if not seen:
        result.finish("a job's lock acquisition is not in its log")
        return result
    first = min(spans)
    result.add("lock held by job 1, job 2 (s from start)",
               f"[{spans[0][0] - min(first):.1f}, {spans[0][1] - min(first):.1f}], "
               f"[{spans[1][0] - min(first):.1f}, {spans[1][1] - min(first):.1f}]")
    result.add("hold intervals overlap", intervals_overlap(*spans), "", "no", not intervals_overlap(*spans))
    late = [r["asked"] - start_at for r in reports]
    result.add("both asked for the lock at the same moment (s after the agreed time)",
               f"{late[0]:.2f}, {late[1]:.2f}", "", "both < 1 s", max(late) < 1.0)
    waited = max(r["acquired"] - r["asked"] for r in reports)
    busy = sum(any("busy" in m for m in r["messages"]) for r in reports)
    result.add("jobs that logged 'all GPU(s) busy: waiting'", busy, "", "exactly 1", busy == 1)
    result.add("the later job waited for the lock", round(waited, 1), "s", "> 0", waited > 0)
    expected = "cuda" if ctx.mode == "gpu" else "cpu"
    devices = [r["device"] for r in reports]
    result.add("devices", devices, "", f"{expected} for both", all(d.startswith(expected) for d in devices))
    for k in (1, 2):
        diff = max_difference(reference, folder / f"out{k}.h5")
        result.add(f"job {k}: max |output − single-job output|", f"{diff:.1e}", "", "≤ 1e-4", diff <= 1e-4)
    result.notes.append(
        "Documented behaviour (resrecover.methods.device): each GPU job takes an exclusive flock on one GPU's "
        "lock file; with one GPU the second job polls until the first releases it. "
        + ("On the GPU the jobs call recover_volume(device=None), the rules' own path (acquire_device)."
           if ctx.mode == "gpu" else
           "CPU mode: no GPU, so each job holds claim_gpu on one lock file standing for one GPU.")
    )
    result.finish(f"held one after the other (later job waited {waited:.1f} s), outputs equal")
    return result


def release_together(folder: Path, procs, timeout_s: float) -> float:
    """Wait until both jobs of (e) are ready (imports done), then let them go at once; return that time."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and not all((folder / f"ready{k}").exists() for k in (1, 2)):
        if any(proc.poll() is not None for proc in procs):
            break
        time.sleep(0.05)
    start_at = time.time()
    (folder / "go").write_text(f"{start_at}")
    return start_at


@contextlib.contextmanager
def cpu_mode_lock(lock_dir: Path):
    """CPU mode: hold the lock of one stand-in GPU (as acquire_device does for a real one) and run on the CPU."""
    import torch

    from resrecover.methods.device import claim_gpu

    with claim_gpu([0], lock_dir, keys=["cpu-mode-stand-in-gpu"], poll_s=0.5):
        yield torch.device("cpu")


def lock_job(args: argparse.Namespace) -> None:
    """One job of (e): recover a volume holding the GPU lock; report when the lock was held."""
    import h5py
    import torch

    from resrecover.methods.infer import recover_volume

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ["RESRECOVER_LOCK_DIR"] = str(args.lock_dir)
    inference_config = json.loads(args.inference)
    importlib.import_module("resrecover.methods.modelio")  # loaded before the start, as torch is
    if args.mode == "gpu":
        torch.cuda.init()
    report = {"started": time.time()}
    Path(args.ready).write_text("ready")
    while not Path(args.go).exists():
        time.sleep(0.01)
    report["asked"] = time.time()
    with RecordingHandler("resrecover.methods.device") as records:
        if args.mode == "gpu":  # the workflow's path: recover_volume picks and locks the GPU itself
            run = recover_volume(args.weights, args.settings, args.input, args.output, inference_config,
                                 progress=False)
            acquired = [t for t, _, message in records.records if message.startswith("running on")]
            report["acquired"] = acquired[0] if acquired else float("nan")
        else:
            with cpu_mode_lock(Path(args.lock_dir)) as device:
                report["acquired"] = time.time()
                run = recover_volume(args.weights, args.settings, args.input, args.output, inference_config,
                                     device=device, progress=False)
    report.update(released=time.time(), messages=[m for _, _, m in records.records], batch=run.batch_size)
    with h5py.File(args.output, "r") as fh:
        report["device"] = str(fh.attrs.get("device"))
    Path(args.report).write_text(json.dumps(report))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="One job of the GPU check's lock test (e).")
    parser.add_argument("command", choices=["lock-job"])
    parser.add_argument("--mode", choices=["gpu", "cpu"], required=True)
    for name in ("weights", "settings", "input", "output", "report", "lock-dir", "inference", "ready", "go"):
        parser.add_argument(f"--{name}", required=True)
    lock_job(parser.parse_args(argv))


if __name__ == "__main__":
    main()
