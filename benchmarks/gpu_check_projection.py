"""(f) The paper preset's wall time on one GPU, projected from (a), (c), (d) and the CPU stages' measured costs.

The model (:data:`MODEL_NOTE`, repeated in the report): GPU jobs one after another on the one GPU at
the measured rates, plus a fixed overhead per job; the simulation and the other CPU rules from
measurements of the development machine scaled to the paper's sizes and spread over 16 cores; no
overlap between the CPU and the GPU parts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.gpu_check_common import PAPER_CONFIG, ROOT, TITLES, CheckResult, WorkerContext, load_part, save_part
from benchmarks.gpu_check_workflow import paper_plan, uses_gpu

GOAL_S = 2 * 3600
CPU_CORES = 16
GPU_JOB_OVERHEAD_S = 15.0
H100_SLOWDOWN = 4.8 / 3.35
SIMULATION_GROUPS = {"phantom", "project_phantom", "degrade_scan", "fdk", "ground_truth", "scan"}
GPU_GROUPS = {"train", "recover", "trust", "pairs", "tuning", "learning_curve", "learning_curves"}
QUICK_CONFIG = ROOT / "config" / "quick.yaml"
BENCH_RESULTS = ROOT / "benchmarks" / "results.json"
MODEL_NOTE = (
    f"Model: GPU jobs (rules with gpu=1 in a dry run of config/config.yaml) run one after another: a training "
    f"job takes its iterations (training_settings for its network and σ) at (a)'s rate in the configured "
    f"precision, a recovery the volume's voxels at (d)'s rate, Richardson-Lucy (c)'s device time scaled by "
    f"voxels × iterations; each GPU job adds {GPU_JOB_OVERHEAD_S:.0f} s (start, imports, CUDA context, I/O); a "
    f"σ override that changes the network (e.g. more slices) is projected at the measured default network's rate. "
    f"The simulation (no GPU there: RTK on the CPU) is its voxel-views (clean projections, one FDK per σ and "
    f"the target, ground-truth projections and FDK) at the RTK rate of benchmarks/results.json (fdk row, "
    f"development machine) per thread × {CPU_CORES} threads; the other CPU rules are the quick preset's "
    f"CPU seconds (same file) × the voxel ratio / {CPU_CORES} cores (the trust group, mixed GPU and CPU, is "
    f"left out). CPU and GPU parts are added without overlap. H100: same SM count as the H200, 3.35 "
    f"instead of 4.8 TB/s, so the GPU part × {H100_SLOWDOWN:.2f} bounds memory-bound kernels."
)


def simulation_units(config: dict) -> float:
    """Voxel-views of one realization's simulation: projections, one FDK per σ (and target), ground truth."""
    voxels = math.prod(config["volume_shape"])
    scan = config["scan"]
    n_sigmas = len(scan["sigmas_um"]) + 1
    return voxels * (scan["n_projections"] * (1 + n_sigmas) + 2 * scan["n_projections_ground_truth"])


def quick_breakdown() -> list[dict]:
    """Per-rule-group CPU seconds of the last quick-preset benchmark (benchmarks/results.json)."""
    rows = json.loads(BENCH_RESULTS.read_text())["rows"]
    return rows["quick_preset"]["breakdown"]


def rtk_rate_per_thread() -> float | None:
    """RTK's voxel-view updates per second per thread from the fdk row of benchmarks/results.json."""
    import re

    row = json.loads(BENCH_RESULTS.read_text())["rows"].get("fdk", {})
    for _, text in row.get("extra_fields", []):
        found = re.search(r"([\d.]+) G voxel-view updates/s on (\d+) threads", str(text))
        if found:
            return float(found.group(1)) * 1e9 / int(found.group(2))
    return None


def cpu_stage_seconds(paper: dict, jobs: list[dict]) -> dict:
    """CPU seconds of the simulation and of the other CPU rules at the paper's sizes (see :data:`MODEL_NOTE`)."""
    from resrecover.config import load_config

    quick = load_config(QUICK_CONFIG)
    groups = {row["rule"]: row for row in quick_breakdown()}
    rest_cpu = sum(float(row["cpu_time_s"]) for name, row in groups.items()
                   if name not in SIMULATION_GROUPS | GPU_GROUPS)
    paper_realizations = sum(1 for job in jobs if job["rule"] == "phantom") or len(paper["realizations"])
    units = simulation_units(paper) * paper_realizations
    rate = rtk_rate_per_thread()
    if rate is None:  # no fdk row: the quick preset's simulation seconds per voxel-view instead
        simulated = int(groups.get("phantom", {}).get("jobs", 2))
        sim_cpu = sum(float(row["cpu_time_s"]) for name, row in groups.items() if name in SIMULATION_GROUPS)
        rate = simulation_units(quick) * simulated / sim_cpu
    voxel_ratio = math.prod(paper["volume_shape"]) / math.prod(quick["volume_shape"])
    return {"simulation_cpu_s": units / rate, "voxel_views": units, "rtk_voxel_views_per_s_per_thread": rate,
            "other_cpu_s": rest_cpu * voxel_ratio, "paper_realizations": paper_realizations,
            "quick_other_cpu_s": rest_cpu, "voxel_ratio": voxel_ratio}


