"""Progress of long stages: a bar at a terminal, timestamped log lines off one.

At a terminal ``progress_bar`` is a plain tqdm bar. Off one (a SLURM job, ``| tee``,
a CI log) tqdm's carriage-return redraws fill logs with thousands of updates, and a
bar drawn only at the end leaves a long stage silent; there it is a ``LogBar`` instead:
one INFO line on the ``cellblock.progress`` logger at most every ``interval`` seconds,
and one when the stage ends::

    2026-12-07 18:52:10 pack: 1,204/34,496 site (3.5%), 41.3 site/s, 13:25 left

The timestamp is in the message because the scripts log bare messages
(``cellblock.cli.edge``). Both take tqdm's ``update``, ``reset``,
``set_postfix_str`` and ``close`` and are context managers.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, Any, TypeAlias

from tqdm import tqdm

__all__ = ["INTERVAL", "LogBar", "ProgressBar", "polled_progress", "progress_bar"]

log = logging.getLogger("cellblock.progress")

INTERVAL = 30.0  # seconds between log lines off a terminal


class LogBar:
    """tqdm's counting interface, reported as a log line at most every ``interval`` s.

    Args:
        total: Units to do (None: unknown).
        desc: The stage's name, first on each line.
        unit: The unit counted.
        unit_scale: Print counts with SI prefixes (bytes).
        interval: Least seconds between lines.
    """

    def __init__(
        self,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        unit_scale: bool = False,
        interval: float = INTERVAL,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.unit_scale, self.interval = unit_scale, interval
        self.n: float = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False
        self._lock = threading.Lock()  # fetch and publish count from worker threads

    def _count(self, value: float) -> str:
        if self.unit_scale:
            return tqdm.format_sizeof(value)
        return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:.3g}"

    def line(self, now: float | None = None) -> str:
        """The progress line as of ``now`` (monotonic seconds; default: now)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        done = self._count(self.n)
        of = f"/{self._count(self.total)}" if self.total else ""
        parts = [f"{self.desc}: {done}{of} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.1f}%)"
        parts.append(f"{self._count(rate)} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"{tqdm.format_interval((self.total - self.n) / rate)} left")
        elif self.closed:
            parts.append(f"done in {tqdm.format_interval(elapsed)}")
        if self.postfix:
            parts.append(self.postfix)
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        return f"{stamp} " + ", ".join(parts)

    def update(self, n: float = 1) -> None:
        """Count ``n`` more units done; log a line if ``interval`` has passed."""
        with self._lock:
            self.n += n
            now = time.monotonic()
            # the closing line reports the end: no line at 100% before it
            finished = self.total is not None and self.n >= self.total
            if now - self.last < self.interval or finished:
                return
            self.last = now
        log.info(self.line(now))

    def reset(self, total: float | None = None) -> None:
        """Start the count again (tqdm's ``reset``: a retried download)."""
        self.n, self.total = 0, total

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Text appended to the next lines (``refresh`` is tqdm's, unused)."""
        self.postfix = s

    def close(self) -> None:
        """Log the closing line (once)."""
        if not self.closed:
            self.closed = True
            log.info(self.line())

    def __enter__(self) -> LogBar:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # a failed stage ends with its one error line, no other
            self.closed = True
            return
        self.close()


ProgressBar: TypeAlias = "tqdm[Any] | LogBar"  # what progress_bar returns


def progress_bar(
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    *,
    unit_scale: bool = False,
    disable: bool = False,
    interval: float = INTERVAL,
    stream: IO[str] | None = None,
) -> ProgressBar:
    """A tqdm bar on a terminal, else a ``LogBar`` (module docstring).

    Args:
        total: Units to do (None: unknown).
        desc: The stage's name.
        unit: The unit counted.
        unit_scale: Counts with SI prefixes (bytes).
        disable: No progress at all (tqdm's ``disable``).
        interval: Least seconds between log lines off a terminal.
        stream: Where a bar would draw (default ``sys.stderr``): a terminal or not.
    """
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if disable or (isatty is not None and isatty()):
        return tqdm(
            total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=disable, file=stream
        )
    return LogBar(total, desc, unit, unit_scale, interval)


@contextmanager
def polled_progress(
    count: Callable[[], int],
    total: int,
    desc: str,
    unit: str = "it",
    *,
    poll: float = 5.0,
    disable: bool = False,
    interval: float = INTERVAL,
) -> Iterator[None]:
    """``progress_bar`` of work counted elsewhere (worker processes, a tracking file).

    A thread calls ``count()`` every ``poll`` seconds while the block runs, and once at
    its end.

    Args:
        count: Units done so far (an error in it stops the polling, not the work).
        total: Units to do.
        desc: The stage's name.
        unit: The unit counted.
        poll: Seconds between counts.
        disable: No progress (another bar draws it).
        interval: Least seconds between log lines off a terminal.
    """
    if disable:
        yield
        return
    stop = threading.Event()
    with progress_bar(total, desc, unit, interval=interval) as bar:

        def advance() -> None:
            try:
                done = min(max(count(), 0), total)
            except Exception as err:  # a half-written tracking file: the next poll
                log.debug("%s: progress count failed: %s", desc, err)
                return
            if done > bar.n:
                bar.update(done - bar.n)

        def watch() -> None:
            while not stop.wait(poll):
                advance()

        thread = threading.Thread(target=watch, name=f"{desc} progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            advance()
