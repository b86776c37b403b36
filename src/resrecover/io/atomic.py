"""Atomic outputs: everything is written under a temporary name in the target folder, then renamed.

A process killed mid-write therefore never leaves a file under the final name, and Snakemake (or a
user) can never take a half-written file for a finished one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .. import ResrecoverError


class DiskSpaceError(ResrecoverError):
    """Not enough free disk for an output."""


def format_bytes(n: float) -> str:
    """1536 -> '1.5 kB' (decimal units, as df -H prints)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def check_free_disk(path: str | Path, nbytes: int, margin: float = 1.05) -> None:
    """Stop early when ``nbytes`` (times ``margin``) will not fit on the file system of ``path``."""
    folder = Path(path).resolve().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    need = int(nbytes * margin)
    if need > free:
        raise DiskSpaceError(
            f"{path}: needs {format_bytes(need)} but only {format_bytes(free)} are free on {folder}"
        )


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    >>> with atomic_output("out.h5") as tmp:  # doctest: +SKIP
    ...     write_something(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_dir() or tmp.exists():
            if tmp.is_file():
                # mkstemp creates 0600; give the final file the permissions a plain open() would
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
            with contextlib.suppress(OSError):
                fd = os.open(tmp, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            raise ResrecoverError(f"{path}: the writer produced no file")
    finally:
        if tmp.exists() and tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write_csv(df, path: str | Path, **kwargs) -> None:
    """Write a pandas DataFrame to CSV atomically (index off unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_output(path) as tmp:
        df.to_csv(tmp, **kwargs)
