"""Command line: ``python -m cellblock.devservices.s3 start|stop|status [--dir DIR] [--port P]``.

``start`` and ``status`` print ``export`` lines (and nothing else) on stdout, for ``eval``.
"""

from __future__ import annotations

from cellblock.devservices.cli import parser, serve
from cellblock.devservices.s3.lifecycle import start, status, stop
from cellblock.devservices.s3.server import S3LocalError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
    """
    p = parser(
        "python -m cellblock.devservices.s3",
        "Start, stop or query a local S3 server (SeaweedFS weed mini on 127.0.0.1). "
        "'start' and 'status' print shell export lines: "
        'eval "$(python -m cellblock.devservices.s3 start)"',
        state_dir=".s3local",
        timeout=30.0,
        timeout_help="seconds to wait for the server to start or stop",
    )
    p.add_argument(
        "--port", type=int, help="S3 port for start (default: the previous one, else free)"
    )
    args = p.parse_args(argv)
    return serve(
        args,
        what="local S3 server",
        start=lambda: start(args.dir, port=args.port, timeout=args.timeout),
        status=lambda: status(args.dir),
        stop=lambda: stop(args.dir, timeout=args.timeout),
        errors=(S3LocalError,),
    )
