"""``--cluster slurm`` for blockwise prediction: every daisy worker is its own SLURM job.

:class:`SlurmLauncher` is the ``WorkerLauncher`` that ``predict_blockwise.py --cluster
slurm`` uses (registered in ``cellblock.blockwise.launcher.LAUNCHERS``). daisy calls it
once per worker slot, in a process of its own; the call submits the worker command as
a job of its own (not an ``srun`` step of the driver's allocation) and blocks until
that job ends (``sbatch --wait`` semantics: :func:`cellblock.cluster.jobs.run_blocking`,
which learns through accounting that a cancelled or killed job is over).

- The job's environment gets ``DAISY_CONTEXT`` (which server, which worker) and
  ``CELLBLOCK_WORKER_LOG``; the worker's output is appended to
  ``PRED/logs/worker_{id}.log``, as with local workers. Job files (the sbatch script,
  submitit's own stdout/stderr) go to ``PRED/logs/slurm/<submission>/``.
- A job that fails, or is cancelled (``scancel``), raises ``WorkerExitError`` naming
  the job, its SLURM state, its log and the log's tail: daisy counts it as a dirty
  exit, starts a replacement worker (within ``--max-restarts``) and retries the block
  the lost worker held.
- Worker jobs never outlive the driver: the launcher cancels its job when it is
  terminated (daisy shutting a slot down, or ``scancel`` of the driver's own job) and
  when its parent, the driver, has gone (even after SIGKILL).
- ``--sif``: the job's Python runs in the image (``apptainer exec --nv -B ...``, the
  ``ContainerWrapper``'s image and binds), and the worker script with the image's
  ``python``: one container layer, so a driver that itself runs in the image works too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from cellblock.blockwise.launcher import (
    WORKER_LOG_ENV,
    ContainerWrapper,
    WorkerExitError,
    WorkerLauncher,
    WorkerSpec,
    worker_log_path,
)
from cellblock.cluster.options import ClusterOptions, parse_mem_gb, parse_time_min
from cellblock.errors import UserError

__all__ = ["SlurmLauncher", "WorkerJobError", "cluster_options", "detect_host"]

log = logging.getLogger(__name__)

#: ``--cluster-option`` keys that are :class:`ClusterOptions` fields; any other key is
#: an extra ``#SBATCH`` flag (``constraint=a100`` -> ``#SBATCH --constraint=a100``).
KNOWN = ("partition", "account", "qos", "time", "mem", "cpus", "gpus", "job_name")
PARENT_POLL_S = 1.0

# Appends the worker's output to its log, after a header naming the node and the job.
_LOG_SHELL = ('echo "=== worker $1 on $(hostname), SLURM job $SLURM_JOB_ID, started '
              '$(date \'+%Y-%m-%d %H:%M:%S\') ===" >> "$2"; shift 2; exec "$@" >> "$'
              + WORKER_LOG_ENV + '" 2>&1')  # fmt: skip


def cluster_options(options: dict[str, Any]) -> ClusterOptions:
    """The worker jobs' resources from ``--cluster-option KEY=VALUE`` settings.

    Args:
        options: ``partition``, ``account``, ``qos``, ``time`` (minutes, or SLURM's
            ``D-H:M:S`` or ``H:M:S``),
            ``mem`` (``16G``), ``cpus`` (per worker), ``gpus`` (per worker),
            ``job_name``; any other key is passed to sbatch as ``--KEY=VALUE``
            (an empty value: ``--KEY``).

    Raises:
        UserError: A value SLURM would not take (naming the option).
    """
    opts = {k.replace("-", "_"): v for k, v in options.items()}
    extra = {k: "" if v is None else str(v) for k, v in opts.items() if k not in KNOWN}
    try:
        cpus, gpus = int(opts.get("cpus", 1)), int(opts.get("gpus", 0))
    except (TypeError, ValueError):
        raise UserError(f"--cluster-option cpus/gpus: expected whole numbers, got "
                        f"{opts.get('cpus')!r}/{opts.get('gpus')!r}") from None  # fmt: skip
    return ClusterOptions(
        partition=_text(opts.get("partition")),
        account=_text(opts.get("account")),
        qos=_text(opts.get("qos")),
        time_min=parse_time_min(opts.get("time", 60)),
        gpus=gpus,
        cpus=cpus,
        mem_gb=parse_mem_gb(opts["mem"]) if opts.get("mem") is not None else None,
        job_name=str(opts.get("job_name", "cellblock-predict")),
        extra=extra,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class WorkerJobError(WorkerExitError):
    """A worker job that did not complete: ``WorkerExitError`` plus the job's SLURM state.

    Args:
        worker_id: daisy's worker id.
        job_id: The SLURM job id.
        code: The worker's exit status (-15 for a job cancelled or killed).
        log_path: The worker's log.
        state: The job's state as ``sacct`` has it (``FAILED``, ``CANCELLED``, ...).
    """

    def __init__(self, worker_id: int, job_id: str, code: int, log_path: Path, state: str):
        super().__init__(worker_id, f"SLURM job {job_id}", code, log_path)
        first, _, rest = self.args[0].replace("(pid SLURM job", "(SLURM job", 1).partition("\n")
        self.args = (f"{first}; job state {state}" + (f"\n{rest}" if rest else ""),)
        self.job_id, self.state = job_id, state


@contextlib.contextmanager
def _cancel_when_orphaned(poll_s: float = PARENT_POLL_S) -> Any:
    """SIGTERM ourselves (-> ``cancel_on_exit``'s cleanup) if our parent, the driver, dies.

    A driver killed with SIGKILL cannot clean up; its launcher processes are left
    waiting on their jobs. Each notices that it was re-parented and cancels its job.
    """
    parent, stop = os.getppid(), threading.Event()

    def watch() -> None:
        while not stop.wait(poll_s):
            if os.getppid() != parent:
                log.warning("the driver (pid %d) is gone: cancelling this worker's job", parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="driver-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def detect_host(timeout: float = 10.0) -> str | None:
    """The daisy server address for SLURM workers: loopback if every node is this machine.

    A cluster whose nodes all have a loopback ``NodeAddr`` (the single-node cluster of
    ``scripts/slurm_local.sh``) gets ``127.0.0.1``: nothing else needs to reach the
    server. Any other cluster (or ``sinfo`` failing) gets None: daisy resolves this
    node's hostname, else takes its default-route interface, checks the address,
    advertises it and listens on every interface, so workers on other nodes connect.
    """
    try:
        r = subprocess.run(["sinfo", "-h", "-N", "-o", "%o"], capture_output=True, text=True,
                           timeout=timeout)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    addresses = set(r.stdout.split()) if r.returncode == 0 else set()
    if addresses and all(a == "localhost" or a.startswith("127.") for a in addresses):
        return "127.0.0.1"
    return None


class _DefaultHost:
    """``SlurmLauncher.default_host``: :func:`detect_host`, asked when the driver reads it."""

    def __get__(self, obj: object, owner: type | None = None) -> str | None:
        return detect_host()


class SlurmLauncher(WorkerLauncher):
    """Each worker a SLURM job of its own, waited for like ``sbatch --wait``.

    The daisy server's address (``default_host``, see :func:`detect_host`): None on a
    real cluster, so daisy resolves this node's hostname (else takes its default-route
    interface), advertises it to the workers and listens on every interface, where
    workers on other compute nodes can connect; ``127.0.0.1`` on a cluster whose nodes
    are all this machine (the local test cluster), so the server stays private.
    ``--host ADDRESS`` picks a specific fabric (a multi-homed login node, a name only
    compute nodes resolve).

    Args:
        spec: What to run (the worker command, its log folder, extra environment, a
            ``ContainerWrapper`` for ``--sif``). ``spec.gpus`` are not pinned: SLURM
            gives each job its own GPUs (``--cluster-option gpus=1``).
        **options: ``--cluster-option`` settings (see :func:`cluster_options`).

    Raises:
        UserError: A bad option, no SLURM here, or a missing image / runtime; all found
            here, before the driver writes anything.
    """

    default_host: ClassVar[str | None] = _DefaultHost()  # type: ignore[assignment]

    def __init__(self, spec: WorkerSpec, **options: Any):
        super().__init__(spec, **options)
        self.cluster = cluster_options(options)
        self._executor(Path(spec.log_dir) / "slurm" / "check")  # SLURM, image, runtime: now

    def _executor(self, folder: Path) -> Any:
        from cellblock.cluster.executor import make_executor

        wrapper = self.spec.wrapper
        # The driver decided about the image (--sif, $CELLBLOCK_SIF) and says so with a
        # ContainerWrapper; "" runs natively even where $CELLBLOCK_SIF is set.
        sif: str = ""
        binds: tuple[str, ...] = ()
        if isinstance(wrapper, ContainerWrapper):
            sif, binds = str(wrapper.image), wrapper.binds
        options = dataclasses.replace(self.cluster, sif=sif)
        executor = make_executor("slurm", folder, options, binds)
        # A worker job must not come back by itself (preemption, node failure): daisy
        # starts a replacement, and a requeued job would keep this slot waiting.
        extra = dict(executor._executor.parameters.get("additional_parameters", {}))
        extra.pop("requeue", None)
        executor.update_parameters(slurm_additional_parameters=extra)
        return executor

    def command(self) -> list[str]:
        """The worker command as the job runs it (in the image's Python with ``--sif``)."""
        argv = list(self.spec.argv)
        if isinstance(self.spec.wrapper, ContainerWrapper):
            return ["python", *argv[1:]]  # the job already runs in the image
        return self.spec.command()

    def job_env(self, context: Any, log_path: Path) -> dict[str, str]:
        """What the job adds to the environment it inherits from the driver (sbatch's
        default ``--export=ALL``): the spec's extras, daisy's context, the log path.

        A job with GPUs gets its ``CUDA_VISIBLE_DEVICES`` from SLURM; one without must
        not inherit the driver's (those GPUs belong to the driver's job): it sees none."""
        gpus = {} if self.cluster.gpus else {"CUDA_VISIBLE_DEVICES": ""}
        return {
            **self.spec.env,
            "DAISY_CONTEXT": context.to_env(),
            "PYTHONUNBUFFERED": "1",
            WORKER_LOG_ENV: str(log_path),
            **gpus,
        }

    def __call__(self, *, context: Any) -> None:
        from submitit.core.utils import UncompletedJobError

        from cellblock.cluster.jobs import cancel_on_exit, run_blocking, sacct_states

        worker_id = int(context["worker_id"])
        log_path = worker_log_path(self.spec.log_dir, worker_id).absolute()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # one folder per submission: job ids restart when a cluster's state is wiped
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(self.spec.log_dir).absolute() / "slurm" / \
            f"{stamp}-worker_{worker_id}-{uuid.uuid4().hex[:6]}"  # fmt: skip
        executor = self._executor(folder)
        argv = ["sh", "-c", _LOG_SHELL, "sh", str(worker_id), str(log_path), *self.command()]
        log.info("worker %d: SLURM job running %s", worker_id, shlex.join(self.command()))
        with _cancel_when_orphaned(), cancel_on_exit([]) as jobs:
            try:
                run_blocking(executor, argv, self.job_env(context, log_path), jobs=jobs)
            except UncompletedJobError as e:
                job_id = str(jobs[0].job_id)
                match = re.search(r"exited with code (-?\d+)", str(e))
                code = int(match.group(1)) if match else -signal.SIGTERM
                state = _final_state(job_id, sacct_states)
                raise WorkerJobError(worker_id, job_id, code, log_path, state) from None


def _final_state(job_id: str, sacct_states: Any, timeout: float = 15.0) -> str:
    """The job's sacct state once it is final (accounting lags a little); else the last seen."""
    deadline, state = time.monotonic() + timeout, "UNKNOWN"
    while time.monotonic() < deadline:
        state = sacct_states([job_id])[job_id]
        if state not in ("UNKNOWN", "PENDING", "RUNNING", "COMPLETING"):
            break
        time.sleep(1.0)
    return state
