"""Shared benchmark harness: timing, peak memory in fresh subprocesses, machine description.

Every comparison (``bench_*.py``) is written the same way:

* ``prepare(workdir, options)`` builds the inputs once (cached under ``workdir``) in the parent;
* ``SIDES = {"ours": fn, "peer": fn}``: each side runs in a **fresh Python subprocess**
  (``python -m benchmarks.bench_x --worker SIDE ...``), loads the prepared inputs, does one warm-up call and
  then its timed call(s) (:func:`measure`), saves its output for the equality check and reports
  its own peak RSS (``VmHWM``, the high-water mark of that process's own address space, so the
  two sides never see each other's memory nor the parent's; see :func:`peak_rss_mb`);
* ``run(workdir, options) -> dict`` drives the sides with :func:`run_pair`, compares the outputs
  and returns one result row (:func:`render_row` draws it; ``run_all`` collects the rows into
  ``RESULTS.md``).

The benchmarks are a package run from the repository root (``python -m benchmarks.run_all``,
``python -m benchmarks.bench_rl``): this module imports nothing from the other benchmark files,
and they import it as ``from benchmarks import harness``.

Timing: :func:`run_pair` alternates the sides, ours then the peer, one timed call per fresh process
(after that process's warm-up), for up to 3 rounds; the time of a side is the median over its
rounds. Alternating keeps a change in the machine's load from landing on one side only (on a
shared 2-core machine the load changes by the minute). Rounds stop once the row's time budget is
spent (at least one round is always made), so that the slow peers (scikit-image's
Richardson-Lucy) fit the 20-minute budget of ``run_all``; the number of runs behind every
median is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from resrecover.parallel import usable_cores  # noqa: F401 - the sides' thread count, re-exported

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DEFAULT_WORKDIR = BENCH_DIR / "_work"  # git-ignored


# ------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, load and the versions of the libraries the benchmarks compare."""
    import numpy
    import scipy

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
        info["ram_available_gb"] = round(psutil.virtual_memory().available / 1e9, 1)
    except ImportError:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["ram_gb"] = round(pages / 1e9, 1)
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    for name in ("torch", "skimage", "porespy", "monai", "itk", "snakemake"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001 - an optional peer that is missing is reported, not fatal
            info[name] = "not installed"
    try:
        import torch

        info["cuda"] = bool(torch.cuda.is_available())
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        info["cuda"] = False
    return info


# ------------------------------------------------------------------------------------- memory
def peak_rss_mb() -> float:
    """High-water mark of this process's resident set (MB).

    Read from ``VmHWM`` in /proc/self/status, which belongs to the process's own address space.
    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used for this: Linux carries the parent's
    high-water mark over a (v)fork + exec into the child's ``ru_maxrss``, so a worker started by a
    parent holding 1 GB would report at least 1 GB. ``ru_maxrss`` is the fallback elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def children_peak_rss_mb() -> float:
    """Largest peak RSS among this process's waited-for children (MB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident set of this process now (MB), from /proc/self/statm."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class TreeRssSampler:
    """Samples the summed RSS of a process and all its descendants (psutil) in a thread; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        self.pid, self.interval_s = pid, interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for proc in procs:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_mb = max(self.peak_mb, total / 2**20)
            except psutil.Error:
                return
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


# ------------------------------------------------------------------------------------- timing
def measure(
    fn: Callable[[], Any],
    repeats: int = 3,
    warmup: Callable[[], Any] | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Time ``fn``: one warm-up call (``warmup`` or ``fn`` itself), then up to ``repeats`` timed calls.

    Repeating stops early once the timed calls have used ``max_seconds`` (at least one call is
    always made). Returns ``times_s``, ``median_s``, ``n_runs``, ``warmup_s`` and the last result
    under ``result``.
    """
    started = time.perf_counter()
    (warmup or fn)()
    warmup_s = time.perf_counter() - started
    times: list[float] = []
    result = None
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        if max_seconds is not None and sum(times) >= max_seconds:
            break
    return {
        "times_s": [round(t, 4) for t in times],
        "median_s": statistics.median(times),
        "n_runs": len(times),
        "warmup_s": round(warmup_s, 3),
        "result": result,
    }


# ------------------------------------------------------------------------ subprocess workers
def worker_cli(sides: dict[str, Callable[[Path, dict], dict]]) -> bool:
    """Handle ``--worker SIDE --workdir DIR --options JSON --result FILE`` (returns False if absent).

    Called at the top of a bench script's ``__main__``: runs one side in this (fresh) process and
    writes its result JSON, adding this process's peak RSS.
    """
    if "--worker" not in sys.argv:
        return False
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True, choices=sorted(sides))
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--options", default="{}")
    parser.add_argument("--result", required=True, type=Path)
    args = parser.parse_args()
    options = json.loads(args.options)
    t0 = time.perf_counter()
    out = sides[args.worker](args.workdir, options)
    out = {k: v for k, v in out.items() if k != "result"}
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["process_s"] = round(time.perf_counter() - t0, 2)
    args.result.write_text(json.dumps(out, indent=1, default=_json_default))
    return True


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    return str(value)


