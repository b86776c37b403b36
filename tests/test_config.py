"""Config presets, schema validation with one-line errors, and the workflow's static checks."""

import copy

import pytest
import yaml

from conftest import REPO, run_snakemake
from resrecover.config import ConfigError, load_config, sigma_tag, validate_config

PRESETS = ["config/config.yaml", "config/quick.yaml", "tests/config/test.yaml"]
MINIMAL = {"realizations": {"train": 1, "alternate": 2}}


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_are_valid_and_filled(preset):
    config = load_config(REPO / preset)
    assert config["scan"]["backend"] in ("auto", "rtk", "astra")
    assert config["voxel_size_um"] > 0
    # the paper's σ/pore-size ratios: every preset keeps the blur levels in µm
    assert all(s > config["scan"]["target_sigma_um"] for s in config["scan"]["sigmas_um"])


def test_quick_preset_keeps_the_paper_foam_in_micrometres():
    paper, quick = load_config(REPO / PRESETS[0]), load_config(REPO / PRESETS[1])
    extent = lambda c: [n * c["voxel_size_um"] for n in c["volume_shape"]]  # noqa: E731
    assert extent(quick) == pytest.approx(extent(paper), rel=1e-6)
    assert quick["phantom"]["cylinder_radius_um"] == paper["phantom"]["cylinder_radius_um"]
    assert quick["scan"]["sigmas_um"] == paper["scan"]["sigmas_um"]


BAD = [
    ({"foo": 1}, "config: unknown key(s) 'foo'"),
    ({"scan": {"sigmas_um": [3, -1]}}, "scan.sigmas_um[1]: -1 is out of range; expected a value > 0"),
    ({"scan": {"sigmas_um": [0]}}, "scan.sigmas_um[0]: 0 is out of range"),
    ({"scan": {"sigmas_um": []}}, "scan.sigmas_um: [] has 0 item(s)"),
    ({"scan": {"backend": "cuda"}}, "scan.backend: 'cuda' is not allowed; expected one of 'auto', 'rtk', 'astra'"),
    ({"methods": ["deepnet", "esrgan"]}, "methods[1]: 'esrgan' is not allowed"),
    ({"voxel_size_um": "1um"}, "voxel_size_um: '1um' has the wrong type; expected number"),
    ({"inference": {"tile_px": 64, "overlap_px": 32}}, "inference.overlap_px: 32 is too large"),
    ({"deepnet": {"n_slices": 4}}, "deepnet.n_slices: 4 is even"),
    ({"scan": {"sigmas_um": [1, 3]}}, "scan.sigmas_um: [1, 3] contains the target blur 1"),
    ({"phantom": {"n_voids": 0}}, "phantom.n_voids: 0 is out of range; expected a value >= 1"),
    ({"realizations": {"train": 1}}, "realizations: 'alternate' is a required property"),
    ({"realizations": {"train": 1, "alternate": 3}}, "realizations: alternate and validation share the seed 3; expected a different seed"),
    ({"realizations": {"train": 1, "alternate": 2, "transfer": 1}}, "realizations: train and transfer share the seed 1"),
    ({"realizations": {"train": 1, "alternate": 2, "labelled": [7, 2]}}, "realizations: alternate and labelled2 share the seed 2"),
    ({"realizations": {"train": 1, "alternate": 2, "labelled": [7, 7]}}, "realizations.labelled: [7, 7] has repeated items; expected unique values"),
    ({"realizations": {"train": 1, "alternate": 2, "labelled": 7}}, "realizations.labelled: 7 has the wrong type; expected array"),
    ({"realizations": {"train": 1, "alternate": 2, "transfer": -4}}, "realizations.transfer: -4 is out of range; expected a value >= 0"),
    ({"transfer": {"aspect_ratio": [0.5, 2]}}, "transfer.aspect_ratio[0]: 0.5 is out of range; expected a value >= 1"),
    ({"transfer": {"aspect_ratio": [3, 1.5]}}, "transfer.aspect_ratio: [3, 1.5] has min > max; expected [min, max]"),
    ({"transfer": {"aspect_ratio": [2]}}, "transfer.aspect_ratio: [2] has 1 item(s); expected min 2"),
    ({"transfer": {"shape": "cubes"}}, "transfer: unknown key(s) 'shape'; allowed keys: aspect_ratio"),
    ({"deepnet": {"sigma_overrides": [{"sigma_um": 4, "iterations": 9}]}}, "deepnet.sigma_overrides: sigma_um 4 is not one of scan.sigmas_um"),
    ({"srcnn": {"schedule": "step"}}, "srcnn.schedule: 'step' is not allowed"),
]


@pytest.mark.parametrize("patch,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_invalid_config_gives_one_line_naming_the_key(patch, message):
    config = copy.deepcopy(MINIMAL)
    for key, value in patch.items():
        config[key] = value
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_config_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("scan: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)


def test_sigma_tags_have_no_trailing_zeros():
    assert [sigma_tag(s) for s in (1, 3.0, 2.5, 9.0)] == ["1", "3", "2.5", "9"]


@pytest.mark.parametrize("preset", PRESETS)
def test_dry_run_of_every_preset(preset, tmp_path):
    proc = run_snakemake("-n", "--cores", "2", "--configfile", REPO / preset, "--directory", tmp_path, timeout=300)
    assert "fig9_gaussian_fit" in proc.stdout and "train" in proc.stdout


def test_invalid_config_stops_snakemake_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"inference": {"tile_px": 40, "overlap_px": 30}}))
    proc = run_snakemake("--cores", "1", "--configfile", bad, "--directory", tmp_path, check=False, timeout=300)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("config error:")]
    assert lines == ["config error: inference.overlap_px: 30 is too large for inference.tile_px 40; expected 2 * overlap_px < tile_px"]
    assert "Traceback" not in proc.stdout
    assert not (tmp_path / "results").exists()


def test_snakemake_lint_is_clean(tmp_path):
    proc = run_snakemake("--lint", timeout=300, check=False)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout, proc.stdout[-3000:]


def test_snakefmt_check_passes():
    import subprocess
    import sys
    from pathlib import Path

    snakefmt = Path(sys.executable).parent / "snakefmt"
    proc = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "workflow/rules"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_workflow_schema_is_the_package_schema():
    """One schema: workflow/schemas/ (where Snakemake users look) links to the one the package validates with."""
    from resrecover.config import SCHEMA_PATH

    linked = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert linked.resolve() == SCHEMA_PATH.resolve()
