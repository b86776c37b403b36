"""What every thin adapter in workflow/scripts/ needs: its log file, and the config it ran with."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback


@contextlib.contextmanager
def script_logging(snakemake):
    """Send stdout, stderr (tqdm bars included) and ``logging`` to the rule's log file.

    An exception is written to the log with its traceback and re-raised, so Snakemake marks the job
    failed and the log says why.

    >>> with script_logging(snakemake):  # doctest: +SKIP
    ...     run_the_stage(...)
    """
    # a script job may use its `threads:` (Snakemake sets OMP_NUM_THREADS for shell jobs only);
    # resrecover.parallel.usable_cores reads it
    threads = getattr(snakemake, "threads", None)
    if isinstance(threads, int) and threads > 0 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    log_path = snakemake.log[0] if len(snakemake.log) else None
    if log_path is None:
        yield logging.getLogger("resrecover")
        return
    fh = open(log_path, "w", buffering=1)
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = fh
    handler = logging.StreamHandler(fh)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield logging.getLogger("resrecover")
    except BaseException:
        traceback.print_exc(file=fh)
        raise
    finally:
        root.removeHandler(handler)
        sys.stdout, sys.stderr = old_out, old_err
        fh.close()


def validated_config(snakemake) -> dict:
    """The run's config with schema defaults filled (Snakefile already validated it)."""
    from .config import validate_config

    return validate_config(dict(snakemake.config))


def ensemble_member(wildcards) -> int:
    """The network a job trains or applies: its ``member`` wildcard; 0 (the study's model) when it has none.

    Members 1, 2, ... are a trust ensemble's extra networks (rules ``train``, ``recover_ensemble_member``).
    """
    return int(getattr(wildcards, "member", 0))


def keyed_inputs(keys, **files) -> list[dict]:
    """One dict per key of a rule's params (wildcard values: ``method``, ``realization``,
    ``sigma``), with ``sigma_um`` as a number and, under each name of ``files``, that input list's
    file at the key's position (the rule lists those inputs from the same keys, in the same order).
    """
    keys = list(keys)
    lists = {name: [str(f) for f in paths] for name, paths in files.items()}
    for name, paths in lists.items():
        if len(paths) != len(keys):
            raise ValueError(f"input {name}: {len(paths)} files for {len(keys)} keys; expected one file per key")
    out = []
    for i, key in enumerate(keys):
        entry = {k: v for k, v in dict(key).items() if k != "sigma"}
        if "sigma" in key:
            entry["sigma_um"] = float(key["sigma"])
        entry.update({name: paths[i] for name, paths in lists.items()})
        out.append(entry)
    return out
