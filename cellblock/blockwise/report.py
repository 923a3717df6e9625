"""The end-of-run summary: what was done, skipped and failed, how fast, and why not.

Counts come from daisy's done markers (before and after the run) and its task
state; speed and the time to the first block from the workers' ``blocks.jsonl``;
the why of a failed block from the worker's failure record (plate, wells,
traceback, log path), falling back to daisy's last worker error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellblock.blockwise.geometry import BlockGrid
from cellblock.blockwise.task import TaskResult

__all__ = ["BlockFailure", "RunSummary", "read_block_lines", "read_failures"]


@dataclass(frozen=True)
class BlockFailure:
    """A block that failed for good.

    Args:
        block_id: daisy's block id.
        plate: ``"EXP/PlateN"``.
        wells: Its well names.
        traceback: The worker's traceback ("" if no record).
        log: The worker's log file ("" if unknown).
    """

    block_id: int
    plate: str
    wells: tuple[str, ...]
    traceback: str = ""
    log: str = ""


def read_failures(state_dir: Path) -> dict[int, dict[str, Any]]:
    """Failure records of the workers (``STATE/failures/block_{id}.json``) by block id."""
    out = {}
    for path in sorted((Path(state_dir) / "failures").glob("block_*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a record is written atomically; anything else is not ours
        out[int(record["block_id"])] = record
    return out


def read_block_lines(state_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """The ``blocks.jsonl`` lines of run ``run_id`` (one per finished block)."""
    path = Path(state_dir) / "blocks.jsonl"
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue  # a line cut by a killed worker
        if line.get("run_id") == run_id:
            lines.append(line)
    return lines


@dataclass(frozen=True)
class RunSummary:
    """A blockwise run, for people (``format``) and scripts (``ok``, fields).

    Args:
        blocks: Blocks holding selected wells.
        done_before: Of them, done before this run (skipped).
        completed: Done by this run.
        failed: Failed for good in this run.
        not_run: Never run (the task was abandoned or interrupted).
        sites: Sites predicted by this run.
        seconds: Wall time of the run (server start to end).
        busy_s: From the first block's start to the last block's end: the processing
            window, without worker start-up.
        block_s: Seconds the workers spent in blocks, summed over blocks.
        cpu_s: CPU seconds the workers spent in blocks (all their threads).
        driver_cpu_s: CPU seconds of the driver (daisy's server) during the run.
        first_block_s: Seconds from the driver's start to the first finished block.
        workers: Concurrent workers.
        restarts: Workers started beyond ``workers``.
        failures: The failed blocks, with tracebacks.
        abandon_reason: Why daisy gave up, if it did.
        worker_error: The last worker error daisy saw, if the run was abandoned.
        store: The predictions store.
        log_dir: The worker logs.
        repaired: Blocks marked done whose chunks were missing or damaged, run again.
    """

    blocks: int
    done_before: int
    completed: int
    failed: int
    not_run: int
    sites: int
    seconds: float
    busy_s: float | None
    block_s: float
    cpu_s: float
    driver_cpu_s: float
    first_block_s: float | None
    workers: int
    restarts: int
    failures: tuple[BlockFailure, ...] = ()
    abandon_reason: str | None = None
    worker_error: str | None = None
    store: str = ""
    log_dir: str = ""
    repaired: int = 0

    @property
    def ok(self) -> bool:
        """Every block with wells is done."""
        return self.failed == 0 and self.not_run == 0 and self.abandon_reason is None

    @property
    def sites_per_s(self) -> float:
        """Sites per second of wall time (worker start-up included)."""
        return self.sites / self.seconds if self.seconds > 0 else 0.0

    @property
    def busy_sites_per_s(self) -> float | None:
        """Sites per second while blocks were processed (the steady rate)."""
        return self.sites / self.busy_s if self.busy_s else None

    @classmethod
    def build(
        cls,
        grid: BlockGrid,
        result: TaskResult,
        *,
        done_before: int,
        done_after: int,
        lines: list[dict[str, Any]],
        records: dict[int, dict[str, Any]],
        seconds: float,
        driver_cpu_s: float,
        started: float,
        workers: int,
        store: Path,
        log_dir: Path,
        repaired: int = 0,
    ) -> RunSummary:
        """Assemble the summary of a finished run (see the module docstring).

        Long because it documents its twelve inputs and names every field it fills;
        the arithmetic is a dozen lines.

        Args:
            grid: The run's block grid.
            result: daisy's task result.
            done_before: Blocks done (marked) before the run.
            done_after: Blocks done after it.
            lines: The run's ``blocks.jsonl`` lines (``read_block_lines``).
            records: The workers' failure records by block id (``read_failures``).
            seconds: Wall time of the run.
            driver_cpu_s: CPU time of the driver process.
            started: When the user started the command (``time.time()``).
            workers: Number of workers.
            store: The predictions store.
            log_dir: The workers' log folder.
            repaired: Done blocks found damaged and run again.
        """
        n_blocks = result.total - int(grid.skip_mask().sum())
        completed = done_after - done_before
        failed_ids = {b[0] for b in result.failed_blocks}
        failures = []
        for block_id, offset, shape in result.failed_blocks:
            key, wells = grid.wells_in(offset, shape)
            record = records.get(block_id, {})
            names = tuple(record.get("wells") or (f"r{r}c{c}" for r, c in wells))
            failures.append(BlockFailure(block_id, key, names, record.get("traceback", ""),
                                         record.get("log", "")))  # fmt: skip
        ends = [line["end"] for line in lines]
        starts = [line.get("start", line["end"] - line["seconds"]) for line in lines]
        return cls(
            blocks=n_blocks,
            done_before=done_before,
            completed=completed,
            failed=len(failed_ids),
            not_run=max(0, n_blocks - done_after - len(failed_ids)),
            sites=sum(line["sites"] for line in lines),
            seconds=seconds,
            busy_s=(max(ends) - min(starts)) if ends else None,
            block_s=sum(line["seconds"] for line in lines),
            cpu_s=sum(line.get("cpu_s", 0.0) for line in lines),
            driver_cpu_s=driver_cpu_s,
            first_block_s=(min(ends) - started) if ends else None,
            workers=workers,
            restarts=result.restarts,
            failures=tuple(failures),
            abandon_reason=result.abandon_reason if result.abandoned else None,
            worker_error=result.last_worker_error if result.abandoned else None,
            store=str(store),
            log_dir=str(log_dir),
            repaired=repaired,
        )

    def format(self) -> str:
        """A few lines for the terminal; failures with block, wells, log and traceback."""
        first = "-" if self.first_block_s is None else f"{self.first_block_s:.1f} s"
        busy = self.busy_sites_per_s
        steady = "" if busy is None else f", {busy:.1f} img/s while processing"
        lines = [
            f"blocks: {self.blocks} with wells; {self.completed} completed now, "
            f"{self.done_before} skipped (done before), {self.failed} failed, "
            f"{self.not_run} not run"
            + (f"; {self.repaired} repaired (done, but chunks missing)" if self.repaired else ""),
            f"sites: {self.sites} in {self.seconds:.1f} s ({self.sites_per_s:.1f} img/s{steady}) "
            f"with {self.workers} worker(s), {self.restarts} restart(s); first block after {first}",
            f"predictions: {self.store}",
            f"worker logs: {self.log_dir}",
        ]
        for f in self.failures:
            wells = ",".join(f.wells)
            lines.append(f"FAILED block {f.block_id}: {f.plate} wells {wells}; "
                         f"worker log: {f.log or self.log_dir}")  # fmt: skip
            if f.traceback:
                lines += ["    " + t for t in f.traceback.rstrip().splitlines()]
        if self.abandon_reason:
            lines.append(f"ABANDONED: {self.abandon_reason}; last worker error:")
            lines += ["    " + t for t in (self.worker_error or "(none)").rstrip().splitlines()]
        if not self.ok:
            lines.append("rerun the same command to retry what is not done (done blocks are "
                         "skipped)")  # fmt: skip
        return "\n".join(lines)
