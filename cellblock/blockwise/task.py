"""The daisy side: one ``Task`` over the plan's blocks, run by a server on a chosen address.

- Done markers: ``tracking_path`` is ``PRED/blockwise/tracking/<grid fingerprint>``,
  so a rerun of the same layout skips finished blocks, and another layout (other
  plates, another block size) can never inherit markers that meant other wells.
- Runaway respawn: a task starts at most ``workers + max_worker_restarts`` workers
  in all; past that daisy abandons it (remaining blocks orphaned) instead of
  respawning a worker that crashes at start forever.
- A block is retried ``max_retries`` times, then counted failed (and left unmarked,
  so the next run tries it again).
- The server binds to ``host``: ``127.0.0.1`` for local workers; a cluster launcher
  asks for this node's address (None: daisy detects it) or the given interface.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from cellblock.blockwise.geometry import BlockGrid

__all__ = [
    "TASK_ID",
    "TaskResult",
    "done_count",
    "make_task",
    "repair_done_markers",
    "run_task",
    "tracking_path",
]

log = logging.getLogger(__name__)
TASK_ID = "predict"


def tracking_path(state_dir: Path, grid: BlockGrid) -> Path:
    """``STATE/tracking/<fingerprint>``: daisy's done markers of this grid."""
    return Path(state_dir) / "tracking" / grid.fingerprint()


def done_count(path: Path) -> int:
    """Blocks marked done in a tracking folder (daisy's ``done`` array: a byte per block)."""
    done = Path(path) / "done"
    if not (done / "zarr.json").is_file():
        return 0
    return int(np.count_nonzero(zarr.open_array(done, mode="r")[:]))


def repair_done_markers(grid: BlockGrid, tracking: Path, store: Path) -> list[tuple[str, int, int]]:
    """Unmark every done block whose chunks are missing or damaged, so it runs again.

    A done marker says a block's chunks were written; it cannot say they are still there
    (deleted, or damaged on disk). Each done block's wells are checked in the store
    (``damaged_wells``) before daisy trusts the marker.

    Args:
        grid: The run's blocks.
        tracking: Its done-marker folder (``tracking_path``).
        store: The predictions store.

    Returns:
        ``(plate, row, col)`` of the first damaged well of each block unmarked.
    """
    from cellblock.store.predictions import damaged_wells

    path = Path(tracking) / "done"
    if not (path / "zarr.json").is_file():
        return []
    done = zarr.open_array(path, mode="r+")
    marks = np.asarray(done[:])
    repaired = []
    for index, (offset, shape) in zip(np.ndindex(*grid.grid_shape), grid.blocks(), strict=True):
        if not marks[index]:
            continue
        key, wells = grid.wells_in(offset, shape)
        bad = damaged_wells(store, key, wells) if wells else []
        if bad:
            marks[index] = 0
            repaired.append((key, *bad[0]))
    if repaired:
        done[:] = marks
    return repaired


def make_task(
    grid: BlockGrid,
    launcher: Any,
    *,
    workers: int,
    tracking: Path,
    max_worker_restarts: int,
    max_retries: int = 2,
    timeout: float | None = None,
) -> Any:
    """The daisy Task: blocks of ``grid``, each worker started by ``launcher``.

    Args:
        grid: The blocks.
        launcher: A ``WorkerLauncher`` (called by daisy with ``context=``).
        workers: Concurrent workers.
        tracking: Done-marker folder (``tracking_path``).
        max_worker_restarts: Worker starts beyond ``workers``, in all.
        max_retries: Retries of a failed block.
        timeout: Seconds one block may take before its worker is killed and the block
            retried; None = daisy's default.
    """
    import daisy.v2 as daisy
    from funlib.geometry import Roi

    block = Roi((0, 0, 0), grid.block)
    extra = {} if timeout is None else {"timeout": timeout}
    return daisy.Task(
        TASK_ID,
        total_roi=Roi(grid.origin, grid.extent),
        read_roi=block,
        write_roi=block,
        process_function=launcher.__call__,
        read_write_conflict=False,  # blocks neither overlap nor depend on each other
        fit="shrink",  # the last block of a row may be cut by the bounding box
        max_workers=workers,
        max_retries=max_retries,
        tracking_path=str(tracking),
        max_worker_restarts=max_worker_restarts,
        skip_mask=grid.skip_mask(),
        **extra,
    )


@dataclass(frozen=True)
class TaskResult:
    """What daisy reports of a finished run.

    Args:
        total: Blocks of the grid (empty ones included).
        failed: Blocks that failed ``max_retries + 1`` times.
        orphaned: Blocks never run (the task was abandoned).
        abandoned: True if the worker restart cap ended the run.
        abandon_reason: daisy's reason.
        last_worker_error: The last error a worker or block reported.
        failed_blocks: ``(block_id, offset, shape)`` of the failed blocks.
        worker_failures: Dirty worker exits.
        restarts: Workers started beyond ``workers``.
    """

    total: int
    failed: int
    orphaned: int
    abandoned: bool
    abandon_reason: str | None
    last_worker_error: str | None
    failed_blocks: tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...]
    worker_failures: int
    restarts: int


def run_task(task: Any, host: str | None, progress: bool, log_dir: Path) -> TaskResult:
    """Run ``task`` to the end on a daisy server bound to ``host``.

    Args:
        task: From ``make_task``.
        host: Address to bind and advertise (None: daisy detects this node's).
        progress: Show daisy's progress bar.
        log_dir: Where daisy writes its own per-worker-slot logs (the launcher's
            output), instead of ``./daisy_logs`` in whatever the working directory is.
    """
    import daisy.logging as daisy_logging
    import daisy.v2 as daisy

    daisy_logging.set_log_basedir(str(log_dir))
    states = daisy.Server().run_blockwise(task, progress=progress, host=host, summary=False)
    state = states[TASK_ID]
    failed = tuple(
        (int(b.block_id[1]), tuple(b.write_roi.offset), tuple(b.write_roi.shape))
        for b in task.failed_blocks()
    )
    return TaskResult(
        total=state.total_block_count,
        failed=state.failed_count,
        orphaned=state.orphaned_count,
        abandoned=state.abandoned,
        abandon_reason=state.abandon_reason,
        last_worker_error=state.last_worker_error,
        failed_blocks=failed,
        worker_failures=state.worker_failure_count,
        restarts=state.worker_restart_count,
    )
