"""Command line: ``python -m cellblock.devservices.slurm start|stop|status [--dir DIR]``.

``start`` and ``status`` print ``export`` lines (and nothing else) on stdout, for ``eval``;
messages go to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cellblock.devservices.cli import parser, serve
from cellblock.devservices.slurm.cluster import SlurmLocalError
from cellblock.devservices.slurm.layout import Layout
from cellblock.devservices.slurm.lifecycle import start, status, stop
from cellblock.devservices.slurm.ready import run_client

__all__ = ["main"]


def _describe(state_dir: Path) -> None:
    """Print the node and the queue on stderr (status)."""
    layout = Layout(state_dir.resolve())
    for argv in (("sinfo",), ("squeue",)):
        result = run_client(layout, *argv)
        sys.stderr.write(result.stdout or result.stderr)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
    """
    p = parser(
        "python -m cellblock.devservices.slurm",
        "Start, stop or query a single-node SLURM cluster on 127.0.0.1 (munged, MariaDB, "
        "slurmdbd, slurmctld, slurmd; sacct works). 'start' and 'status' print shell "
        'export lines: eval "$(python -m cellblock.devservices.slurm start)"',
        state_dir=".slurmlocal",
        timeout=90.0,
        timeout_help="seconds to wait for each daemon to start, or for jobs and daemons to stop",
    )
    p.add_argument("--cpus", type=int, help="CPUs the node offers (default: >= 4)")
    p.add_argument("--memory-mb", type=int, help="memory the node offers (default: 90%%)")
    args = p.parse_args(argv)
    return serve(
        args,
        what="local SLURM cluster",
        start=lambda: start(
            args.dir, timeout=args.timeout, cpus=args.cpus, memory_mb=args.memory_mb
        ),
        status=lambda: status(args.dir),
        stop=lambda: stop(args.dir, timeout=args.timeout),
        errors=(SlurmLocalError,),
        whole_error=True,
        describe=lambda: _describe(args.dir),
    )
