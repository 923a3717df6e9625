"""Command line: ``python -m cellblock.devservices.s3 start|stop|status [--dir DIR] [--port P]``.

``start`` and ``status`` print ``export`` lines (and nothing else) on stdout, for ``eval``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cellblock.devservices.s3.lifecycle import start, status, stop
from cellblock.devservices.s3.server import S3LocalError

__all__ = ["main"]

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cellblock.devservices.s3",
        description=(
            "Start, stop or query a local S3 server (SeaweedFS weed mini on 127.0.0.1). "
            "'start' and 'status' print shell export lines: "
            'eval "$(python -m cellblock.devservices.s3 start)"'
        ),
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument(
        "--dir", type=Path, default=Path(".s3local"), help="state folder (default .s3local)"
    )
    parser.add_argument(
        "--port", type=int, help="S3 port for start (default: the previous one, else free)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for start/stop"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    # Messages go to stderr: stdout carries only the export lines, for eval.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "start":
            server = start(args.dir, port=args.port, timeout=args.timeout)
        elif args.command == "status":
            found = status(args.dir)
            if found is None:
                print(f"error: no local S3 server running in {args.dir}", file=sys.stderr)
                return 1
            server = found
        else:
            if not stop(args.dir, timeout=args.timeout):
                log.info("no local S3 server was running in %s", args.dir)
            return 0
    except (S3LocalError, OSError) as e:
        # One line; messages about a failed start name the server log for the details.
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {first}", file=sys.stderr)
        return 1
    sys.stdout.write(server.export_lines())
    return 0
