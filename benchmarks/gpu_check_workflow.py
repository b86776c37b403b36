"""Sub-checks of the GPU check that go through Snakemake: (b) the test preset, (f) the paper preset's projection,
and ``--prepare`` (on a CPU machine: the test preset's CT inputs, a CPU reference run, the wheels to bring).

The GPU machine has no itk-rtk nor astra-toolbox, so the simulation stage (phantoms and FDK
reconstructions, everything under ``results/phantoms`` and ``results/recon``) is made beforehand on
a CPU machine and brought along; Snakemake there starts from those files and runs every later rule.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.gpu_check_common import (
    PAPER_CONFIG,
    ROOT,
    TEST_CONFIG,
    TITLES,
    CheckResult,
    WorkerContext,
    save_part,
    usable_cores,
)

#: Folders of the simulation stage's outputs: made on a CPU machine, brought to the GPU machine.
SIMULATION_FOLDERS = ("results/phantoms", "results/recon")
#: (b): the GPU run's DeepNet metrics must stay this close to the CPU run's (see ``METRICS_NOTE``).
SSIM_TOLERANCE = 0.002
PSNR_TOLERANCE_DB = 0.05
METRICS_NOTE = (
    f"'Close' is |ΔSSIM| ≤ {SSIM_TOLERANCE} and |ΔPSNR| ≤ {PSNR_TOLERANCE_DB} dB per (realization, σ). Training "
    "is not bit-identical across devices: cuDNN runs other convolution algorithms, in TF32 (10-bit mantissa), "
    "so every step differs in the 3rd-4th digit. Measured on the CPU, training the test preset's DeepNet in "
    "bf16 (8-bit mantissa, a coarser change than TF32) moved its metrics by at most 6e-5 SSIM and 0.0014 dB; "
    "the tolerance is ~35× that. It stays below the gap between DeepNet and its FDK input (row above), so a "
    "device path that lost the network (input passed through) or its normalization would fail."
)
SCHEDULER = ("--scheduler", "greedy")  # the ILP scheduler needs pulp (16 MB), which is not brought along


# ------------------------------------------------------------------------------ Snakemake helpers
def snakemake_command(*args) -> list[str]:
    """The Snakemake CLI of this interpreter on the project's Snakefile."""
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *map(str, args)]


