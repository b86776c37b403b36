"""The GPU check (benchmarks/gpu_check.py) in its CPU mode: the script the GPU machine runs, run here
at tiny sizes so that the GPU run is never its first run; and the GPU rules' resources in the profiles.

Sub-check (b) (the test preset through Snakemake from prepared CT inputs) takes minutes on two cores,
so it is left out here; `python -m benchmarks.gpu_check --cpu --checks b --out DIR` runs it by hand.
"""

import json
import math
import re
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO

CPU_CHECKS = ["a", "c", "d", "e", "f", "g"]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--cpu", "--checks", ",".join(CPU_CHECKS), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    print(f"gpu_check --cpu ({','.join(CPU_CHECKS)}): {time.time() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((out / "gpu_results.json").read_text())
    return out, report, (out / "GPU_RESULTS.md").read_text()


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_selected_check_passes_and_nothing_else_ran(cpu_run):
    _, report, _ = cpu_run
    assert report["mode"] == "cpu"
    assert list(report["checks"]) == ["a", "c", "d", "g", "e", "f"]
    failed = {c: r.get("error") or r["summary"] for c, r in report["checks"].items() if r["status"] != "PASS"}
    assert not failed, failed
    assert report["all_passed"] is True
    for result in report["checks"].values():
        assert result["rows"] and all(row["ok"] is not False for row in result["rows"])


def test_training_rates_losses_and_projection_are_real_numbers(cpu_run):
    numbers = cpu_run[1]["checks"]["a"]["numbers"]
    for method in ("deepnet", "srcnn"):
        for precision in ("float32", "bfloat16"):
            run = numbers[method][precision]
            assert _positive(run["iterations_per_s"]), (method, precision, run)
            assert run["timed_iterations"] >= 5
            assert run["projected_10k_s"] == pytest.approx(10_000 / run["iterations_per_s"])
            assert run["loss_finite"] and run["loss_last"] < run["loss_first"], (method, precision, run)
        assert numbers[method]["bfloat16"]["block"]["precision"] == "bfloat16"
    assert numbers["deepnet"]["float32"]["block"]["tile_px"] == 64


def test_richardson_lucy_paths_agree(cpu_run):
    numbers = cpu_run[1]["checks"]["c"]["numbers"]
    assert numbers["iterations"] == 30 and numbers["n"] == 32
    assert _positive(numbers["device_s"]) and _positive(numbers["cpu_s"])
    assert 0 <= numbers["interior_max_rel_diff"] <= 1e-3


def test_inference_in_memory_and_out_of_core(cpu_run):
    numbers = cpu_run[1]["checks"]["d"]["numbers"]
    for key in ("deepnet_in_memory", "srcnn_in_memory", "deepnet_out_of_core"):
        assert _positive(numbers[key]["voxels_per_s"]), key
        assert _positive(numbers[key]["peak_host_gb"]), key
        assert numbers[key]["finite"] is True, key
    assert numbers["deepnet_out_of_core"]["same_shape"] is True
    assert numbers["deepnet_out_of_core"]["shape"] == [12, 160, 160]


def test_two_jobs_held_the_lock_one_after_the_other(cpu_run):
    numbers = cpu_run[1]["checks"]["e"]["numbers"]
    assert numbers["exit_codes"] == [0, 0]
    (a0, a1), (b0, b1) = sorted((job["acquired"], job["released"]) for job in numbers["jobs"])
    assert a0 < a1 <= b0 < b1


def test_out_of_memory_is_retried_with_one_line_per_back_off(cpu_run):
    numbers = cpu_run[1]["checks"]["g"]["numbers"]
    assert len(numbers["backoffs"]) >= 1
    assert numbers["warnings"] == numbers["backoffs"]
    assert numbers["batch_after"] <= 2 and numbers["max_difference"] <= 1e-4


def test_projection_covers_the_gpu_rules(cpu_run):
    numbers = cpu_run[1]["checks"]["f"]["numbers"]
    assert {"train", "recover_network", "richardson_lucy"} <= set(numbers["gpu_s_per_rule"])
    for key in ("gpu_s", "simulation_s", "other_cpu_s", "total_s", "h100_upper_s"):
        assert _positive(numbers[key]), key
    assert numbers["total_s"] == pytest.approx(numbers["gpu_s"] + numbers["simulation_s"] + numbers["other_cpu_s"])


def test_markdown_has_a_pass_line_per_check_and_says_what_was_not_run(cpu_run):
    out, _, markdown = cpu_run
    for check in CPU_CHECKS:
        assert re.search(rf"^\| \({check}\) \| .+ \| \*\*PASS\*\* \| \d+ \| .+ \|$", markdown, re.M), check
        assert f"## ({check}) " in markdown
    assert "(b) The test preset through Snakemake" in markdown and "not selected" in markdown
    assert "ASTRA backend" in markdown
    assert "M voxels/s" in markdown and "it/s" in markdown
    assert (out / "logs" / "a.log").is_file() and (out / "parts" / "f.json").is_file()


def test_without_cuda_the_gpu_mode_stops_with_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "GPU_RESULTS.md").exists()


