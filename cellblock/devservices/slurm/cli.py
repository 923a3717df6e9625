"""Command line: ``python -m cellblock.devservices.slurm start|stop|status [--dir DIR]``.

``start`` and ``status`` print ``export`` lines (and nothing else) on stdout, for ``eval``;
messages go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cellblock.devservices.slurm.cluster import SlurmLocalError
from cellblock.devservices.slurm.layout import Layout
from cellblock.devservices.slurm.lifecycle import start, status, stop
from cellblock.devservices.slurm.ready import run_client

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cellblock.devservices.slurm",
        description=(
            "Start, stop or query a single-node SLURM cluster on 127.0.0.1 (munged, MariaDB, "
            "slurmdbd, slurmctld, slurmd; sacct works). 'start' and 'status' print shell "
            'export lines: eval "$(python -m cellblock.devservices.slurm start)"'
        ),
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument(
        "--dir", type=Path, default=Path(".slurmlocal"), help="state folder (default .slurmlocal)"
    )
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for each daemon"
    )
    parser.add_argument("--cpus", type=int, help="CPUs the node offers (default: >= 4)")
    parser.add_argument("--memory-mb", type=int, help="memory the node offers (default: 90%%)")
    return parser


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
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "start":
            cluster = start(
                args.dir, timeout=args.timeout, cpus=args.cpus, memory_mb=args.memory_mb
            )
        elif args.command == "status":
            found = status(args.dir)
            if found is None:
                print(f"error: no local SLURM cluster running in {args.dir}", file=sys.stderr)
                return 1
            cluster = found
            _describe(args.dir)
        else:
            if not stop(args.dir, timeout=args.timeout):
                logging.getLogger(__name__).info("no local SLURM cluster was running in %s",
                                                 args.dir)  # fmt: skip
            return 0
    except (SlurmLocalError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(cluster.export_lines())
    return 0
