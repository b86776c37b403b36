"""Run every benchmark comparison and rewrite ``benchmarks/RESULTS.md`` (and ``results.json``).

From the repository root:

    python -m benchmarks.run_all                      # everything, the quick preset included
    python -m benchmarks.run_all --skip-quick         # every row but the quick preset
    python -m benchmarks.run_all --quick-results DIR  # reuse DIR/results/benchmarks/**.tsv of a finished quick run
    python -m benchmarks.run_all --only rl ssim       # some rows (the others are kept from results.json)

Each row runs its two sides in fresh subprocesses (see ``harness.py``); rows run one after the
other so that they never compete for the cores. Timings are ratios measured in one run on one
machine; they are not tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import fmt_met, fmt_ratio, markdown_cell, render_row

ROWS = ["rl", "ssim", "pores", "tiled_inference", "training", "fdk", "out_of_core", "quick_preset"]
MODULES = {name: f"benchmarks.bench_{name}" for name in ROWS}
RESULTS_MD = harness.BENCH_DIR / "RESULTS.md"
RESULTS_JSON = harness.BENCH_DIR / "results.json"


def summary_table(rows: dict[str, dict]) -> str:
    lines = [
        "| row | ours | peer | ratio | same result | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ROWS:
        row = rows.get(name)
        if not row:
            continue
        if row.get("error"):
            lines.append(f"| {row.get('title', name)} | error | | | | | **no** |")
            continue
        ours = harness.fmt_s((row.get("ours") or {}).get("median_s"))
        peer = harness.fmt_s((row.get("peer") or {}).get("median_s")) if row.get("peer") else row.get("peer_short", "–")
        check = row.get("check_short", row.get("check", "–"))
        lines.append(
            f"| {row.get('title', name)} | {ours} | {peer} | {fmt_ratio(row.get('ratio'))} | "
            f"{markdown_cell(check)} | {row.get('target', '–')} | {fmt_met(row)} |"
        )
    return "\n".join(lines)


def render(rows: dict[str, dict], machine: dict, started: str, total_s: float | None) -> str:
    cores = machine.get("cores")
    load = machine.get("load_average")
    # the 1-minute load at the start and at the end of every row: the busiest moment of the run
    ones = [x[0] for x in [load, *(r.get("load_average_end") for r in rows.values())] if x]
    busiest = max(ones) if ones else None
    noisy = bool(busiest and cores and busiest > 0.5 * cores)
    parts = [
        "# Benchmarks",
        "",
        f"Written by `python -m benchmarks.run_all` on {started} (UTC)"
        + (f", {total_s / 60:.1f} min in total." if total_s else "."),
        "",
        "## Machine",
        "",
        f"- CPU: {machine.get('cpu')}, {cores} usable cores; RAM {machine.get('ram_gb')} GB",
        f"- GPU: {machine.get('gpu', 'none') if machine.get('cuda') else 'none (CUDA not available)'}",
        f"- Python {machine.get('python')}, numpy {machine.get('numpy')}, scipy {machine.get('scipy')}, "
        f"torch {machine.get('torch')}, scikit-image {machine.get('skimage')}, porespy {machine.get('porespy')}, "
        f"MONAI {machine.get('monai')}, itk {machine.get('itk')}, snakemake {machine.get('snakemake')}",
        f"- Load average (1, 5, 15 min) when the run started: {load}; highest 1-minute load seen at a row's end: "
        f"{busiest}" + (f" ({machine['load_note']})" if machine.get("load_note") else ""),
        "",
        "## Noise",
        "",
        "The two sides of a row run alternately (ours, peer, ours, peer, ...), each timed call in a fresh "
        "subprocess after a warm-up call; a time is the median over up to 3 rounds (fewer when a row's rounds "
        "exceed its time budget; the count is given with every time). "
        "Ratios compare the two sides of one row, measured back to back on the same machine in the "
        "same run; absolute times are not comparable across machines or runs. "
        + (
            f"This run's machine had {cores} cores shared with other work (1-minute load up to {busiest}), "
            "so the times are noisy: repeated runs of one side spread by tens of percent, and whole ratios moved "
            "by up to 2× between runs (benchmarks/NOTES.md lists them); re-run `make bench` on a quiet machine "
            "for final numbers."
            if noisy
            else "The machine stayed quiet through the run (1-minute load at most half the cores)."
        ),
        "Peak memory is each subprocess's own high-water mark (`VmHWM`), inputs and interpreter "
        "included; 'after loading inputs' is its resident set just before the warm-up.",
        "",
        "## Summary",
        "",
        summary_table(rows),
        "",
        "What is slow where a target is missed, with profiles and the fixes proposed: `benchmarks/NOTES.md`.",
        "",
        "## Rows",
        "",
    ]
    for name in ROWS:
        if name in rows:
            parts.append(render_row(rows[name]))
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=harness.DEFAULT_WORKDIR)
    parser.add_argument("--only", nargs="+", choices=ROWS, help="run only these rows (others kept from results.json)")
    parser.add_argument("--skip-quick", action="store_true", help="do not run the quick preset")
    parser.add_argument("--quick-results", type=Path, default=None, help="a finished quick run's directory to read")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from results.json")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one run, written under WORKDIR/smoke (checks the scripts; measures nothing)")
    args = parser.parse_args(argv)
    results_md, results_json, workdir = RESULTS_MD, RESULTS_JSON, args.workdir
    if args.smoke:
        workdir = args.workdir / "smoke"
        workdir.mkdir(parents=True, exist_ok=True)
        results_md, results_json = workdir / "RESULTS_smoke.md", workdir / "results_smoke.json"
        args.repeats = 1
        if not args.quick_results:
            args.skip_quick = True

    if args.render:
        saved = json.loads(results_json.read_text())
        results_md.write_text(render(saved["rows"], saved["machine"], saved["started"], saved.get("total_s")))
        print(f"[run_all] rewrote {results_md} from {results_json}")
        return 0
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    machine = harness.machine_info()
    rows: dict[str, dict] = {}
    if args.only and results_json.exists():
        previous = json.loads(results_json.read_text())
        rows.update(previous.get("rows", {}))
    names = args.only or ROWS
    if args.skip_quick and "quick_preset" in names:
        names = [n for n in names if n != "quick_preset"]
    t0 = time.perf_counter()
    for name in names:
        module = importlib.import_module(MODULES[name])
        options = {"repeats": args.repeats}
        if args.smoke:
            options.update(getattr(module, "SMOKE", {}))
        if name == "quick_preset":
            options = {"quick_results": str(args.quick_results) if args.quick_results else None}
        print(f"[run_all] {name} ...", flush=True)
        t_row = time.perf_counter()
        try:
            row = module.run(workdir, options)
        except Exception as exc:  # noqa: BLE001 - one failing row must not lose the others
            row = {"name": name, "title": getattr(module, "TITLE", name), "error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        row["row_seconds"] = round(time.perf_counter() - t_row, 1)
        try:
            row["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            pass
        row["measured"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        rows[name] = row
        print(f"[run_all] {name}: {row['row_seconds']} s, ratio {fmt_ratio(row.get('ratio'))}, met {row.get('met')}",
              flush=True)
        # write as we go: an interrupted run keeps the rows it finished
        results_json.write_text(json.dumps({"machine": machine, "started": started, "rows": rows}, indent=1,
                                           default=harness._json_default))
        results_md.write_text(render(rows, machine, started, None))
    total = time.perf_counter() - t0
    results_json.write_text(json.dumps({"machine": machine, "started": started, "total_s": total, "rows": rows},
                                       indent=1, default=harness._json_default))
    results_md.write_text(render(rows, machine, started, total))
    print(f"[run_all] done in {total / 60:.1f} min; wrote {results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
