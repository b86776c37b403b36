"""The wheels the GPU machine lacks: downloaded on a CPU machine (``--prepare``), installed offline there.

The GPU machine's Python 3.12 has torch, numpy, scipy, h5py, scikit-image, pandas, matplotlib,
safetensors, pyyaml and tqdm, and no network. The workflow also needs Snakemake (and its
dependencies), jsonschema (config validation), zarr and tifffile (the own-scans example reads a
TIFF through zarr). Their versions are pinned to those installed here, so the GPU run uses the
Snakemake the tests use. Most are pure Python; a few (psutil, rpds-py, pydantic-core, sqlalchemy,
greenlet, immutables, wrapt, markupsafe, charset-normalizer, numcodecs, google-crc32c) exist only as
compiled wheels and are taken for CPython 3.12 on manylinux x86_64. A package published only as a
source archive is built here into a wheel, kept only when pure Python (``py3-none-any``).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

#: What the workflow needs on the GPU machine beyond what its Python has.
ROOTS = ("snakemake", "jsonschema", "tifffile", "zarr")
#: Not brought: on the GPU machine already (numpy, pyyaml), or only for Snakemake's ILP scheduler
#: (pulp, 16 MB: the check runs Snakemake with ``--scheduler greedy``).
EXCLUDED = {"numpy", "pyyaml", "pulp"}
TARGET_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64", "any")


def normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def pinned_closure(roots=ROOTS, python_version: str = TARGET_PYTHON) -> list[str]:
    """``name==version`` of ``roots`` and their dependencies as installed here, less :data:`EXCLUDED`."""
    from packaging.requirements import Requirement

    seen: dict[str, str] = {}

    def visit(name: str) -> None:
        key = normalized(name)
        if key in seen or key in EXCLUDED:
            return
        distribution = importlib.metadata.distribution(name)
        seen[key] = distribution.version
        for text in distribution.requires or []:
            requirement = Requirement(text)
            environment = {"extra": "", "python_version": python_version, "sys_platform": "linux"}
            if requirement.marker is None or requirement.marker.evaluate(environment):
                visit(requirement.name)

    for root in roots:
        visit(root)
    return [f"{name}=={version}" for name, version in sorted(seen.items())]


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600)


def download_one(pin: str, folder: Path, python_version: str = TARGET_PYTHON) -> str:
    """Download ``pin``'s wheel for that CPython on Linux x86_64 (or build a pure one); return its file name."""
    before = set(folder.glob("*.whl"))
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    abi = "cp" + python_version.replace(".", "")
    proc = _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
                "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none", *platforms,
                "-d", str(folder), pin)
    if proc.returncode != 0:  # published as a source archive only: build it, accept it if pure Python
        proc = _pip("wheel", "--no-deps", "-w", str(folder), pin)
        if proc.returncode != 0:
            raise RuntimeError(f"{pin}: no wheel could be downloaded or built: {proc.stderr.strip()[-300:]}")
    new = sorted(set(folder.glob("*.whl")) - before)
    name = normalized(pin.split("==")[0])
    found = new or sorted(p for p in folder.glob("*.whl") if normalized(p.name.split("-")[0]) == name)
    if not found:
        raise RuntimeError(f"{pin}: pip reported success but left no wheel in {folder}")
    if not (found[0].name.endswith("-any.whl") or abi in found[0].name or "abi3" in found[0].name):
        found[0].unlink()
        raise RuntimeError(f"{pin}: {found[0].name} is neither pure Python nor built for CPython {python_version}")
    return found[0].name


def download_wheels(folder: Path, python_version: str = TARGET_PYTHON) -> dict:
    """All wheels of :func:`pinned_closure` for that Python into ``folder`` (emptied first); names and size."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = [download_one(pin, folder, python_version) for pin in pinned_closure(python_version=python_version)]
    total = sum((folder / f).stat().st_size for f in files)
    return {"python": python_version, "files": files, "count": len(files), "total_mib": round(total / 2**20, 1),
            "pure_python": sum(f.endswith("-none-any.whl") for f in files)}


def missing_modules(modules=("snakemake", "jsonschema", "zarr", "tifffile")) -> list[str]:
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def unzip_wheel(wheel: Path, site: Path) -> None:
    """Install a wheel by hand (when pip is absent): unpack it and lift its ``*.data/{purelib,platlib}``."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    for data in site.glob("*.data"):
        for kind in ("purelib", "platlib"):
            if (data / kind).is_dir():
                shutil.copytree(data / kind, site, dirs_exist_ok=True)
        shutil.rmtree(data)


def install_wheels(wheels: Path, site: Path) -> dict:
    """Install every wheel of ``wheels`` into ``site`` offline (pip --target, else unpacked by hand)."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        raise RuntimeError(f"{wheels}: no wheels; run `make gpu-check-prepare` and bring the folder along")
    site.mkdir(parents=True, exist_ok=True)
    proc = _pip("install", "--quiet", "--no-index", "--no-deps", "--no-compile", "--target", str(site),
                *map(str, files))
    method = "pip --target"
    if proc.returncode != 0:
        for wheel in files:
            unzip_wheel(wheel, site)
        method = f"unpacked (pip failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode})"
    return {"site": str(site), "wheels": len(files), "method": method}