def bench_module(script: str | Path) -> str:
    """The module name of a bench file (``benchmarks/bench_rl.py`` -> ``benchmarks.bench_rl``).

    Sides run as modules from the repository root, so that ``from benchmarks import harness``
    resolves in the fresh process without any edit of ``sys.path``.
    """
    relative = Path(script).resolve().with_suffix("").relative_to(ROOT)
    return ".".join(relative.parts)


def run_side(
    script: str | Path,
    side: str,
    workdir: Path,
    options: dict | None = None,
    timeout_s: float = 1800,
) -> dict[str, Any]:
    """Run one side of ``script`` in a fresh interpreter; return its result dict (or an ``error``)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    result_file = workdir / f"result_{Path(script).stem}_{side}.json"
    result_file.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m", bench_module(script),
        "--worker", side,
        "--workdir", str(workdir),
        "--options", json.dumps(options or {}),
        "--result", str(result_file),
    ]
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"{side}: timed out after {timeout_s:.0f} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_file.exists():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-15:]
        return {"error": f"{side}: exit {proc.returncode}: " + " | ".join(tail)}
    out = json.loads(result_file.read_text())
    out["subprocess_wall_s"] = round(wall, 2)
    return out


def _merge_runs(results: list[dict]) -> dict:
    """One side's result over several processes: times concatenated, peak RSS the largest."""
    merged = dict(results[-1])
    times = [t for r in results for t in r.get("times_s", [])]
    if times:
        merged["times_s"] = times
        merged["median_s"] = statistics.median(times)
        merged["n_runs"] = len(times)
    merged["warmup_s"] = [r.get("warmup_s") for r in results]
    for key in ("peak_rss_mb", "rss_after_mb"):
        values = [r[key] for r in results if key in r]
        if values:
            merged[key] = max(values)
    if "modes" in merged:
        merged["modes"] = {
            mode: _merge_runs([r["modes"][mode] for r in results if mode in r.get("modes", {})])
            for mode in merged["modes"]
        }
    merged["n_processes"] = len(results)
    return merged


def run_pair(
    script: str | Path,
    workdir: Path,
    options: dict,
    sides: tuple[str, ...] = ("ours", "peer"),
    rounds: int = 3,
    budget_s: float | None = None,
    timeout_s: float = 1800,
) -> dict[str, dict]:
    """Run the sides **alternately**, one timed run per fresh process, for up to ``rounds`` rounds.

    Round k runs ours then the peer, each in a new interpreter (warm-up, then one timed call), so a
    change of the machine's load between rounds hits both sides alike instead of biasing the
    ratio. Rounds stop once ``budget_s`` seconds have passed (at least one round is made). Returns
    each side's merged result (times of all rounds, the largest peak RSS) or its ``error``.
    """
    per_side: dict[str, list[dict]] = {side: [] for side in sides}
    errors: dict[str, dict] = {}
    t0 = time.perf_counter()
    for _ in range(max(1, int(rounds))):
        for side in sides:
            if side in errors:
                continue
            result = run_side(script, side, workdir, {**options, "repeats": 1}, timeout_s=timeout_s)
            if "error" in result:
                errors[side] = result
            else:
                per_side[side].append(result)
        if budget_s is not None and time.perf_counter() - t0 >= budget_s:
            break
        if len(errors) == len(sides):
            break
    return {side: errors.get(side) or _merge_runs(per_side[side]) for side in sides}


# ------------------------------------------------------------------------------ result rows
def ratio(peer: dict | None, ours: dict | None) -> float | None:
    """Speed-up of ours over the peer; None when either is missing.

    With the same number of alternating rounds on both sides (:func:`run_pair`), the median of the
    per-round ratios (peer_k / ours_k: each pair measured back to back, so a load change between
    rounds cancels); otherwise the ratio of the medians.
    """
    try:
        t_ours, t_peer = ours["times_s"], peer["times_s"]
        if len(t_ours) == len(t_peer) and len(t_ours) > 1:
            return statistics.median(p / o for p, o in zip(t_peer, t_ours))
        return peer["median_s"] / ours["median_s"]
    except (TypeError, KeyError, ZeroDivisionError):
        return None


