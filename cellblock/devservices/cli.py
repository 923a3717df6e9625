"""The command line both services share: ``start|stop|status [--dir DIR] [--timeout S]``.

``start`` and ``status`` print ``export`` lines (and nothing else) on stdout, for
``eval "$(python -m cellblock.devservices.s3 start)"``; messages go to stderr. A failure
is one ``error: ...`` line and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

__all__ = ["Exportable", "parser", "serve"]

log = logging.getLogger(__name__)


class Exportable(Protocol):
    """A running service: the shell lines that point clients at it."""

    def export_lines(self) -> str: ...


def parser(
    prog: str, description: str, *, state_dir: str, timeout: float, timeout_help: str
) -> argparse.ArgumentParser:
    """The shared arguments; a service adds its own.

    Args:
        prog: ``python -m cellblock.devservices.NAME``.
        description: What the service is.
        state_dir: The default state folder (``.s3local``).
        timeout: The default of ``--timeout``, seconds.
        timeout_help: What ``--timeout`` bounds, for ``--help``.
    """
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("command", choices=["start", "stop", "status"])
    p.add_argument("--dir", type=Path, default=Path(state_dir),
                   help=f"state folder (default {state_dir})")  # fmt: skip
    p.add_argument("--timeout", type=float, default=timeout, help=timeout_help)
    return p


def serve(
    args: argparse.Namespace,
    *,
    what: str,
    start: Callable[[], Exportable],
    status: Callable[[], Exportable | None],
    stop: Callable[[], bool],
    errors: tuple[type[Exception], ...],
    whole_error: bool = False,
    describe: Callable[[], None] | None = None,
) -> int:
    """Run ``args.command`` against the service; return the exit status.

    Args:
        args: The parsed command line (``command``, ``dir``).
        what: The service, for messages (``"local S3 server"``).
        start: Start it (or find it running); raises one of ``errors`` on failure.
        status: The running service, or None.
        stop: Stop it; True if it was running.
        errors: The exceptions reported as ``error: ...`` (and ``OSError``).
        whole_error: Print the whole message (with its log tail), not its first line.
        describe: Called after a successful ``status``, to tell a human more on stderr.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    reported: tuple[type[Exception], ...] = (*errors, OSError)
    try:
        if args.command == "stop":
            if not stop():
                log.info("no %s was running in %s", what, args.dir)
            return 0
        service = start() if args.command == "start" else status()
        if service is not None and describe is not None and args.command == "status":
            describe()
    except reported as e:
        # A failed start's first line names the log that holds the details.
        message = str(e) or type(e).__name__
        print(f"error: {message if whole_error else message.splitlines()[0]}", file=sys.stderr)
        return 1
    if service is None:
        print(f"error: no {what} running in {args.dir}", file=sys.stderr)
        return 1
    sys.stdout.write(service.export_lines())
    return 0
