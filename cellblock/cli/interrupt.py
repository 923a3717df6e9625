"""SIGTERM, SIGINT and SIGHUP turned into an exception, so that a stopped stage cleans up.

Python dies at once of SIGTERM and SIGHUP: no ``finally``, no ``with`` exit, so a
process pool is not stopped and nothing says why the stage ended. ``handle_signals``
makes the three stop signals raise ``Interrupted`` (a ``KeyboardInterrupt``, which Ctrl-C
already raised) in the main thread; ``run`` turns it into::

    interrupted: SIGTERM to pack_zarr.py; finished work is kept; run the same command
    again to resume

(one line), and the conventional exit status 128 + signal number (143 for SIGTERM,
130 for Ctrl-C). A second signal while cleaning up is ignored, and a cleanup that hangs is cut short
after ``GRACE_S`` seconds: SLURM would SIGKILL the job after its KillWait anyway.
A signal ignored when the stage started (``nohup`` ignores SIGHUP) stays ignored, and
a handler a stage installs for itself (training's checkpoint-on-SIGTERM of a SLURM
task) takes over while it is installed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = [
    "GRACE_S",
    "STOP_SIGNALS",
    "Interrupted",
    "exit_status",
    "handle_signals",
    "handling",
    "message",
]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_S = 20.0

_state = {"installed": False, "raised": False}


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _state["raised"]:
        return  # already stopping: let the cleanup of the first one finish
    _state["raised"] = True
    timer = threading.Timer(GRACE_S, os._exit, [exit_status(signum)])
    timer.daemon = True
    timer.start()
    raise Interrupted(signum)


def _default_in_child() -> None:
    """A forked child (a DataLoader worker) dies of SIGTERM as before; it has no ``run``."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, signal.SIG_DFL)
    _state["raised"] = False


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """In the main thread: SIGTERM, SIGINT and SIGHUP raise ``Interrupted`` in the block.

    The previous handlers come back after it (``run`` called inside a test, say).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _on_signal)
    if not _state["installed"]:
        os.register_at_fork(after_in_child=_default_in_child)
        _state["installed"] = True
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state["raised"] = False


def handling(signum: int) -> bool:
    """Whether ``signum`` raises ``Interrupted`` here now (``handle_signals`` is active)."""
    return signal.getsignal(signum) is _on_signal


def exit_status(signum: int) -> int:
    """The shell's status of a process ended by ``signum``: 128 + its number."""
    return 128 + int(signum)


def message(signum: int, script: str) -> str:
    """The one line a stopped stage prints.

    Args:
        signum: The signal.
        script: The stage's script name, e.g. ``pack_zarr.py``.
    """
    return (
        f"interrupted: {signal.Signals(signum).name} to {script}; finished work is kept; "
        "run the same command again to resume"
    )