def run_snakemake(args, log_path: Path, timeout_s: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Snakemake from the repository root; stdout and stderr go (merged) to ``log_path`` and are returned.

    At ``timeout_s`` Snakemake and its running jobs (one process group) are killed and TimeoutError raised.
    """
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(snakemake_command(*args), cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"snakemake stopped after {timeout_s:.0f} s; see {log_path}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, log_path.read_text(), "")


_JOB_HEADER = re.compile(r"^(?:local)?rule (\S+):$")


def _split_pairs(text: str) -> dict[str, str]:
    pairs = {}
    for item in text.split(", "):
        key, sep, value = item.partition("=")
        if sep:
            pairs[key.strip()] = value.strip()
    return pairs


def parse_job_blocks(text: str) -> list[dict]:
    """The jobs Snakemake printed (``rule X:`` followed by indented ``key: value`` lines), dry-run or real.

    Each job: ``rule``, ``input``/``output``/``log`` (lists), ``wildcards`` and ``resources`` (dicts).
    """
    jobs: list[dict] = []
    current = None
    for line in text.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            current = {"rule": header.group(1), "input": [], "output": [], "log": [], "wildcards": {},
                       "resources": {}}
            jobs.append(current)
        elif current is not None and line.startswith("    ") and ": " in line:
            key, _, value = line.strip().partition(": ")
            if key in ("input", "output", "log"):
                current[key] = [v.strip() for v in value.split(", ") if v.strip()]
            elif key in ("wildcards", "resources"):
                current[key] = _split_pairs(value)
        else:
            current = None
    return jobs


def uses_gpu(job: dict) -> bool:
    try:
        return int(job["resources"].get("gpu", 0)) >= 1
    except ValueError:
        return False


def summary_outputs(config_path: Path, directory: Path, env: dict | None = None) -> list[str]:
    """Every output file of the config's DAG, from ``snakemake --summary`` (nothing is run)."""
    proc = subprocess.run(snakemake_command("--summary", "--cores", 1, "--configfile", config_path,
                                            "--directory", directory),
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake --summary failed: {(proc.stdout + proc.stderr).strip().splitlines()[-1:]}")
    return [line.split("\t")[0] for line in proc.stdout.splitlines()[1:] if "\t" in line]


def job_environment(site: Path | None, lock_dir: Path) -> dict:
    """The environment of a Snakemake run: the project's source (and the brought wheels) importable, own GPU locks."""
    paths = [str(ROOT / "src")] + ([str(site)] if site else []) + [os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p), RESRECOVER_LOCK_DIR=str(lock_dir))


# ------------------------------------------------------------------------------ CT inputs
def copy_simulation_outputs(source_root: Path, target_root: Path) -> list[Path]:
    """Copy ``results/phantoms`` and ``results/recon`` and date them phantoms first, so none looks stale."""
    copied = []
    for folder in SIMULATION_FOLDERS:
        if (source_root / folder).is_dir():
            shutil.copytree(source_root / folder, target_root / folder, dirs_exist_ok=True)
            copied += sorted(p for p in (target_root / folder).rglob("*") if p.is_file())
    now = time.time()
    for path in copied:
        age = 200 if "/phantoms/" in str(path) else 100
        os.utime(path, (now - age, now - age))
    return copied


def make_ct_inputs(target_root: Path, scratch: Path, timeout_s: float, env: dict | None = None) -> list[Path]:
    """Run the test preset's simulation stage on this (CPU) machine; copy its outputs under ``target_root``."""
    run_dir = scratch / "simulate"
    targets = [p for p in summary_outputs(TEST_CONFIG, run_dir, env) if p.startswith(SIMULATION_FOLDERS)]
    if not targets:
        raise RuntimeError(f"{TEST_CONFIG}: its DAG has no outputs under {' or '.join(SIMULATION_FOLDERS)}")
    log_path = scratch / "simulate.log"
    proc = run_snakemake(["--cores", usable_cores(), "--configfile", TEST_CONFIG, "--directory", run_dir,
                          *SCHEDULER, *sorted(set(targets))], log_path, timeout_s, env)
    if proc.returncode != 0:
        raise RuntimeError(f"the test preset's simulation failed; see {log_path}")
    return copy_simulation_outputs(run_dir, target_root)


def find_ct_inputs(ctx: WorkerContext, env: dict) -> Path:
    """The folder holding ``results/recon``: the prepared one, or (CPU mode only) one made now."""
    if ctx.prepared and (ctx.prepared / "ct" / "results" / "recon").is_dir():
        return ctx.prepared / "ct"
    if ctx.mode == "gpu":
        raise RuntimeError(f"{ctx.prepared or '--prepared'}: no ct/results/recon; run `make gpu-check-prepare` "
                           "on a CPU machine and bring the folder along")
    made = ctx.scratch("b") / "ct"
    if not (made / "results" / "recon").is_dir():
        make_ct_inputs(made, ctx.scratch("b"), ctx.seconds_left() - 30, env)
    return made


# ------------------------------------------------------------------------------ (b) the test preset
def read_volume_info(path: Path) -> tuple[tuple[int, ...], bool] | None:
    """Shape and finiteness of an HDF5 file's ``volume`` dataset; None when it has none."""
    import h5py

    with h5py.File(path, "r") as fh:
        if "volume" not in fh:
            return None
        data = fh["volume"][...]
    return data.shape, bool(np.isfinite(data).all())


def device_named_in_log(log_path: Path, mode: str) -> bool:
    """Whether a GPU rule's log says it ran on CUDA (GPU mode) or on the CPU (CPU mode)."""
    if not log_path.is_file():
        return False
    text = log_path.read_text(errors="replace")
    if mode == "gpu":
        return bool(re.search(r"\bcuda:\d+\b", text)) and "no CUDA device" not in text
    return bool(re.search(r"\bCPU\b|\bcpu\b|scipy\.fft", text))


def check_gpu_job_outputs(run_dir: Path, job: dict) -> list[str]:
    """Problems of one GPU job's outputs: volumes not finite or of another shape than the recon input, bad losses.

    Outputs no longer there are temporary ones that Snakemake removed once used (checked by their consumers).
    """
    problems = []
    recon_inputs = [p for p in job["input"] if p.startswith("results/recon/") and p.endswith(".h5")]
    for output in job["output"]:
        path = run_dir / output
        if not path.is_file():
            continue
        if output.endswith(".h5"):
            info = read_volume_info(path)
            if info is None:
                continue
            if not info[1]:
                problems.append(f"{output}: not finite")
            if recon_inputs and info[0] != read_volume_info(run_dir / recon_inputs[0])[0]:
                problems.append(f"{output}: shape {info[0]} differs from its input {recon_inputs[0]}")
        elif output.endswith("train_log.csv"):
            import pandas as pd

            losses = pd.read_csv(path)["loss"].to_numpy(dtype=float)
            if not np.isfinite(losses).all():
                problems.append(f"{output}: losses not finite")
    return problems


def compare_metrics(table: Path, reference: Path, method: str) -> dict:
    """Largest |ΔSSIM| and |ΔPSNR| of ``method``'s rows between two image_metrics.csv, per (realization, σ)."""
    import pandas as pd

    keys = ["method", "realization", "sigma_um"]
    ours, theirs = pd.read_csv(table), pd.read_csv(reference)
    merged = ours[ours.method == method].merge(theirs[theirs.method == method], on=keys, suffixes=("", "_cpu"))
    return {"rows": len(merged), "max_abs_dssim": float((merged.ssim - merged.ssim_cpu).abs().max()),
            "max_abs_dpsnr_db": float((merged.psnr - merged.psnr_cpu).abs().max()),
            "ssim": merged.ssim.round(4).tolist(), "ssim_cpu": merged.ssim_cpu.round(4).tolist()}


def input_gap_db(reference: Path) -> float:
    """Smallest PSNR difference between DeepNet and the FDK input it recovers, over the reference's rows."""
    import pandas as pd

    table = pd.read_csv(reference)
    keys = ["realization", "sigma_um"]
    merged = table[table.method == "deepnet"].merge(table[table.method == "fdk"], on=keys, suffixes=("", "_fdk"))
    return float((merged.psnr - merged.psnr_fdk).abs().min())


def run_test_preset(ctx: WorkerContext, ct_root: Path, env: dict, result: CheckResult) -> tuple[Path, list[dict]]:
    """Copy the CT inputs, refuse to re-simulate (dry run), run the rest; return the run folder and its jobs."""
    run_dir = ctx.scratch("b") / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    copy_simulation_outputs(ct_root, run_dir)
    cores = 16 if ctx.mode == "gpu" else usable_cores()
    args = ["--cores", cores, "--resources", "gpu=1", "--configfile", TEST_CONFIG, "--directory", run_dir, *SCHEDULER]
    logs = ctx.out / "logs"
    dry = run_snakemake(["-n", *args], logs / "b_dry_run.log", 120, env)
    planned = parse_job_blocks(dry.stdout)
    resimulated = sorted({j["rule"] for j in planned if any(o.startswith(SIMULATION_FOLDERS) for o in j["output"])})
    result.add("dry run: jobs planned", len(planned), "", "none re-simulates", dry.returncode == 0 and not resimulated)
    if dry.returncode != 0 or resimulated:
        raise RuntimeError(f"the dry run would re-run the simulation ({resimulated}) or failed; see logs/b_dry_run.log")
    started = time.perf_counter()
    proc = run_snakemake(args, logs / "b_snakemake.log", ctx.seconds_left() - 15, env)
    result.numbers["snakemake_s"] = time.perf_counter() - started
    result.add(f"snakemake --cores {cores} --resources gpu=1", f"exit {proc.returncode}",
               f"{result.numbers['snakemake_s']:.0f} s", "exit 0", proc.returncode == 0)
    return run_dir, parse_job_blocks(proc.stdout)


def keep_gpu_job_logs(ctx: WorkerContext, run_dir: Path, gpu_jobs: list[dict]) -> None:
    """Copy the GPU jobs' logs into the results folder (they are the evidence of the device used)."""
    for job in gpu_jobs:
        for log in job["log"]:
            if (run_dir / log).is_file():
                target = ctx.out / "logs" / "b_jobs" / log
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(run_dir / log, target)


def check_workflow(ctx: WorkerContext, site: Path | None = None) -> CheckResult:
    """(b) The test preset through Snakemake from prepared CT inputs: every GPU rule on the device, outputs right."""
    result = CheckResult("b", TITLES["b"])
    env = job_environment(site, ctx.scratch("b") / "locks")
    ct_root = find_ct_inputs(ctx, env)
    run_dir, jobs = run_test_preset(ctx, ct_root, env, result)
    save_part(ctx.out, result)
    gpu_jobs = [j for j in jobs if uses_gpu(j)]
    keep_gpu_job_logs(ctx, run_dir, gpu_jobs)
    rules = sorted({j["rule"] for j in gpu_jobs})
    result.numbers.update(jobs=len(jobs), gpu_jobs=len(gpu_jobs), gpu_rules=rules)
    result.add("GPU jobs run (gpu=1 rules)", f"{len(gpu_jobs)} of {len(jobs)} jobs: {', '.join(rules)}", "",
               "train, recover_network, richardson_lucy among them",
               {"train", "recover_network", "richardson_lucy"} <= set(rules))
    wrong_device = [log for j in gpu_jobs for log in j["log"][:1] if not device_named_in_log(run_dir / log, ctx.mode)]
    named = f"{len(gpu_jobs) - len(wrong_device)} of {len(gpu_jobs)}"
    result.add(f"GPU jobs whose log names {'cuda:N' if ctx.mode == 'gpu' else 'the CPU'}", named, "", "all",
               not wrong_device and bool(gpu_jobs))
    result.numbers["logs_without_device"] = wrong_device
    problems = [p for j in gpu_jobs for p in check_gpu_job_outputs(run_dir, j)]
    result.numbers["output_problems"] = problems
    result.numbers["outputs_checked"] = sum(
        (run_dir / o).is_file() and o.endswith((".h5", "train_log.csv")) for j in gpu_jobs for o in j["output"])
    checked = result.numbers["outputs_checked"]
    result.add(f"GPU outputs ({checked} volumes and training logs): finite, same shape as their recon input",
               "none wrong" if not problems else problems[:5], "", "none wrong", not problems and checked > 0)
    compare_with_reference(ctx, run_dir, result)
    result.finish(f"{len(gpu_jobs)} GPU jobs ({', '.join(rules)}) in {result.numbers.get('snakemake_s', 0):.0f} s")
    return result


def compare_with_reference(ctx: WorkerContext, run_dir: Path, result: CheckResult) -> None:
    """DeepNet's (and, for information, SRCNN's and RL's) metrics against the CPU reference run's."""
    table = run_dir / "results" / "tables" / "image_metrics.csv"
    reference = ctx.prepared / "cpu_reference" / "image_metrics.csv" if ctx.prepared else None
    if reference is None or not reference.is_file():
        result.notes.append("No CPU reference (image_metrics.csv of `--prepare`): metrics not compared.")
        return
    if not table.is_file():
        result.add("image_metrics.csv written", False, "", "yes", False)
        return
    gap = input_gap_db(reference)
    result.numbers["deepnet_vs_fdk_gap_db"] = gap
    result.add("CPU run: smallest |PSNR(DeepNet) − PSNR(FDK input)|", f"{gap:.3f} dB", "",
               f"> {PSNR_TOLERANCE_DB} dB (else the tolerance could not tell them apart)", gap > PSNR_TOLERANCE_DB)
    for method in ("deepnet", "srcnn", "rl"):
        numbers = compare_metrics(table, reference, method)
        result.numbers[f"{method}_vs_cpu"] = numbers
        judged = method == "deepnet"
        close = numbers["max_abs_dssim"] <= SSIM_TOLERANCE and numbers["max_abs_dpsnr_db"] <= PSNR_TOLERANCE_DB
        result.add(f"{method}: max |ΔSSIM|, |ΔPSNR| vs the CPU run ({numbers['rows']} rows)",
                   f"{numbers['max_abs_dssim']:.4f}, {numbers['max_abs_dpsnr_db']:.3f} dB", "",
                   f"≤ {SSIM_TOLERANCE}, ≤ {PSNR_TOLERANCE_DB} dB" if judged else "",
                   (close and numbers["rows"] > 0) if judged else None)
    result.notes.append(METRICS_NOTE)


# ------------------------------------------------------------------------------ --prepare
def save_cpu_reference(run_dir: Path, folder: Path) -> None:
    """Keep the CPU run's image metrics (what (b) compares the GPU run with)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "results" / "tables" / "image_metrics.csv", folder / "image_metrics.csv")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prepare(folder: Path, wheels_only: bool = False, python_version: str | None = None) -> dict:
    """On a CPU machine: CT inputs of the test preset, a CPU reference run and the wheels, all under ``folder``."""
    from benchmarks.gpu_check_wheels import TARGET_PYTHON, download_wheels

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"made": time.strftime("%Y-%m-%d %H:%M")}
    manifest["wheels"] = download_wheels(folder / "wheels", python_version or TARGET_PYTHON)
    if not wheels_only:
        scratch = folder / "_scratch"
        ctx = WorkerContext(mode="cpu", out=scratch / "out", workdir=scratch, prepared=folder)
        (ctx.out / "logs").mkdir(parents=True, exist_ok=True)
        env = job_environment(None, scratch / "locks")
        shutil.rmtree(folder / "ct", ignore_errors=True)
        make_ct_inputs(folder / "ct", scratch, 3600, env)
        ctx.deadline = time.time() + 3600
        result = CheckResult("b", TITLES["b"])
        run_dir, _ = run_test_preset(ctx, folder / "ct", env, result)
        if result.rows[-1]["ok"] is not True:
            raise RuntimeError(f"the CPU reference run failed; see {ctx.out / 'logs' / 'b_snakemake.log'}")
        save_cpu_reference(run_dir, folder / "cpu_reference")
        shutil.rmtree(scratch, ignore_errors=True)
    total = folder_bytes(folder)
    manifest.update(total_mib=round(total / 2**20, 1), limit_mib=64)
    (folder / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    if total > 48 * 2**20:
        raise RuntimeError(f"{folder}: {total / 2**20:.1f} MiB; expected well under the 64 MiB that can be brought")
    return manifest


# ------------------------------------------------------------------------------ (f) projection
def paper_plan(ctx: WorkerContext, site: Path | None) -> list[dict]:
    """The paper preset's jobs from a dry run in an empty folder (rule, wildcards, resources)."""
    folder = ctx.scratch("f") / "paper_dry_run"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = job_environment(site, folder / "locks")
    proc = run_snakemake(["-n", "--cores", 16, "--resources", "gpu=1", "--configfile", PAPER_CONFIG,
                          "--directory", folder], ctx.out / "logs" / "f_paper_dry_run.log", 300, env)
    jobs = parse_job_blocks(proc.stdout)
    if proc.returncode != 0 or not jobs:
        raise RuntimeError("the paper preset's dry run failed; see logs/f_paper_dry_run.log")
    return jobs
