"""The processes of the local services: launch with a log, liveness, readiness, termination.

A service process runs in its own session: a Ctrl-C in the starting shell or test run
does not reach it; ``stop`` (or a fixture's teardown) does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = [
    "log_tail",
    "pid_alive",
    "scrubbed_env",
    "spawn",
    "terminate",
    "wait_ready",
    "wait_until",
]

log = logging.getLogger(__name__)

# Processes started by this Python process, by pid: their Popen objects reap them on stop
# (an unreaped child stays a zombie, which os.kill(pid, 0) would still report as alive).
_children: dict[int, subprocess.Popen] = {}


def scrubbed_env(
    prefixes: tuple[str, ...], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment without the variables named ``PREFIX...``, plus ``extra``.

    Args:
        prefixes: Name prefixes to drop (``"AWS_"``, ``"SLURM_"``...).
        extra: Variables to set on top.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra or {})
    return env


def spawn(
    cmd: list[str], log_path: Path, banner: str, *, cwd: Path, env: Mapping[str, str]
) -> tuple[subprocess.Popen, int]:
    """Start ``cmd`` in its own session, its stdout and stderr appended to ``log_path``.

    Args:
        cmd: The command line.
        log_path: Its log, appended to (created if missing).
        banner: A line written to the log first, after ``--- ``.
        cwd: Its working folder.
        env: Its whole environment (``scrubbed_env``: ours less what would mislead it).

    Returns:
        The process, and the byte offset in the log where this start's output begins.
    """
    with log_path.open("ab") as log_file:
        offset = log_file.tell()
        log_file.write(f"--- {banner}\n".encode())
        log_file.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc, offset


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (with all its threads gone).

    Args:
        pid: The process id.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        status = dict(line.split(":", 1) for line in lines if ":" in line)
        state, threads = status["State"].split()[0], int(status["Threads"])
    except (OSError, KeyError, IndexError, ValueError):
        return True  # no /proc: trust kill(0)
    # A thread group's leader turns zombie before its other threads are gone, and those
    # still hold its sockets for some ms: dead once it is a zombie on its own.
    return state not in ("Z", "X") or threads > 1


def wait_until(done: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Call ``done`` every ``interval`` s until it returns True (then True) or ``timeout`` s.

    Args:
        done: The condition.
        timeout: Seconds to wait at most.
        interval: Seconds between two calls.
    """
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to exit (reaping it if it is ours); True if it did."""
    child = _children.get(pid)
    if child is None:
        return wait_until(lambda: not pid_alive(pid), timeout, interval=0.05)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    _children.pop(pid, None)
    return True


def terminate(pid: int, name: str, timeout: float) -> None:
    """SIGTERM ``pid``; SIGKILL it (with a warning) if it is still alive after ``timeout`` s.

    Args:
        pid: The process id.
        name: What it is, for the warning (``weed``, ``slurmctld``...).
        timeout: Seconds to wait after SIGTERM.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_exit(pid, timeout):
        log.warning("%s (pid %d) ignored SIGTERM for %.0f s: killing it", name, pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, 5.0)


def log_tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    """``last lines of PATH:`` and the last ``lines`` lines written after byte ``offset``.

    Args:
        path: The log.
        offset: Where the part to quote begins (a start's offset from ``spawn``).
        lines: How many lines to quote at most.
    """
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return f"(no log {path})"
    tail = "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"
    return f"last lines of {path}:\n{tail}"


def wait_ready(
    problem: Callable[[], str | None],
    proc: subprocess.Popen,
    what: str,
    deadline: float,
    *,
    log_path: Path,
    log_offset: int,
    error: type[Exception],
    interval: float = 0.1,
) -> None:
    """Poll ``problem`` until it returns None; raise ``error`` if ``proc`` exits or time is up.

    Args:
        problem: The readiness check: None once ready, else what is still missing.
        proc: The starting process.
        what: What it is, for the message (``weed (S3 on port 8333)``, ``slurmd``...).
        deadline: ``time.monotonic()`` value to give up at.
        log_path: Its log, quoted in the error.
        log_offset: Where this start's output begins in the log.
        error: The service's error class.
        interval: Seconds between two checks.

    Raises:
        error: The process exited, or was not ready by the deadline; the message ends
            with the tail of its log.
    """
    while (missing := problem()) is not None:
        if proc.poll() is not None:
            message = f"{what} exited with code {proc.returncode} before it was ready"
        elif time.monotonic() > deadline:
            message = f"{what} not ready in time ({missing})"
        else:
            time.sleep(interval)
            continue
        raise error(f"{message}; {log_tail(log_path, log_offset)}")
