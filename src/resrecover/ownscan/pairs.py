"""The workflow's ``pairs:`` block (docs/own_scans.md#the-config-block), checked and filled, plus the example.

The rules of workflow/rules/pairs.smk run every configured pair, and the synthetic pair ``example``
when ``multiscale_example.enabled``; the workflow decides where the example's scans are written and
which files are targets.
"""

from __future__ import annotations

from pathlib import Path

from .. import ResrecoverError
from ..config import ConfigError
from ..io.readers import split_internal_path
from .grid import parse_roi


def volume_file(spec: str) -> str:
    """The file or folder of a volume spec (``scan.h5:/dataset`` -> ``scan.h5``), for Snakemake inputs."""
    return str(split_internal_path(spec)[0])


def configured_pairs(config: dict, example_dir: str | Path | None = None) -> dict[str, dict]:
    """The validated ``pairs:`` block by name, plus the pair ``example`` when the example is enabled.

    Every entry has the schema's keys filled (``methods``, ``roi``, ``offset_um`` ...) and
    ``offset_file``: a JSON whose ``stage_offset_um`` gives the stage offset (the example's
    ``truth.json``), else ``None``.

    Parameters
    ----------
    config : the validated config.
    example_dir : the folder of the example's ``low.tif``, ``high.h5`` and ``truth.json`` (rule
        ``multiscale_example``); needed when the example is enabled.

    Raises
    ------
    ConfigError : a repeated name, the reserved name ``example`` while the example is enabled, or a
        malformed ``roi`` (one line naming ``pairs[i].key``).
    """
    pairs: dict[str, dict] = {}
    example = config.get("multiscale_example", {})
    for i, entry in enumerate(config.get("pairs", []) or []):
        name = entry["name"]
        if name in pairs:
            raise ConfigError(f"pairs[{i}].name: {name!r} repeats an earlier pair; expected unique names")
        if name == "example" and example.get("enabled"):
            raise ConfigError(f"pairs[{i}].name: 'example' is the multiscale example's name; choose another")
        try:
            parse_roi(entry.get("roi"))
        except ResrecoverError as exc:
            raise ConfigError(f"pairs[{i}].{exc}") from None
        pairs[name] = {"offset_file": None, **entry}
    if example.get("enabled"):
        if example_dir is None:
            raise ResrecoverError("configured_pairs: multiscale_example is enabled; give example_dir (its scans)")
        try:
            parse_roi(example.get("roi"))
        except ResrecoverError as exc:
            raise ConfigError(f"multiscale_example.{exc}") from None
        pairs["example"] = {
            "name": "example",
            "low": f"{example_dir}/low.tif",
            "high": f"{example_dir}/high.h5",
            "low_voxel_um": None,
            "high_voxel_um": None,
            "offset_um": None,
            "offset_file": f"{example_dir}/truth.json",
            "search": True,
            "min_peak": example.get("min_peak", 0.5),
            "methods": list(example.get("methods", ["deepnet"])),
            "roi": example.get("roi"),
            "iterations": example.get("iterations"),
        }
    return pairs