def fmt_s(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def fmt_side(side: dict | None) -> str:
    """'median (n runs: t1, t2, ...)'."""
    if not side:
        return "–"
    if "error" in side:
        return f"error: {side['error']}"
    times = ", ".join(f"{t:.3g}" for t in side.get("times_s", []))
    return f"{fmt_s(side.get('median_s'))} (median of {side.get('n_runs', '?')}: {times})"


def fmt_mem(side: dict | None) -> str:
    if not side or side.get("peak_rss_mb") is None:  # e.g. a reused quick run: not sampled
        return "–"
    text = f"{side['peak_rss_mb']:.0f} MB"
    if "baseline_rss_mb" in side:
        text += f" (after loading inputs: {side['baseline_rss_mb']:.0f} MB)"
    return text


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def markdown_cell(value) -> str:
    """Text for a markdown table cell (pipes escaped, no line breaks)."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def fmt_met(row: dict) -> str:
    met = row.get("met")
    return {True: "**yes**", False: "**no**", None: "n/a"}.get(met, str(met))


def render_row(row: dict) -> str:
    """One markdown section (a two-column table) for a result row."""
    lines = [f"### {row.get('title', row.get('name'))}", ""]
    if row.get("error"):
        lines += [f"Failed: `{row['error']}`", ""]
        return "\n".join(lines)
    table = [
        ("sizes", row.get("sizes", "–")),
        ("ours", f"`{row.get('ours_label', '–')}`"),
        ("peer", row.get("peer_label", "–")),
        ("ours: time", fmt_side(row.get("ours"))),
        ("peer: time", fmt_side(row.get("peer")) if row.get("peer") else row.get("peer_note", "–")),
        ("ratio (peer / ours)", fmt_ratio(row.get("ratio"))),
        ("ours: peak RSS", fmt_mem(row.get("ours"))),
        ("peer: peak RSS", fmt_mem(row.get("peer"))),
        ("same result?", row.get("check", "–")),
        ("target", row.get("target", "–")),
        ("target met", fmt_met(row)),
    ]
    for key, value in row.get("extra_fields", []):
        table.insert(-2, (key, value))
    lines += ["| field | value |", "|---|---|"]
    for key, value in table:
        lines.append(f"| {key} | {markdown_cell(value)} |")
    for note in row.get("notes", []):
        lines.append("")
        lines.append(note if "\n" in note else f"- {note}")  # a note holding a table stays a paragraph
    if row.get("profile"):
        lines += ["", "Profile of ours:", "", "```", row["profile"].rstrip(), "```"]
    lines.append("")
    return "\n".join(lines)


def bench_arg_parser(description: str) -> argparse.ArgumentParser:
    """Standard CLI of a bench script run on its own: ``--workdir``, ``--repeats``, ``--json``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the row as JSON here")
    return parser


def standalone(run: Callable[[Path, dict], dict], description: str, extra_args: Callable | None = None) -> None:
    """``python -m benchmarks.bench_x``: run the comparison, print the row (JSON and markdown)."""
    parser = bench_arg_parser(description)
    if extra_args:
        extra_args(parser)
    args = parser.parse_args()
    options = {k: v for k, v in vars(args).items() if k not in ("workdir", "json")}
    row = run(args.workdir, options)
    text = json.dumps(row, indent=1, default=_json_default)
    print(text)
    if args.json:
        args.json.write_text(text)
    print()
    print(render_row(row))


# ------------------------------------------------------------------------------- shared inputs
def paper_foam() -> dict:
    """The paper preset's ``phantom`` block plus ``height_um``, the height of the volume its voids fill.

    Read from the config schema (its defaults are the paper preset, docs/design.md#scale-presets), so
    a change of the study's foam reaches the benchmarks too; validating a config that holds only the
    required keys fills every default in.
    """
    from resrecover.config import validate_config

    config = validate_config({"realizations": {"train": 1, "alternate": 2}})
    return {**config["phantom"], "height_um": config["volume_shape"][0] * config["voxel_size_um"]}


def cached_foam(workdir: Path, n: int = 256, voxel_size_um: float = 1.0, seed: int = 7) -> Path:
    """An ``n``³ foam phantom (material fraction, float32 .npy) of the paper's foam at ``voxel_size_um``.

    Made with :func:`resrecover.phantom.generate_foam` once and cached in ``workdir``. The void
    count keeps the paper's density (:func:`paper_foam`: 1,500 voids per 512 µm of height), so a
    256³ grid at 2 µm is the whole paper foam and at 1 µm its central quarter (the cylinder then is
    cut by the volume's sides).
    """
    import numpy as np

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"foam_{n}_{voxel_size_um:g}um_seed{seed}.npy"
    if path.exists():
        return path
    import logging

    from resrecover.phantom import generate_foam

    logging.getLogger("resrecover.phantom.foam").setLevel(logging.ERROR)  # the "cylinder is cut" warning
    foam = paper_foam()
    height_um = n * voxel_size_um
    config = {
        "voxel_size_um": float(voxel_size_um),
        "volume_shape": [n, n, n],
        "phantom": {
            "cylinder_radius_um": foam["cylinder_radius_um"],
            "max_void_radius_um": foam["max_void_radius_um"],
            "n_voids": int(round(foam["n_voids"] / foam["height_um"] * height_um)),
            # the quick preset's candidate count: the paper's 1.5 million cost minutes per phantom
            "n_candidates": 300000,
            "supersampling": foam["supersampling"],
        },
    }
    volume, _ = generate_foam(config, seed)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, volume.astype(np.float32))
    tmp.rename(path)
    return path


