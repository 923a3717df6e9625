"""Finished means finished: a stage's output folder is whole, from one run, or refused.

A stage that writes a folder of results (``ensemble.py``, ``benchmark.py``,
``reference_probes.py --out``) writes it inside ``output_folder``::

    OUT/ensemble.lock     one writer at a time (``cellblock.locks``; a second is refused
                          naming the first)
    OUT/finished.json     the completion record, written last: the stage, when, and the
                          sha256 of every output file of that run

Before the run writes anything, the record goes first (from then on the folder reads as
unfinished), then the outputs of an earlier run and the temporary files a killed run
left (``.NAME.*.tmp``, ``cellblock.atomic``): a stopped run never leaves an earlier
run's ``submission.csv`` beside its own ``profiles.parquet``.

A reader (``evaluate.py``, ``make_pseudo_labels.py``, ``benchmark.py``, the viewer's
``--predictions``) calls ``require_finished``: a folder still being written, without its
record (stopped, failed), or whose files are not those its run finished with (mixed,
edited) is refused in one line naming it. A folder without the lock and without the
record was written before records existed (or by hand) and is read as before.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cellblock.atomic import atomic_write_text
from cellblock.errors import UserError
from cellblock.locks import held_by, hold

__all__ = ["RECORD", "lock_path", "output_folder", "remove_temporary", "require_finished"]

log = logging.getLogger(__name__)

RECORD = "finished.json"


def lock_path(out: Path | str, stage: str) -> Path:
    """``OUT/<stage>.lock``: the lock of ``stage``'s writer of ``out``."""
    return Path(out) / f"{stage}.lock"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def remove_temporary(folder: Path | str) -> int:
    """Delete the temporary files a killed writer left in ``folder``; how many.

    Only for the folder's one writer, holding its lock: ``cellblock.atomic`` names them
    ``.NAME.XXXXXXXX.tmp``, and nobody else writes there.
    """
    stale = sorted(Path(folder).glob(".*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def _clear(out: Path, outputs: Iterable[str]) -> None:
    """Drop the record (first), an earlier run's outputs and a killed run's temp files."""
    (out / RECORD).unlink(missing_ok=True)
    cleared = [name for name in outputs if (out / name).is_file()]
    for name in cleared:
        (out / name).unlink()
    stale = remove_temporary(out)
    if cleared or stale:
        log.info(
            "%s: cleared %d output(s) of an earlier run and %d temporary file(s)",
            out,
            len(cleared),
            stale,
        )


@contextlib.contextmanager
def output_folder(out: Path | str, stage: str, outputs: Iterable[str]) -> Iterator[Path]:
    """Write ``out`` as ``stage``'s one writer; its record is written when the block ends well.

    Args:
        out: The output folder (created).
        stage: The stage, e.g. ``"ensemble"``: names the lock and the record.
        outputs: The file names the stage may write in ``out`` (earlier ones are cleared;
            those present at the end are recorded).

    Yields:
        ``out`` as a Path.

    Raises:
        FolderBusyError: Another process writes ``out`` (the message names it).
    """
    out, names = Path(out), list(outputs)
    with hold(lock_path(out, stage), what=f"{stage} output {out}"):
        _clear(out, names)
        yield out
        record = {
            "stage": stage,
            "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "files": {n: _sha256(out / n) for n in names if (out / n).is_file()},
        }
        atomic_write_text(out / RECORD, json.dumps(record, indent=2) + "\n")


def require_finished(out: Path | str, stage: str) -> dict[str, Any] | None:
    """Refuse ``out`` unless ``stage`` finished it and its files are still that run's.

    Args:
        out: A stage's output folder.
        stage: The stage that writes it, e.g. ``"ensemble"``.

    Returns:
        The record; None for a folder without lock or record (older, or made by hand).

    Raises:
        UserError: Still being written, unfinished, or mixed; the message names ``out``.
    """
    out = Path(out)
    again = f"run {stage}.py again into it, or use a finished folder"
    who = held_by(lock_path(out, stage))
    if who is not None:
        raise UserError(f"{out}: {stage} output still being written by {who}; wait for it to end")
    try:
        record = json.loads((out / RECORD).read_text())
    except FileNotFoundError:
        if not lock_path(out, stage).exists():
            return None
        raise UserError(
            f"{out}: unfinished {stage} output (no {RECORD}: its run was stopped or failed); "
            f"{again}"
        ) from None
    except ValueError:
        raise UserError(f"{out}/{RECORD}: not a readable completion record; {again}") from None
    if record.get("stage") != stage and not lock_path(out, stage).exists():
        return None  # another stage's folder, holding a file of ours put there by hand
    for name, digest in record.get("files", {}).items():
        path = out / name
        if not path.is_file() or _sha256(path) != digest:
            change = "is gone" if not path.is_file() else "is not the file its run wrote"
            raise UserError(f"{out}: mixed {stage} output: {name} {change} ({RECORD}); {again}")
    return record
