"""Submitting calls and commands as jobs, waiting for them, cancelling them, asking SLURM.

- :func:`submit`: many calls at once; on SLURM one array job, elsewhere one job each.
- :func:`run_throttled`: the local executor's stand-in for an array's ``%N`` limit.
- :func:`outcomes`: wait for jobs and say how each ended (value or error).
- :func:`submit_command` / :func:`run_blocking`: a command line (e.g. a daisy worker
  with ``DAISY_CONTEXT`` in its environment) as its own job, blocking until it ends:
  ``sbatch --wait`` semantics through submitit, so a cancelled or killed job raises
  (accounting tells submitit) instead of leaving the caller waiting.
- :func:`cancel_on_exit`: jobs that must not outlive their driver (its end, an
  exception, or SIGTERM from ``scancel`` of the driver's own job).
- :func:`sacct_states`: the SLURM state of job ids, as ``sacct`` records it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from cellblock.cli.interrupt import handling
from cellblock.errors import UserError

__all__ = [
    "Outcome",
    "RunCommand",
    "cancel_on_exit",
    "outcomes",
    "run_blocking",
    "run_throttled",
    "sacct_states",
    "submission_env",
    "submit",
    "submit_command",
]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def submission_env() -> Iterator[None]:
    """Hide an enclosing job's ``SLURM_*`` variables (all but ``SLURM_CONF``) while submitting.

    A job submitted from inside a job (a driver submitting its workers) inherits them,
    and srun in the new job then mixes the two jobs' settings (e.g. "SLURM_MEM_PER_CPU
    and SLURM_MEM_PER_NODE are mutually exclusive").
    """
    saved = {k: v for k, v in os.environ.items() if k.startswith("SLURM_") and k != "SLURM_CONF"}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def submit(executor: submitit.Executor, calls: Sequence[Callable[[], Any]]) -> list[submitit.Job]:
    """Submit ``calls`` (each called without arguments in its job); return their jobs.

    On SLURM several calls become one array job (at most ``array_parallelism`` tasks
    running at once); the local executor starts every call at once (see
    :func:`run_throttled`); debug runs each when its result is asked for.

    Raises:
        UserError: The scheduler refused the submission (its message included).
    """
    if not calls:
        return []
    with submission_env():
        try:
            if len(calls) == 1:
                return [executor.submit(calls[0])]
            with executor.batch():
                jobs = [executor.submit(call) for call in calls]
        except (FailedJobError, FailedSubmissionError, OSError) as e:
            first = str(e).strip().splitlines()
            raise UserError(f"submission refused: {' '.join(first[-3:]) or e!r}") from None
    return jobs


def run_throttled(
    executor: submitit.Executor,
    calls: Sequence[Callable[[], Any]],
    parallelism: int,
    poll_s: float = 0.5,
) -> list[submitit.Job]:
    """Run ``calls`` with at most ``parallelism`` jobs at a time; return when all ended.

    For the local and debug executors, which have no scheduler to hold jobs back.

    Args:
        executor: A ``local`` or ``debug`` executor.
        calls: Calls to run, each without arguments.
        parallelism: Jobs running at once.
        poll_s: Seconds between checks for finished jobs.
    """
    if isinstance(getattr(executor, "_executor", executor), submitit.DebugExecutor):
        # Debug runs each call in this process when its result is asked for (outcomes).
        return [submit(executor, [call])[0] for call in calls]
    jobs: list[submitit.Job] = []
    pending = list(calls)
    running: list[submitit.Job] = []
    while pending or running:
        while pending and len(running) < max(1, parallelism):
            job = submit(executor, [pending.pop(0)])[0]
            jobs.append(job)
            running.append(job)
        running = [j for j in running if not j.done()]
        if running:
            time.sleep(poll_s)
    return jobs


@dataclass(frozen=True)
class Outcome:
    """How a job ended.

    Attributes:
        job_id: The job's id (``123``, ``123_4`` for an array task).
        ok: True if the call returned.
        value: What it returned (ok), else the error message (with the job's traceback).
    """

    job_id: str
    ok: bool
    value: Any


def outcomes(jobs: Sequence[submitit.Job]) -> list[Outcome]:
    """Wait for each job (in order) and say how it ended; never raises for a failed job."""
    out = []
    for job in jobs:
        try:
            out.append(Outcome(str(job.job_id), True, job.result()))
        except Exception as e:  # failed, cancelled, killed: all are outcomes here
            out.append(Outcome(str(job.job_id), False, f"{type(e).__name__}: {e}"))
    return out


@dataclass
class RunCommand:
    """A picklable call that runs a command line in its job and fails if the command does.

    Output goes straight to the job's stdout/stderr files (submitit's
    ``CommandFunction`` would hold it all in memory until the end).

    Attributes:
        argv: The command, e.g. ``[python, predict.py, ...]`` or a container-wrapped one.
        env: Variables added to the job's environment (e.g. ``DAISY_CONTEXT``); values
            travel pickled, so ``:`` and ``=`` in them need no quoting.
        cwd: Working directory (None: the job's).
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None

    def __call__(self) -> int:
        result = subprocess.run(self.argv, env={**os.environ, **self.env}, cwd=self.cwd)
        if result.returncode != 0:
            raise RuntimeError(f"{self.argv[0]} exited with code {result.returncode}")
        return 0


def submit_command(
    executor: submitit.Executor,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> submitit.Job:
    """Submit ``argv`` as its own job (not a step of the caller's allocation).

    Args:
        executor: From ``make_executor`` (its resources apply to this job).
        argv: The command line.
        env: Variables added to the job's environment.
        cwd: Working directory of the command.
    """
    return submit(executor, [RunCommand(list(argv), dict(env or {}), cwd)])[0]


def run_blocking(
    executor: submitit.Executor,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    jobs: list[submitit.Job] | None = None,
) -> None:
    """Run ``argv`` as a job and wait for it (``sbatch --wait``); raise if it did not succeed.

    Args:
        executor: From ``make_executor`` (its resources apply to this job).
        argv: The command line.
        env: Variables added to the job's environment.
        cwd: Working directory of the command.
        jobs: A list the job is appended to as soon as it is submitted, e.g. the one of
            :func:`cancel_on_exit`, so that the job dies with its waiter.

    Raises:
        submitit.core.utils.UncompletedJobError: The job failed, was cancelled or killed.
    """
    job = submit_command(executor, argv, env, cwd)
    if jobs is not None:
        jobs.append(job)
    log.info("job %s: %s", job.job_id, " ".join(argv))
    job.result()


@contextlib.contextmanager
def cancel_on_exit(jobs: list[submitit.Job]) -> Iterator[list[submitit.Job]]:
    """Cancel the jobs of ``jobs`` (a list the caller may append to) still running at exit.

    While active in the main thread, SIGTERM (what ``scancel`` sends a driver job)
    raises so that this cleanup runs instead of the process just dying: the stage's own
    ``Interrupted`` where ``cellblock.cli.run`` handles the stop signals (it then prints
    the interrupted line), else ``SystemExit(143)``.
    """
    previous = None
    if threading.current_thread() is threading.main_thread() and not handling(signal.SIGTERM):

        def _terminate(signum: int, frame: object) -> None:
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield jobs
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for job in jobs:
            with contextlib.suppress(Exception):
                if not job.done():
                    job.cancel(check=False)
                    log.info("cancelled job %s", job.job_id)


def sacct_states(job_ids: Sequence[str], timeout: float = 30.0) -> dict[str, str]:
    """The state of each job id (``123`` or array task ``123_4``) as ``sacct`` records it.

    ``COMPLETED``, ``RUNNING``, ``PENDING``, ``FAILED``, ``CANCELLED``, ``TIMEOUT``,
    ``REQUEUED``, ...; ``UNKNOWN`` where sacct has no record (yet), or SLURM is absent.
    """
    from submitit.slurm.slurm import SlurmInfoWatcher

    states = dict.fromkeys(job_ids, "UNKNOWN")
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return states
    try:
        result = subprocess.run(
            ["sacct", "-P", "-X", "-o", "JobID,State", "-j", ",".join(arrays)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError):
        return states
    if result.returncode != 0:
        return states
    # submitit's own parser: it expands pending array ranges like 12_[3-7%2].
    info = SlurmInfoWatcher().read_info(result.stdout)
    for job_id in job_ids:
        state = info.get(job_id, {}).get("State", "")
        if state:
            states[job_id] = state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    return states
