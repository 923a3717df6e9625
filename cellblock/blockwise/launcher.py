"""Worker launchers: how one persistent prediction worker is started, and where it logs.

daisy calls the task's launcher once per worker slot, in a process of its own, with
the slot's ``context`` as a keyword argument, and expects the call to last as long
as the worker (daisy's blocking-spawn contract): returning is a clean exit, raising
is a dirty one that counts against ``max_worker_restarts``. A launcher therefore
starts the worker, waits for it, and raises ``WorkerExitError`` — carrying the
worker's log path and the tail of its log — when it exits non-zero, so the driver
can show why without a trip to the logs.

Launchers are pluggable:

- ``WorkerSpec``: what to run (the worker's argv, interpreter first), where to log,
  which GPUs to pin, extra environment, and an optional command wrapper.
- A *command wrapper* is any ``callable(argv) -> argv``, e.g. ``ContainerWrapper``
  (``singularity exec --nv IMAGE python ...``); launchers apply it last.
- ``WorkerLauncher`` subclasses decide *where* the worker runs: ``LocalLauncher``
  here (a subprocess pinned to one GPU with ``CUDA_VISIBLE_DEVICES``); cluster
  launchers (SLURM) live in other modules and are found by name through
  ``LAUNCHERS`` (``register_launcher`` adds one) without changes here.

A launcher instance travels to daisy's worker process by pickle: keep it plain data.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cellblock.container import bind_list, find_runtime, resolve_sif, wrap
from cellblock.errors import UserError

__all__ = [
    "LAUNCHERS",
    "WORKER_LOG_ENV",
    "CommandWrapper",
    "ContainerWrapper",
    "LocalLauncher",
    "WorkerExitError",
    "WorkerLauncher",
    "WorkerSpec",
    "launcher_class",
    "register_launcher",
    "worker_log_path",
]

log = logging.getLogger(__name__)

CommandWrapper = Callable[[list[str]], list[str]]

# --cluster name -> "module:Class"; imported on first use, so a launcher's module (and
# its dependencies) load only when asked for.
LAUNCHERS: dict[str, str] = {
    "local": "cellblock.blockwise.launcher:LocalLauncher",
    "slurm": "cellblock.cluster.launcher:SlurmLauncher",
}
TAIL_LINES = 30
WORKER_LOG_ENV = "CELLBLOCK_WORKER_LOG"


def register_launcher(name: str, target: str) -> None:
    """Make ``--cluster NAME`` use ``target`` (``"package.module:Class"``)."""
    LAUNCHERS[name] = target


def launcher_class(name: str) -> type[WorkerLauncher]:
    """The launcher class registered as ``name``.

    Raises:
        UserError: Unknown name, or its module is not importable here.
    """
    if name not in LAUNCHERS:
        raise UserError(f"--cluster {name!r}: expected one of {', '.join(sorted(LAUNCHERS))}")
    module, _, cls = LAUNCHERS[name].partition(":")
    try:
        found = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise UserError(
            f"--cluster {name}: launcher {LAUNCHERS[name]} is not available ({e})"
        ) from None
    if not (isinstance(found, type) and issubclass(found, WorkerLauncher)):
        raise UserError(f"--cluster {name}: {LAUNCHERS[name]} is not a WorkerLauncher")
    return found


def worker_log_path(log_dir: Path | str, worker_id: int) -> Path:
    """``LOG_DIR/worker_{id}.log``: the worker's stdout and stderr, appended per start."""
    return Path(log_dir) / f"worker_{worker_id}.log"


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class WorkerExitError(RuntimeError):
    """A worker exited non-zero; the message names it, its log, and the log's tail.

    Args:
        worker_id: daisy's worker id.
        pid: The worker's process id (or job id).
        code: Its exit status (negative: killed by that signal; 128 + N: stopped by signal
            N, the status a shell or a stage's ``cellblock.cli.run`` gives it).
        log_path: Its log file.
    """

    def __init__(self, worker_id: int, pid: int | str, code: int, log_path: Path):
        how = f"code {code}"
        signum = -code if code < 0 else code - 128 if code > 128 else 0
        if signum:
            with contextlib.suppress(ValueError):
                how = f"signal {signal.Signals(signum).name}"
        tail = _tail(log_path)
        super().__init__(
            f"worker {worker_id} (pid {pid}) exited with {how}; log: {log_path}"
            + (f"\n--- last lines of {log_path.name} ---\n{tail}" if tail else "")
        )
        self.worker_id, self.code, self.log_path = worker_id, code, log_path


