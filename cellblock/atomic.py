"""Atomic file writes: write to a temporary name beside the target, then rename.

A reader (or a rerun after a crash) sees either the old file or the whole new
one, never a half-written table, report or checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

__all__ = ["atomic_path", "atomic_write_csv", "atomic_write_parquet", "atomic_write_text"]


@contextmanager
def atomic_path(target: Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; rename it to ``target`` on success.

    Args:
        target: The file to write.
        fsync: Flush the temporary file to disk before the rename. Without it, a power
            loss soon after can leave ``target`` renamed but empty (the rename reached
            the disk before the data); worth its cost for files a run resumes from.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)  # mkstemp creates 0600; give the file the mode open() would
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        if fsync:
            _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)  # fsync flushes the file, whichever descriptor asks
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(target: Path, writer: Callable[[Path], object]) -> None:
    with atomic_path(target) as tmp:
        writer(tmp)


def atomic_write_text(target: Path, text: str) -> None:
    _write(target, lambda p: p.write_text(text))


def atomic_write_csv(df: pd.DataFrame, target: Path) -> None:
    """CSV without the index, floats with 4 decimals (stable bytes across runs)."""
    _write(target, lambda p: df.to_csv(p, index=False, float_format="%.4f"))


def atomic_write_parquet(df: pd.DataFrame, target: Path) -> None:
    _write(target, lambda p: df.to_parquet(p, index=False))
