"""The blockwise prediction driver: validate, prepare ``PRED``, run daisy, summarize.

Order matters: every check that can fail on bad input (``make_plan``: checkpoint,
channels, split, experiments, TTA; then launcher, GPUs, container) runs before the
output folder is touched and long before a worker starts. Then the store is created
or reopened (``prepare_output``), the plan saved for the workers, and one daisy task
runs the blocks with persistent workers started by the chosen launcher. The summary
counts completed / skipped / failed blocks; ``RunSummary.ok`` is False (and the
script exits non-zero) if any block is not done.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellblock.blockwise.launcher import (
    ContainerWrapper,
    WorkerSpec,
    launcher_class,
)
from cellblock.blockwise.output import driver_lock, prepare_output
from cellblock.blockwise.plan import Plan
from cellblock.blockwise.report import RunSummary, read_block_lines, read_failures
from cellblock.blockwise.task import (
    done_count,
    make_task,
    repair_done_markers,
    run_task,
    tracking_path,
)
from cellblock.devices import worker_gpus
from cellblock.errors import UserError
from cellblock.paths import SIF_ENV
from cellblock.progress import polled_progress

__all__ = ["LaunchOptions", "predict_blockwise", "worker_argv", "worker_cpus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchOptions:
    """How the workers run.

    Args:
        workers: Concurrent workers; None = one per GPU, else 1.
        gpus: GPU ids to pin workers to; None = every visible GPU (local), none otherwise.
        cluster: Launcher name (``local``, ``slurm``; see ``launcher.LAUNCHERS``).
        cluster_options: Settings for that launcher (e.g. a SLURM partition).
        sif: Singularity/Apptainer image to run the workers in (None: ``$CELLBLOCK_SIF``
            if set; ``""``: none).
        host: Address of the daisy server; None = the launcher's default (loopback
            for local workers).
        max_restarts: Worker starts allowed beyond ``workers``; None = max(2, workers).
        max_retries: Retries of a failed block.
        block_timeout: Seconds before a block's worker is killed; None = daisy's default.
        overwrite: Start afresh (see ``prepare_output``).
        progress: Show daisy's progress bar.
    """

    workers: int | None = None
    gpus: tuple[str, ...] | None = None
    cluster: str = "local"
    cluster_options: dict[str, Any] = field(default_factory=dict)
    sif: str | None = None
    host: str | None = None
    max_restarts: int | None = None
    max_retries: int = 2
    block_timeout: float | None = None
    overwrite: bool = False
    progress: bool = False


def _gpus(opts: LaunchOptions) -> tuple[str, ...]:
    """Each local worker's ``CUDA_VISIBLE_DEVICES``: ``--gpus`` ids among this job's GPUs,
    mapped through our own mask (``cellblock.devices.worker_gpus``)."""
    if opts.cluster != "local":
        return tuple(opts.gpus or ())  # SLURM gives each worker job its own GPUs
    import torch

    return worker_gpus(opts.gpus, os.environ, torch.cuda.device_count())


def worker_argv(plan: Plan, plan_path: Path) -> tuple[str, ...]:
    """The worker command: ``python -m cellblock.blockwise.worker --plan P [--setup DIR]``.

    The library's own module, whichever way it is installed (a checkout, a wheel, the
    container image's copy); the setup folder, when the run names one, rides along.

    Args:
        plan: The plan (its ``setup_dir``).
        plan_path: Where the plan is saved (``PRED/blockwise/plan.json``).
    """
    setup = ("--setup", plan.setup_dir) if plan.setup_dir else ()
    return (sys.executable, "-m", "cellblock.blockwise.worker", "--plan", str(plan_path), *setup)


# CPUs a SLURM GPU worker asks for unless --readers says: decoding a 6x512x512 zstd site
# costs 2.5-3.5 ms of a core, so ~2,000 img/s of an H100 needs 6-8 readers, plus the
# worker's main thread and its chunk writer
GPU_WORKER_READERS = 8


def worker_cpus(options: dict[str, Any], readers: int | None) -> dict[str, Any]:
    """SLURM worker options with ``cpus`` matching the worker's readers, unless given.

    A GPU worker gets ``readers + 2`` CPUs (``GPU_WORKER_READERS`` readers by default);
    a CPU worker keeps SLURM's one. ``--cluster-option cpus=N`` always wins.
    """
    if "cpus" in options or str(options.get("gpus", "0")) in ("", "0"):
        return options
    return {**options, "cpus": str((GPU_WORKER_READERS if readers is None else readers) + 2)}


def _cpu_threads(workers: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // workers)


def _repair(plan: Plan, tracking: Path) -> int:
    """Unmark done blocks whose chunks are missing or damaged; say so; how many."""
    repaired = repair_done_markers(plan.grid, tracking, plan.store)
    if repaired:
        from cellblock.store.packed import PackedDataset

        fmt = PackedDataset(plan.dataset).info.plate_format
        key, row, col = repaired[0]
        log.warning(
            "%d done block(s) have missing or damaged chunks in %s (first: %s well %s);"
            " predicting them again",
            len(repaired),
            plan.store,
            key,
            fmt.well_name(row, col),
        )
    return len(repaired)


def _run_with_progress(
    task: Any, host: str | None, opts: LaunchOptions, plan: Plan, tracking: Path, before: int
) -> Any:
    """``run_task``, its progress shown: daisy's own bar at a terminal when asked
    (``--progress``); else blocks done, polled from the tracking array (a bar at a
    terminal, a log line every 30 s off one, where daisy's bar would write carriage
    returns or nothing)."""
    daisy_bar = opts.progress and sys.stderr.isatty()
    to_run = max(int((plan.grid.skip_mask() == 0).sum()) - before, 0)
    with polled_progress(
        lambda: done_count(tracking) - before, to_run, "predict", "block", disable=daisy_bar
    ):
        return run_task(task, host, daisy_bar, plan.log_dir / "daisy")


def predict_blockwise(plan: Plan, opts: LaunchOptions, launched: float | None = None) -> RunSummary:
    """Predict every block of ``plan`` with persistent daisy workers.

    Args:
        plan: From ``make_plan`` (validated, nothing written yet).
        opts: Workers, GPUs, launcher, server address, restart cap.
        launched: When the user started the command (``time.time()``), for the time
            to the first block; default: now.

    Returns:
        The run's summary (``ok`` False if a block is not done).

    Raises:
        UserError: Bad launch options, found before any worker starts.
    """
    launched = time.time() if launched is None else launched
    launcher_cls = launcher_class(opts.cluster)
    gpus = _gpus(opts)
    workers = opts.workers if opts.workers is not None else max(1, len(gpus))
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    wrapper = None
    if opts.sif or (opts.sif is None and os.environ.get(SIF_ENV)):
        # what the worker reads and writes; the code is the image's own cellblock
        binds = tuple(p for p in (plan.dataset, plan.out, plan.run, plan.setup_dir) if p)
        wrapper = ContainerWrapper(opts.sif, binds)
    if not gpus and opts.cluster == "local":  # SLURM workers: OMP_NUM_THREADS = their cpus
        plan = dataclasses.replace(plan, cpu_threads=plan.cpu_threads or _cpu_threads(workers))
    host = opts.host if opts.host is not None else launcher_cls.default_host
    max_restarts = max(2, workers) if opts.max_restarts is None else opts.max_restarts
    if max_restarts < 0:
        raise UserError(f"--max-restarts must be at least 0, got {max_restarts}")
    plan_path = plan.state_dir / "plan.json"
    spec = WorkerSpec(worker_argv(plan, plan_path), str(plan.log_dir), gpus, {}, wrapper)
    options = (
        worker_cpus(opts.cluster_options, plan.readers)
        if opts.cluster == "slurm"
        else opts.cluster_options
    )
    launcher = launcher_cls(spec, **options)  # checks its options: nothing written yet
    with driver_lock(plan):
        prepare_output(plan, opts.overwrite)
        plan.save(plan_path)
        tracking = tracking_path(plan.state_dir, plan.grid)
        repaired = _repair(plan, tracking)
        before = done_count(tracking)
        task = make_task(plan.grid, launcher, workers=workers, tracking=tracking,
                         max_worker_restarts=max_restarts, max_retries=opts.max_retries,
                         timeout=opts.block_timeout)  # fmt: skip
        log.info("predicting %d sites of %d plates in blocks of %s wells: %d worker(s) %s, "
                 "daisy server on %s", plan.grid.n_sites, len(plan.grid.plates),
                 "x".join(map(str, plan.grid.block[1:])), workers,
                 f"on GPUs {','.join(gpus)}" if gpus else "on CPU",
                 host or "this node's address")  # fmt: skip
        start, cpu = time.time(), time.process_time()
        result = _run_with_progress(task, host, opts, plan, tracking, before)
        seconds, cpu = time.time() - start, time.process_time() - cpu
        after = done_count(tracking)
        lines = read_block_lines(plan.state_dir, plan.run_id)
        records = read_failures(plan.state_dir)
    return RunSummary.build(
        plan.grid,
        result,
        done_before=before,
        done_after=after,
        lines=lines,
        records=records,
        seconds=seconds,
        driver_cpu_s=cpu,
        started=launched,
        workers=workers,
        store=plan.store,
        log_dir=plan.log_dir,
        repaired=repaired,
    )