@dataclass(frozen=True)
class ContainerWrapper:
    """Run the worker in the project's Apptainer/Singularity image (``--nv``).

    The command line is ``cellblock.container.wrap``'s, the one every cluster
    job of the project uses: ``RUNTIME exec --nv -B BINDS IMAGE python SCRIPT ...``.

    Args:
        image: The ``.sif`` file (``--sif``; None or unset: ``$CELLBLOCK_SIF``).
        binds: Host folders to bind at the same path (data, outputs, the code).
        runtime: ``apptainer`` or ``singularity``; None = whichever is on PATH.

    Raises:
        UserError: No such image, no runtime on PATH, a path that cannot be bound.
    """

    image: str | None
    binds: tuple[str, ...] = ()
    runtime: str | None = None

    def __post_init__(self) -> None:
        path = resolve_sif(self.image)
        if path is None:
            raise UserError("--sif: no image given and $CELLBLOCK_SIF is not set")
        object.__setattr__(self, "image", str(path))
        object.__setattr__(self, "binds", tuple(bind_list(self.binds)))
        object.__setattr__(self, "runtime", self.runtime or find_runtime())

    def __call__(self, argv: list[str]) -> list[str]:
        # argv[0] is the host's interpreter; inside, the image's python runs the script
        return wrap(["python", *argv[1:]], str(self.image), self.binds, self.runtime)


@dataclass(frozen=True)
class WorkerSpec:
    """What a launcher starts.

    Args:
        argv: The worker command, interpreter first (``[python, predict.py, --plan, P]``).
        log_dir: Folder of the worker logs.
        gpus: Each worker's ``CUDA_VISIBLE_DEVICES`` (an entry of the driver's own mask,
            see ``cellblock.devices.worker_gpus``), one per concurrent worker; () = CPU.
        env: Extra environment variables of the worker.
        wrapper: Applied to the command last (e.g. ``ContainerWrapper``).
    """

    argv: tuple[str, ...]
    log_dir: str
    gpus: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    wrapper: CommandWrapper | None = None

    def command(self) -> list[str]:
        argv = list(self.argv)
        return self.wrapper(argv) if self.wrapper is not None else argv


class WorkerLauncher(ABC):
    """Starts one persistent worker per call and blocks until it exits.

    Args:
        spec: What to start.
        options: Launcher-specific settings (e.g. a SLURM partition); the local
            launcher takes none.
    """

    #: Address the daisy server binds to and tells workers, unless ``--host`` says
    #: otherwise. Loopback for workers on this machine; cluster launchers set None
    #: (daisy detects this node's address) or the fabric's interface.
    default_host: ClassVar[str | None] = "127.0.0.1"

    def __init__(self, spec: WorkerSpec, **options: Any):
        self.spec = spec
        self.options = options

    @abstractmethod
    def __call__(self, *, context: Any) -> None:
        """Start the worker of daisy's ``context``, wait, raise ``WorkerExitError`` if it fails."""

    def environment(self, context: Any, gpu: str | None, log_path: Path) -> dict[str, str]:
        """The worker's environment: ours, the spec's extras, daisy's context, its GPU.

        Args:
            context: daisy's worker context (``DAISY_CONTEXT``).
            gpu: GPU id for ``CUDA_VISIBLE_DEVICES``; None leaves it as it is.
            log_path: Where the worker's output goes (``CELLBLOCK_WORKER_LOG``: the
                worker names it in its failure records).
        """
        env = {**os.environ, **self.spec.env, "DAISY_CONTEXT": context.to_env()}
        env["PYTHONUNBUFFERED"] = "1"  # the log shows progress as it happens
        env[WORKER_LOG_ENV] = str(log_path)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        return env


@contextlib.contextmanager
def _gpu_lease(gpus: tuple[str, ...], lock_dir: Path, worker_id: int) -> Iterator[str | None]:
    """Hold one GPU for a worker's lifetime: an flock per GPU, released when we exit.

    Worker ids grow with every restart, so ``id % n`` would put a replacement on a
    busy GPU; the first unlocked GPU is the one its predecessor left. The kernel
    drops the lock when the holder dies, even by SIGKILL.
    """
    if not gpus:
        yield None
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        name = gpu.replace("/", "_")  # old MIG names: MIG-GPU-<uuid>/<gi>/<ci>
        handle = open(lock_dir / f".gpu-{name}.lock", "w")  # noqa: SIM115 - held while we run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield gpu
        finally:
            handle.close()
        return
    yield gpus[worker_id % len(gpus)]  # more workers than GPUs: share


class LocalLauncher(WorkerLauncher):
    """A worker subprocess on this machine, pinned to one GPU, logging to ``worker_{id}.log``."""

    def __init__(self, spec: WorkerSpec, **options: Any):
        if options:
            raise UserError(f"--cluster-option {', '.join(options)}: the local launcher takes none")
        super().__init__(spec)

    def __call__(self, *, context: Any) -> None:
        worker_id = int(context["worker_id"])
        log_path = worker_log_path(self.spec.log_dir, worker_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with _gpu_lease(self.spec.gpus, log_path.parent, worker_id) as gpu, \
                open(log_path, "ab") as out:  # fmt: skip
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"=== worker {worker_id} on {socket.gethostname()}, GPU {gpu}, "
                      f"started {stamp} ===\n".encode())  # fmt: skip
            out.flush()
            proc = subprocess.Popen(
                self.spec.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(context, gpu, log_path),
            )
            try:
                code = proc.wait()
            except BaseException:
                # daisy is shutting this slot down: take the worker with us
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
        if code != 0:
            raise WorkerExitError(worker_id, proc.pid, code, log_path)
