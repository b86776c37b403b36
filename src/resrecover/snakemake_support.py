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
