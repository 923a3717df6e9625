"""A training run as a preemption-safe submitit call.

``TrainTask(spec)()`` does what ``02_train/<dataset>/<setup>/train.py N`` does (the same
config resolution, ``net_config.json``, ``cellblock.training.loop.train``), and is a
``submitit.helpers.Checkpointable``: when the job is preempted or reaches its time
limit, SLURM sends USR2, submitit calls :meth:`TrainTask.checkpoint` in the main
thread, and it

1. sets the ``stop`` event of the training loop, which runs in a worker thread, so the
   loop checkpoints the iteration it is on and returns;
2. hands submitit a fresh ``TrainTask`` of the same spec, which submitit pickles
   before it requeues the job (``scontrol requeue``).

The requeued job resumes from the run's latest checkpoint; training is exactly
resumable (``cellblock.training.loop``), so it ends where an uninterrupted run would.

A job ended without that warning (``scontrol requeue``, ``scancel``, a preemption with
no signal configured) gets SIGTERM, then SIGKILL ``KillWait`` seconds later. On SIGTERM
the training is asked to checkpoint the iteration it is on, if there is time, and the
attempt then waits for the kill without writing a result: an error result (a
DataLoader worker dies of SIGTERM, so the loop fails) would be read by a waiting
``job.result()`` as the job's outcome although a requeued attempt is still to come. A
requeued job resumes from its latest checkpoint; a cancelled one ends CANCELLED.

One writer per run folder: the task holds ``RUN/train.lock`` (``training.cli.run_lock``)
before it writes anything there. Unlike ``train.py`` it waits for a holder, up to
``_LOCK_WAIT_S``: a requeued or resubmitted attempt can start while the previous one is
still writing its last checkpoint and dying. A holder still alive then fails the job
with ``FolderBusyError`` naming it (another run on the same folder, not a dying attempt).

Logs: the run folder gets ``logs/train.log`` (this run's log records, appended by
every attempt) and ``logs/<jobid>.out`` / ``.err`` links to the job's own files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from cellblock.atomic import atomic_write_text
from cellblock.nets.netconfig import NetConfig
from cellblock.paths import Project
from cellblock.training.cli import run_lock
from cellblock.training.setupconfig import load_setup_config

__all__ = ["TrainSpec", "TrainTask"]

log = logging.getLogger(__name__)
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# After SIGTERM SLURM kills the job within KillWait (30-60 s on most clusters); should it
# not, the attempt gives up this much later and fails.
_TERMINATED_WAIT_S = 600.0
# A previous attempt of this task (requeued, resubmitted) may still hold the run folder's
# lock while it writes its last checkpoint and SLURM kills it (KillWait, 30-60 s; a
# checkpoint of a large network on a busy parallel file system takes a while more).
_LOCK_WAIT_S = 120.0


@dataclass(frozen=True)
class TrainSpec:
    """One training run.

    Attributes:
        setup_dir: The setup folder (holding ``config.yaml``).
        data: The packed dataset.
        run_dir: The run folder (resumed if it has checkpoints).
        iterations: Iteration to reach.
        overrides: ``{"section.key": value}`` applied to the setup's config (fold,
            channels, ``--set`` values).
        init_from: A run folder or checkpoint whose weights start the run (``train.py
            --init-from``); ignored once the run has a checkpoint of its own.
        project: The project folder (relative config paths, the setup's name); None =
            ``Project.locate(start=setup_dir)`` where the task runs.
    """

    setup_dir: str
    data: str
    run_dir: str
    iterations: int
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    project: str | None = None

    def located(self) -> Project:
        """The project of this run."""
        return Project.locate(self.project, start=self.setup_dir)

    def argv(self) -> list[str]:
        """The equivalent ``train.py`` command line (for people reading a manifest)."""
        sets = [f"--set={k}={json.dumps(v) if isinstance(v, list) else v}"
                for k, v in self.overrides.items()]  # fmt: skip
        init = ["--init-from", self.init_from] if self.init_from else []
        return ["python", str(Path(self.setup_dir) / "train.py"), str(self.iterations),
                "--data", self.data, "--out", self.run_dir, *init, *sets]  # fmt: skip

    def resolved_config(self) -> dict[str, Any]:
        """The run's resolved config (raises ``ConfigError`` naming a bad key or value)."""
        return load_setup_config(Path(self.setup_dir) / "config.yaml", dict(self.overrides),
                                 self.located())  # fmt: skip


_fork_hook_installed = False


def _child_signals() -> None:
    """In a forked child (a DataLoader worker): ignore submitit's preemption signal.

    SLURM signals every process of the job step, so workers get USR2 too; with the
    handler they inherit, each would checkpoint and requeue the job on its own. Only
    the training process decides. SIGTERM keeps submitit's handler, which ignores it
    (a preempted or requeued job is SIGKILLed ``KillWait`` later): a worker dying of it
    would fail the training, and the job's error result could be read as its outcome
    while the requeued job is still to run.
    """
    preempt = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG, signal.SIGUSR2)
    signal.signal(preempt, signal.SIG_IGN)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _job_env() -> submitit.JobEnvironment | None:
    try:
        return submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return None