def test_snakemake_job_blocks_are_parsed():
    from benchmarks.gpu_check_workflow import parse_job_blocks, uses_gpu

    text = (
        "[Mon Nov 30 02:32:24 2026]\n"
        "localrule train:\n"
        "    input: results/recon/train/sigma3.h5, results/recon/train/sigma1.h5\n"
        "    output: results/models/deepnet/sigma3/member0/model.safetensors, results/models/deepnet/sigma3/member0/model.json\n"
        "    log: logs/train/deepnet/sigma3/member0.log\n"
        "    wildcards: network=deepnet, sigma=3, member=0\n"
        "    resources: tmpdir=/tmp, gpu=1, mem_mb=16000, runtime=240\n"
        "Shell command: None\n\n"
        "rule phantom:\n"
        "    output: results/phantoms/train.h5\n"
        "    resources: tmpdir=/tmp, mem_mb=8000\n"
    )
    train, phantom = parse_job_blocks(text)
    assert train["rule"] == "train" and train["log"] == ["logs/train/deepnet/sigma3/member0.log"]
    assert train["wildcards"] == {"network": "deepnet", "sigma": "3", "member": "0"} and uses_gpu(train)
    assert train["input"][1] == "results/recon/train/sigma1.h5"
    assert phantom["output"] == ["results/phantoms/train.h5"] and not uses_gpu(phantom)


def test_brought_wheels_cover_snakemake_and_leave_out_what_the_gpu_machine_has():
    from benchmarks.gpu_check_wheels import pinned_closure

    names = {pin.split("==")[0] for pin in pinned_closure()}
    assert {"snakemake", "jsonschema", "zarr", "tifffile", "snakemake-interface-common"} <= names
    assert not names & {"numpy", "pyyaml", "pulp", "torch"}


def test_every_gpu_rule_has_a_gpu_partition_in_the_slurm_profile():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())["set-resources"]
    gpu_rules = []
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule |localrule )", smk.read_text(), flags=re.M):
            name = re.match(r"(?:local)?rule (\w+):", block)
            if name and re.search(r"^\s+gpu=1,", block, re.M):
                gpu_rules.append(name.group(1))
    # `use rule X as Y with:` makes Y a GPU rule when X is one (recover_ensemble_member)
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for base, derived in re.findall(r"^use rule (\w+) as (\w+)", smk.read_text(), flags=re.M):
            if base in gpu_rules:
                gpu_rules.append(derived)
    assert {"train", "recover_network", "richardson_lucy", "recover_ensemble_member"} <= set(gpu_rules)
    wrong = [r for r in gpu_rules if profile.get(r, {}).get("gpu") != 1 or "slurm_partition" not in profile.get(r, {})]
    assert not wrong, f"GPU rules without gpu: 1 and a GPU partition in profiles/slurm: {wrong}"