def save_array(path: Path, array) -> None:
    """np.save through a temporary name (a crashed run never leaves a truncated cache file)."""
    import numpy as np

    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, array)
    tmp.rename(path)


# ------------------------------------------------------------------------ the scripts' common steps
def merged_options(defaults: dict, options: dict | None) -> dict:
    """A bench script's options: its ``DEFAULTS`` overridden by the given values that are not None."""
    return {**defaults, **{k: v for k, v in (options or {}).items() if v is not None}}


def cached_array(path: Path, make: Callable[[], Any]) -> Path:
    """``path`` when it exists already, else the array ``make()`` saved there (:func:`save_array`)."""
    path = Path(path)
    if not path.exists():
        save_array(path, make())
    return path


def prepare_and_run_pair(
    script: str | Path, workdir: Path, options: dict, prepare: Callable[[Path, dict], Any], **run_pair_args: Any
) -> tuple[Path, dict, dict]:
    """Build the inputs once in the parent, then :func:`run_pair`; returns ``(workdir, ours, peer)``.

    Without ``rounds`` in ``run_pair_args``, the options' ``repeats`` rounds within their ``budget_s``.
    """
    workdir = Path(workdir)
    prepare(workdir, options)
    if "rounds" not in run_pair_args:
        run_pair_args.update(rounds=options["repeats"], budget_s=options["budget_s"])
    sides = run_pair(script, workdir, options, **run_pair_args)
    return workdir, sides["ours"], sides["peer"]


def result_row(name: str, title: str, ours: dict, peer: dict, **fields: Any) -> dict[str, Any]:
    """A result row: name, title, ``sizes``, the labels, both sides, their :func:`ratio`, then ``fields``'s rest.

    ``fields`` holds ``sizes``, ``ours_label`` and ``peer_label`` (which come first) and e.g.
    ``target`` and ``notes`` (which follow the sides and the ratio, in the order given).
    """
    head = {key: fields.pop(key) for key in ("sizes", "ours_label", "peer_label")}
    return {"name": name, "title": title, **head, "ours": ours, "peer": peer, "ratio": ratio(peer, ours), **fields}


def side_failed(row: dict, ours: dict, peer: dict) -> bool:
    """Mark ``row`` as not compared (and not met) when a side failed; True then."""
    if "error" in ours or "error" in peer:
        row["check"], row["met"] = "not compared (a side failed)", False
        return True
    return False


def profile_unless_met(script: str | Path, workdir: Path, options: dict, row: dict) -> None:
    """Where the target is missed, run the script's ``profile`` side and attach its text to ``row``."""
    if not row["met"]:
        prof = run_side(script, "profile", workdir, options)
        row["profile"] = prof.get("profile") or prof.get("error")


def main(sides: dict[str, Callable[[Path, dict], dict]], run: Callable[[Path, dict], dict], doc: str,
         extra_args: Callable | None = None) -> None:
    """A bench script's ``__main__``: a worker side when asked for one, else :func:`standalone`."""
    if not worker_cli(sides):
        standalone(run, doc.splitlines()[0], extra_args)