@contextlib.contextmanager
def _run_logs(run_dir: Path):
    """Log to ``run_dir/logs/train.log``; link the job's stdout/stderr files there."""
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if not root.handlers:  # a submitit job process: nothing configured logging yet
        logging.basicConfig(level=logging.INFO, format=_FORMAT)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    handler = logging.FileHandler(logs / "train.log")
    handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    env = _job_env()
    if env is not None:
        with contextlib.suppress(OSError, KeyError):
            paths = env.paths
            for suffix, target in ((".out", paths.stdout), (".err", paths.stderr)):
                link = logs / f"{env.job_id}{suffix}"
                if not link.is_symlink() and not link.exists():
                    link.symlink_to(os.path.relpath(target, logs))
        log.info("job %s on %s: %s", env.job_id, env.hostname, run_dir)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


class TrainTask(submitit.helpers.Checkpointable):
    """A picklable, checkpointable training call (see the module docstring).

    Args:
        spec: What to train.
    """

    def __init__(self, spec: TrainSpec) -> None:
        self.spec = spec
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._terminating = False

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}  # never the thread or the event of a running attempt

    def __setstate__(self, state: dict[str, Any]) -> None:
        TrainTask.__init__(self, state["spec"])

    def __call__(self) -> dict[str, Any]:
        """Train up to ``spec.iterations``; return ``train``'s summary (plus ``run_dir``).

        Raises:
            FolderBusyError: Another process still held the run folder after ``_LOCK_WAIT_S``.
        """
        # torch only in the job: the login node that submits it pickles this task
        from cellblock.nets.models import net_config_json
        from cellblock.training.loop import train

        global _fork_hook_installed
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_child_signals)
            _fork_hook_installed = True
        spec = self.spec
        run_dir = Path(spec.run_dir)
        # the lock first: not even a log line beside a live run
        with run_lock(run_dir, wait_s=_LOCK_WAIT_S), _run_logs(run_dir), self._sigterm_guard():
            config = spec.resolved_config()
            net_json = json.dumps(net_config_json(NetConfig.from_dict(config["net"])), indent=2)
            atomic_write_text(run_dir / "net_config.json", net_json + "\n")
            self._stop = threading.Event()
            box: dict[str, Any] = {}

            def target() -> None:
                try:
                    box["result"] = train(config, spec.data, run_dir, spec.iterations,
                                          init_from=spec.init_from, stop=self._stop,
                                          setup=spec.located().setup_name(spec.setup_dir),
                                          setup_dir=spec.setup_dir)  # fmt: skip
                except BaseException as e:
                    box["error"] = e

            # Training runs in a worker thread so that the main thread, where Python
            # runs signal handlers, can ask it to stop and wait for its checkpoint.
            self._thread = threading.Thread(target=target, name="train", daemon=True)
            self._thread.start()
            while self._thread.is_alive():
                self._thread.join(timeout=0.2)
            if self._terminating:
                self._await_kill()
            if "error" in box:
                raise box["error"]
            result = dict(box["result"])
            log.info("%s: iteration %d of %d", run_dir, result["iteration"], spec.iterations)
        return {**result, "run_dir": str(run_dir)}

    @contextlib.contextmanager
    def _sigterm_guard(self):
        """In a SLURM job's main thread: SIGTERM means the scheduler is ending this attempt."""
        env = _job_env()
        if env is None or env.cluster != "slurm" or not _in_main_thread():
            yield
            return

        def on_sigterm(signum: int, frame: object) -> None:
            if not self._terminating:
                log.warning("%s: SIGTERM from the scheduler: checkpointing if there is time",
                            self.spec.run_dir)  # fmt: skip
            self._terminating = True
            if self._stop is not None:
                self._stop.set()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _await_kill(self) -> None:
        """Leave no result for an attempt SLURM is ending: wait for its SIGKILL."""
        log.warning("%s: waiting for the scheduler to end this attempt (no result written)",
                    self.spec.run_dir)  # fmt: skip
        for handler in logging.getLogger().handlers:
            handler.flush()
        deadline = time.monotonic() + _TERMINATED_WAIT_S
        while time.monotonic() < deadline:
            time.sleep(1.0)
        raise RuntimeError(f"SIGTERM, but not killed within {_TERMINATED_WAIT_S:.0f} s")

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Stop training at a checkpoint (called by submitit on USR2); return the requeue call."""
        thread, stop = self._thread, self._stop
        if thread is not None and stop is not None and thread.is_alive():
            if not stop.is_set():
                log.warning("%s: preempted or out of time: checkpointing, then requeueing",
                            self.spec.run_dir)  # fmt: skip
            stop.set()
            thread.join()
        return submitit.helpers.DelayedSubmission(TrainTask(self.spec))