def measured_rates(out: Path) -> dict:
    """Rates from the parts of (a), (c) and (d); raises naming the part that is missing."""
    parts = {check: load_part(out, check) for check in ("a", "c", "d")}
    missing = [check for check, part in parts.items() if not part or not part["numbers"]]
    if missing:
        raise RuntimeError(f"no numbers from ({', '.join(missing)}): nothing to project from")
    a, c, d = (parts[k]["numbers"] for k in ("a", "c", "d"))
    deepnet_infer = d.get("deepnet_out_of_core") or d["deepnet_in_memory"]
    return {
        "train_it_per_s": {m: {p: v["iterations_per_s"] for p, v in a[m].items()} for m in a},
        "infer_voxels_per_s": {"deepnet": deepnet_infer["voxels_per_s"],
                               "srcnn": d["srcnn_in_memory"]["voxels_per_s"]},
        "rl_s_per_voxel_iteration": c["device_s"] / (c["n"] ** 3 * c["iterations"]),
    }


def training_rate(rates: dict, network: str, settings: dict) -> float:
    """(a)'s iterations per second for the network's configured precision (and NHWC option, where measured)."""
    measured = rates["train_it_per_s"][network]
    precision = settings.get("precision", "float32")
    nhwc = f"{precision}+channels_last"
    return measured[nhwc] if settings.get("channels_last") and nhwc in measured else measured[precision]


def rl_job_iterations(paper: dict, sigma: float | None) -> int:
    """Richardson-Lucy's iterations for a job at σ (the config's per-σ overrides where it has them)."""
    try:
        from resrecover.config import rl_iterations
    except ImportError:
        return int(paper["rl"]["iterations"])
    return int(rl_iterations(paper, sigma)) if sigma is not None else int(paper["rl"]["iterations"])


def gpu_job_seconds(job: dict, paper: dict, rates: dict) -> float | None:
    """Projected seconds of one GPU job of the paper preset; None for a rule the model does not cover."""
    from resrecover.methods.training import training_settings

    rule, wildcards = job["rule"], job["wildcards"]
    network = wildcards.get("network") or wildcards.get("pair_method") or wildcards.get("method")
    sigma = float(wildcards["sigma"]) if "sigma" in wildcards else None
    voxels = math.prod(paper["volume_shape"])
    if "train" in rule and network in rates["train_it_per_s"]:
        settings = training_settings(paper, network, sigma)
        return int(settings["iterations"]) / training_rate(rates, network, settings) + GPU_JOB_OVERHEAD_S
    if "recover" in rule and network in rates["infer_voxels_per_s"]:
        return voxels / rates["infer_voxels_per_s"][network] + GPU_JOB_OVERHEAD_S
    if rule == "richardson_lucy":
        return voxels * rl_job_iterations(paper, sigma) * rates["rl_s_per_voxel_iteration"] + GPU_JOB_OVERHEAD_S
    return None


def check_projection(ctx: WorkerContext, site: Path | None = None) -> CheckResult:
    """(f) Projected wall time of the paper preset on one GPU of this kind, against ≤ 2 h on one H100."""
    from resrecover.config import load_config

    result = CheckResult("f", TITLES["f"])
    paper = load_config(PAPER_CONFIG)
    rates = measured_rates(ctx.out)
    jobs = paper_plan(ctx, site)
    gpu_s, uncovered, per_rule = 0.0, {}, {}
    for job in jobs:
        if job["rule"] in SIMULATION_GROUPS or not uses_gpu(job):
            continue
        seconds = gpu_job_seconds(job, paper, rates)
        if seconds is None:
            uncovered[job["rule"]] = uncovered.get(job["rule"], 0) + 1
            continue
        gpu_s += seconds
        per_rule[job["rule"]] = per_rule.get(job["rule"], 0.0) + seconds
    cpu = cpu_stage_seconds(paper, jobs)
    simulation_s, other_s = cpu["simulation_cpu_s"] / CPU_CORES, cpu["other_cpu_s"] / CPU_CORES
    total_s = simulation_s + gpu_s + other_s
    h100_s = simulation_s + gpu_s * H100_SLOWDOWN + other_s
    result.numbers = {"rates": rates, "gpu_s_per_rule": per_rule, "gpu_s": gpu_s, "simulation_s": simulation_s,
                      "other_cpu_s": other_s, "total_s": total_s, "h100_upper_s": h100_s, "cpu": cpu,
                      "rules_not_projected": uncovered, "jobs": len(jobs)}
    for rule, seconds in sorted(per_rule.items(), key=lambda kv: -kv[1]):
        count = sum(1 for j in jobs if j["rule"] == rule)
        result.add(f"GPU: {rule} ({count} jobs)", round(seconds / 60, 1), "min")
    result.add(f"CPU: simulation of {cpu['paper_realizations']} realizations on {CPU_CORES} cores",
               round(simulation_s / 60, 1), "min")
    result.add(f"CPU: evaluation, figures, tables on {CPU_CORES} cores", round(other_s / 60, 1), "min")
    result.add("projected wall time on this GPU", round(total_s / 3600, 2), "h")
    judged = ctx.mode == "gpu"
    result.add(f"on one H100 (GPU part × {H100_SLOWDOWN:.2f}, upper bound)", round(h100_s / 3600, 2), "h",
               "≤ 2 h" if judged else "not judged in CPU mode (tiny networks)",
               (h100_s <= GOAL_S) if judged else None)
    if uncovered:
        result.notes.append(f"GPU rules not in the model (not projected): {uncovered}.")
    result.notes.append(MODEL_NOTE)
    result.add("every term finite", all(math.isfinite(v) for v in (gpu_s, simulation_s, other_s)), "", "yes",
               all(math.isfinite(v) for v in (gpu_s, simulation_s, other_s)))
    save_part(ctx.out, result)
    result.finish(f"{total_s / 3600:.2f} h on this GPU, ≤ {h100_s / 3600:.2f} h on one H100 "
                  f"(GPU {gpu_s / 3600:.2f} h, simulation {simulation_s / 3600:.2f} h, rest {other_s / 3600:.2f} h)")
    return result

