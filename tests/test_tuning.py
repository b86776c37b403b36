"""Settings are chosen on `validation`, never on `alternate`: the realization, the DAG, the learning curves."""

import copy
import functools
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TEST_CONFIG, run_snakemake
from scipy import ndimage as ndi

from resrecover.config import ConfigError, labelled_realizations, load_config, realization_seeds
from resrecover.evaluate.learning_curve import (
    CURVE_COLUMNS,
    ValidationSet,
    collect_learning_curves,
    default_snapshots,
    learning_curve,
    settings_variant,
    tuning_sigmas,
)
from resrecover.evaluate.stages import segment_ground_truth
from resrecover.io import write_volume
from resrecover.phantom.foam import generate_foam

REPO = Path(__file__).resolve().parents[1]
PRESETS = [REPO / "config" / "config.yaml", REPO / "config" / "quick.yaml", REPO / "tests" / "config" / "test.yaml"]
SNAKEMAKE = Path(__import__("sys").executable).with_name("snakemake")
#: rules whose outputs are settings or models: none may see the alternate realization, even indirectly
# train: every member of every ensemble; trust_model: the spurious-pore classifier (its labels and calibration)
CHOOSING_RULES = {"train", "learning_curve", "trust_model"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_has_a_validation_realization_with_a_seed_of_its_own(preset):
    config = load_config(preset)
    seeds = realization_seeds(config)
    assert {"train", "validation", "alternate", "transfer"} <= set(seeds)
    assert len(set(seeds.values())) == len(seeds)
    assert tuning_sigmas(config) and all(s in config["scan"]["sigmas_um"] for s in tuning_sigmas(config))


def upstream_files(job: dict, producer: dict) -> set[str]:
    """Every file upstream of ``job`` in a dry run's jobs, through ``producer`` (file -> the job making it)."""
    seen, stack = set(), list(job["input"])
    while stack:
        path = stack.pop()
        if path in seen:
            continue
        seen.add(path)
        stack.extend(producer[path]["input"] if path in producer else [])
    return seen


@functools.lru_cache(maxsize=None)
def _dry_run_jobs(configfile: Path | tuple[Path, ...], *targets: str) -> list[dict]:
    """Every job of a forced dry run as {'rule', 'input', 'output'} (Snakemake's own job listing).

    ``configfile``: a preset, or a preset and its overlays in order. Cached: each dry run of a preset
    costs ~11 s, and several tests walk the same DAG (read only).
    """
    configfiles = configfile if isinstance(configfile, tuple) else (configfile,)
    proc = subprocess.run(
        [str(SNAKEMAKE), *targets, "-n", "--forceall", "--configfile", *map(str, configfiles)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    jobs, job, key = [], None, None
    for line in proc.stdout.splitlines():
        head = re.match(r"^(?:local)?rule (\w+):$", line)
        if head:
            job = {"rule": head.group(1), "input": [], "output": []}
            jobs.append(job)
            continue
        field = re.match(r"^\s+(input|output|log|jobid|benchmark|reason|wildcards|threads|resources|priority): ?(.*)$", line)
        if job is not None and field:
            key = field.group(1)
            if key in ("input", "output"):
                job[key] += [p.strip() for p in field.group(2).split(",") if p.strip()]
    return jobs


@pytest.mark.parametrize("preset", PRESETS[:2], ids=lambda p: p.name)
def test_no_training_or_tuning_job_depends_on_the_alternate_realization(preset):
    # with the transfer structure's jobs too (make transfer): nothing is fitted on it either
    jobs = _dry_run_jobs(preset, "all", "learning_curves", "trust_transfer")
    producer = {out: job for job in jobs for out in job["output"]}
    choosing = [job for job in jobs if job["rule"] in CHOOSING_RULES]
    assert {job["rule"] for job in choosing} >= {"train", "learning_curve", "trust_model"}
    assert any("validation" in p for job in choosing for p in job["input"])  # the curves do read validation
    for job in choosing:
        for path in upstream_files(job, producer):
            assert "alternate" not in path and "/transfer" not in path, (
                f"rule {job['rule']} ({job['output'][0]}) depends on {path}"
            )


def test_extra_labelled_foams_only_fit_the_classifier():
    """`make labelled-foams` (config/labelled.yaml over the quick preset): every extra foam is
    simulated, recovered and labelled for the classifier, and nothing is trained or chosen on it."""
    overlay = REPO / "config" / "labelled.yaml"
    names = labelled_realizations(yaml.safe_load(overlay.read_text()))
    assert len(names) >= 2
    jobs = _dry_run_jobs((PRESETS[1], overlay), "all")
    producer = {out: job for job in jobs for out in job["output"]}
    fitted = [job for job in jobs if job["rule"] == "trust_model"]
    assert fitted
    for job in fitted:
        read = {Path(p).parts[-2] for p in job["input"]}
        assert read >= {"train", "validation", *names}, read
        assert not any("alternate" in p for p in upstream_files(job, producer))
    on_labelled = lambda paths: [p for p in paths if any(n in Path(p).parts for n in names)]  # noqa: E731
    assert on_labelled(p for job in fitted for p in job["input"])
    for job in jobs:
        if job["rule"] in CHOOSING_RULES - {"trust_model"}:  # trained and tuned without them
            assert not on_labelled(upstream_files(job, producer)), job["output"][0]
        # reported nowhere: no table or figure of the study reads them; trust_validation reads the
        # fitting tables only to refit the drop-one models it scores on alternate
        if job["rule"].startswith(("collect_", "summary_", "fig", "trust_validation")):
            allowed = {p for job in fitted for p in job["input"]} if job["rule"] == "trust_validation" else set()
            assert not set(on_labelled(job["input"])) - allowed, job["rule"]


def test_the_demo_simulates_no_validation_foam():
    """`make demo` builds `all` on the quick preset. A validation foam there (scan, recoveries, trust
    maps: ~2 of the demo's 20 minutes) once came in unseen, from a key quick.yaml inherits from
    config.yaml (trust.classifier.fit_realizations); the curves and the paper preset may use it."""
    jobs = _dry_run_jobs(PRESETS[1], "all")
    assert jobs
    touched = sorted({p for job in jobs for p in job["output"] if "validation" in p.split("/")})
    assert not touched, f"the quick preset's `all` makes {touched[:5]}"


# --- learning curves on a tiny foam ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The test preset's foam for train and validation: ground truth, a blurred LRES, GT pores."""
    folder = tmp_path_factory.mktemp("tuning")
    config = load_config(REPO / "tests" / "config" / "test.yaml")
    voxel = config["voxel_size_um"]
    paths = {}
    for realization in ("train", "validation"):
        foam = generate_foam(config, config["realizations"][realization])[0].astype(np.float32)
        lres = ndi.gaussian_filter(foam, 9.0 / voxel / 2.355 * 2) * 0.8 + 0.1
        paths[realization, "gt"] = folder / f"{realization}_gt.h5"
        paths[realization, "lres"] = folder / f"{realization}_lres.h5"
        write_volume(paths[realization, "gt"], foam, voxel)
        write_volume(paths[realization, "lres"], lres.astype(np.float32), voxel)
    segment_ground_truth(
        paths["validation", "gt"], folder / "gt_pores.csv", folder / "gt_labels.h5", folder / "gt_summary.csv",
        config, "validation",
    )
    return config, paths, folder


def test_learning_curve_scores_each_snapshot_without_changing_the_training(tiny_study, tmp_path):
    from safetensors.torch import load_file

    from resrecover.methods.training import train_model

    config, paths, folder = tiny_study
    config = copy.deepcopy(config)
    config["deepnet"].update(iterations=6, checkpoint_every=3, schedule="cosine", warmup_iterations=2)
    curve = learning_curve(
        "deepnet", paths["train", "lres"], paths["train", "gt"],
        ValidationSet(paths["validation", "lres"], paths["validation", "gt"], folder / "gt_labels.h5", folder / "gt_pores.csv"),
        config, 9.0,
        work_dir=tmp_path / "curve", seed=5, snapshots=[2, 6], threads=1, out_csv=tmp_path / "curve.csv",
    )
    assert list(curve.columns) == CURVE_COLUMNS and curve["iteration"].tolist() == [2, 6]
    assert curve["settings"].eq("chosen").all() and curve["sigma_um"].eq(9.0).all()
    assert curve["recovery_pct"].between(0, 1000).all() and curve["ssim"].between(-1, 1).all()
    assert curve["ssim"].nunique() == 2  # the snapshots saw different weights
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "curve.csv"), curve, check_dtype=False)

    # scoring snapshots on the way does not change what training computes
    from resrecover.masks import fov_mask

    plain = tmp_path / "plain"
    train_model(
        "deepnet", paths["train", "lres"], paths["train", "gt"], config, plain / "model.safetensors",
        plain / "model.json", plain / "train_log.csv", plain / "checkpoints", 5, "cpu",
        mask=fov_mask(config, config["volume_shape"]), threads=1, progress=False, sigma_um=9.0,
    )
    a, b = load_file(str(plain / "model.safetensors")), load_file(str(tmp_path / "curve" / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_settings_variants_replace_the_named_blocks_and_are_validated():
    config = load_config(REPO / "config" / "quick.yaml")
    assert settings_variant(config, "chosen") is config
    config = copy.deepcopy(config)
    config["tuning"]["compare"] = {"short": {"deepnet": {"iterations": 7}}, "bad": {"deepnet": {"n_slices": 4}}}
    short = settings_variant(config, "short")
    assert short["deepnet"]["iterations"] == 7 and config["deepnet"]["iterations"] != 7
    with pytest.raises(ConfigError, match=r"^tuning.compare.bad: deepnet.n_slices: 4 is even"):
        settings_variant(config, "bad")
    with pytest.raises(ConfigError, match="no settings named 'other'"):
        settings_variant(config, "other")


def test_snapshots_double_up_to_the_budget_and_curves_collect_sorted(tmp_path):
    assert default_snapshots(1600, 6) == [50, 100, 200, 400, 800, 1600]
    assert default_snapshots(3, 6) == [1, 3]
    rows = {c: [0] for c in CURVE_COLUMNS}
    for name, (method, iteration) in {"b": ("srcnn", 4), "a": ("deepnet", 8), "c": ("deepnet", 2)}.items():
        pd.DataFrame({**rows, "method": [method], "settings": ["chosen"], "iteration": [iteration]}).to_csv(
            tmp_path / f"{name}.csv", index=False
        )
    table = collect_learning_curves(sorted(tmp_path.glob("*.csv")))
    assert table[["method", "iteration"]].values.tolist() == [["deepnet", 2], ["deepnet", 8], ["srcnn", 4]]
    pd.DataFrame({"method": ["x"]}).to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(ValueError, match="missing columns"):
        collect_learning_curves([tmp_path / "broken.csv"])


@pytest.mark.slow
def test_learning_curves_target_runs_on_the_test_preset(test_preset_run):
    """`snakemake learning_curves` in the shared run: validation simulated, every curve, the table, fig11."""
    run_snakemake("learning_curves", "--cores", "2", "--configfile", TEST_CONFIG, "--directory", test_preset_run)
    table = pd.read_csv(test_preset_run / "results" / "tables" / "learning_curves.csv")
    assert list(table.columns) == CURVE_COLUMNS
    assert set(table["method"]) == {"deepnet", "srcnn", "rl"} and set(table["sigma_um"]) == {3.0, 9.0}
    assert set(table["settings"]) == {"chosen"} and table["recovery_pct"].notna().all()
    config = load_config(TEST_CONFIG)
    rl = table[table["method"] == "rl"]
    assert sorted(set(rl["iteration"])) == sorted(config["tuning"]["rl_iterations"])
    deepnet = table[(table["method"] == "deepnet") & (table["sigma_um"] == 9.0)]
    assert deepnet["iteration"].max() == config["deepnet"]["iterations"]
    assert (test_preset_run / "results" / "recon" / "validation" / "ground_truth.h5").is_file()
    for ext in ("png", "pdf"):
        assert (test_preset_run / "results" / "figures" / f"fig11_learning_curves.{ext}").stat().st_size > 1000
