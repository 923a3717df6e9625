"""Ordered parallel map over processes, shared by the stages that fan out work."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` in ``workers`` processes (in this process if ``workers <= 1``).

    Results come back in input order. The first exception propagates, and pending
    work is cancelled rather than left running behind it.

    Args:
        fn: A picklable (module-level) function of one argument.
        items: Its arguments.
        workers: Number of processes.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in futures:
                yield future.result()
        finally:
            pool.shutdown(cancel_futures=True)
