"""Submitting a training grid, and the grid's state: per run, its progress and its job."""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellblock.cluster.executor import make_executor
from cellblock.cluster.grid import (
    TrainGrid,
    latest_iteration,
    load_manifest,
    new_job_folder,
    save_manifest,
)
from cellblock.cluster.jobs import Outcome, outcomes, run_throttled, sacct_states, submit
from cellblock.cluster.options import ClusterOptions
from cellblock.cluster.train_task import TrainTask

__all__ = ["RunStatus", "format_status", "grid_status", "submit_grid"]

log = logging.getLogger(__name__)


def submit_grid(
    grid: TrainGrid, cluster: str, options: ClusterOptions, wait: bool = False
) -> tuple[dict[str, Any] | None, list[Outcome] | None]:
    """Submit the grid's unfinished runs; record the submission in ``grid.json``.

    Every run's config is resolved first, so a bad key or fold fails before anything
    is submitted. On ``slurm`` the runs become one array job; ``local`` runs them here,
    ``options.array_parallelism`` at a time, and returns when they end; ``debug`` runs
    them in this process.

    Args:
        grid: The grid.
        cluster: ``slurm``, ``local`` or ``debug``.
        options: Resources per run, container image.
        wait: On slurm, wait for every task and return their outcomes.

    Returns:
        The submission record (None if every run was already finished), and the
        outcomes when they are known (local, debug, or slurm with ``wait``).
    """
    runs = grid.runs()
    specs = [grid.spec(r) for r in runs]
    for spec in specs:
        spec.resolved_config()  # ConfigError (naming the key) before anything is submitted
    todo = [
        (r, s)
        for r, s in zip(runs, specs, strict=True)
        if latest_iteration(r.run_dir) < grid.iterations
    ]
    skipped = len(runs) - len(todo)
    if skipped:
        log.info("skipping %d of %d runs: already at iteration %d", skipped, len(runs),
                 grid.iterations)  # fmt: skip
    grid.out.mkdir(parents=True, exist_ok=True)
    if not todo:
        save_manifest(grid)
        return None, None
    folder = new_job_folder(grid.out)
    binds = [grid.data, grid.out, grid.setup_dir, *([grid.init_from] if grid.init_from else [])]
    executor = make_executor(cluster, folder, options, binds=binds)
    calls = [TrainTask(spec) for _, spec in todo]
    if cluster == "slurm":
        jobs = submit(executor, calls)
    else:
        jobs = run_throttled(executor, calls, options.array_parallelism)
    submission = {
        "cluster": cluster,
        "folder": str(folder.relative_to(grid.out)),
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "jobs": {str(r.index): str(j.job_id) for (r, _), j in zip(todo, jobs, strict=True)},
    }
    save_manifest(grid, submission)
    log.info("submitted %d runs to %s (job %s); job files in %s", len(jobs), cluster,
             str(jobs[0].job_id).split("_")[0], folder)  # fmt: skip
    if cluster == "slurm" and not wait:
        return submission, None
    return submission, outcomes(jobs)


@dataclass(frozen=True)
class RunStatus:
    """The state of one run of a grid.

    Attributes:
        index: Position in the grid.
        channels: Channel subset folder name part (``ch1-2-3``).
        fold: Validation fold.
        run_dir: The run folder.
        iteration: Latest checkpoint's iteration (0: none yet).
        target: Iteration the grid trains to.
        job_id: Job of the latest submission that included the run ("" if none).
        state: ``COMPLETED``, ``RUNNING``, ``PENDING``, ``FAILED``, ``CANCELLED``...
            (sacct on SLURM; from the job's result file elsewhere), ``NOT SUBMITTED``.
    """

    index: int
    channels: str
    fold: int
    run_dir: Path
    iteration: int
    target: int
    job_id: str
    state: str


def _result_state(folder: Path, job_id: str) -> str:
    """COMPLETED / FAILED from submitit's result file of a local or debug job."""
    path = folder / f"{job_id}_0_result.pkl"
    try:
        with path.open("rb") as f:
            kind = pickle.load(f)[0]  # our own job folder: written by submitit for us
    except (OSError, pickle.UnpicklingError, EOFError, IndexError, TypeError):
        return "UNKNOWN"
    return "COMPLETED" if kind == "success" else "FAILED"


def grid_status(out: Path) -> list[RunStatus]:
    """The state of every run of the grid in ``out`` (one ``sacct`` call on SLURM)."""
    out = Path(out)
    manifest = load_manifest(out)
    latest: dict[int, tuple[dict[str, Any], str]] = {}
    for sub in manifest.get("submissions", []):
        for index, job_id in sub.get("jobs", {}).items():
            latest[int(index)] = (sub, str(job_id))
    slurm_ids = [j for s, j in latest.values() if s.get("cluster") == "slurm"]
    states = sacct_states(slurm_ids) if slurm_ids else {}
    rows = []
    for run in manifest["runs"]:
        sub, job_id = latest.get(int(run["index"]), ({}, ""))
        if not job_id:
            state = "NOT SUBMITTED"
        elif sub.get("cluster") == "slurm":
            state = states.get(job_id, "UNKNOWN")
        else:
            state = _result_state(out / sub.get("folder", ""), job_id)
        run_dir = out / run["run_dir"]
        rows.append(RunStatus(int(run["index"]), "ch" + "-".join(map(str, run["channels"])),
                              int(run["fold"]), run_dir, latest_iteration(run_dir),
                              int(manifest["iterations"]), job_id, state))  # fmt: skip
    return rows


def format_status(rows: list[RunStatus]) -> str:
    """A table of ``rows`` and a one-line summary."""
    header = ("run", "channels", "fold", "iteration", "job", "state", "folder")
    table = [header] + [
        (str(r.index), r.channels, str(r.fold), f"{r.iteration}/{r.target}", r.job_id or "-",
         r.state, str(r.run_dir))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in table
    ]
    done = sum(r.iteration >= r.target for r in rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines.append(f"{done} of {len(rows)} runs at their target iteration; jobs: {summary}")
    return "\n".join(lines)
