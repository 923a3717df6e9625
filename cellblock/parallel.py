"""Ordered parallel map over processes, shared by the stages that fan out work.

The workers must never outlive the stage nor hold what it holds:

* they are started with ``spawn`` (a fresh interpreter), not forked: a forked worker
  inherits every descriptor of its parent, the flock of ``DATASET/pack.lock`` included,
  and an orphaned one would keep the folder locked for ever;
* each asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), so a
  ``kill -9`` of the stage takes its workers with it instead of leaving them waiting on
  a queue nobody will fill;
* they ignore SIGINT: Ctrl-C reaches the whole process group, and the parent alone
  reports it (``cellblock.cli.run``) and stops them;
* when the map ends early (an error, SIGTERM, Ctrl-C) the workers are terminated
  rather than waited for: a stopped stage ends at once and its rerun can start.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Pool initializer: SIGKILL when ``parent`` ends; SIGINT is the parent's to report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # it died before we asked: nobody would stop us
        os._exit(1)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's workers now, their running work lost (the caller is giving up).

    Everything is over when this returns: nothing is left for the interpreter's exit to
    wait on (a feeder thread writing to a pipe nobody reads would block it for ever).
    concurrent.futures has no public way to do this before Python 3.14
    (``terminate_workers``): its ``_processes``, ``_call_queue`` and
    ``_executor_manager_thread`` are used, each only if present.
    """
    workers = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    queue = getattr(pool, "_call_queue", None)
    for process in workers:  # first: the manager then finds a broken pool and cleans up
        with contextlib.suppress(ProcessLookupError, ValueError):
            process.terminate()
    if queue is not None:
        queue.cancel_join_thread()  # the queued calls will never be read
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        with contextlib.suppress(ValueError):
            process.join(timeout=5)
    if manager is not None:
        manager.join(timeout=10)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` in ``workers`` processes (in this process if ``workers <= 1``).

    Results come back in input order. The first exception propagates, and the
    workers are stopped rather than left running behind it; so are they when the
    caller stops iterating early, and when this process dies (see the module docstring).

    Args:
        fn: A picklable function of one argument, defined at module level in an
            importable module (the workers are fresh interpreters).
        items: Its arguments (picklable).
        workers: Number of processes.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )
    finished = False
    try:
        futures = [pool.submit(fn, item) for item in items]
        for future in futures:
            yield future.result()
        finished = True
    finally:
        if finished:
            pool.shutdown()
        else:
            _terminate(pool)
