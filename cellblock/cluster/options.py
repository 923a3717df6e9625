"""What a job asks the cluster for, and the command-line options every launcher shares.

``add_arguments(parser)`` gives a script ``--cluster slurm|local|debug``, the SLURM
resource options (partition, account, qos, time, gpus, cpus, mem, array parallelism,
extra ``#SBATCH`` flags) and the container options (``--sif``, ``--bind``);
``from_args(args)`` turns them into a :class:`ClusterOptions`.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field

from cellblock.cli.values import key_value
from cellblock.errors import UserError

__all__ = [
    "CLUSTERS",
    "ClusterOptions",
    "add_arguments",
    "from_args",
    "parse_mem_gb",
    "parse_time_min",
]

CLUSTERS = ("slurm", "local", "debug")

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time_min(text: str | int) -> int:
    """A SLURM time limit in whole minutes (rounded up).

    Accepts SLURM's formats: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``.

    Args:
        text: The time limit, e.g. ``"90"``, ``"1:30:00"``, ``"2-00:00:00"``.

    Raises:
        UserError: Not one of those formats, or zero.
    """
    m = _TIME.match(str(text).strip())
    if not m:
        raise UserError(f"--time {text!r}: expected minutes, H:M:S or D-H:M:S")
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = int(days) * 86400 + sum(p * s for p, s in zip(parts, (3600, 60, 1), strict=False))
    elif len(parts) == 1:  # M
        seconds = parts[0] * 60
    elif len(parts) == 2:  # M:S
        seconds = parts[0] * 60 + parts[1]
    else:  # H:M:S
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    if seconds <= 0:
        raise UserError(f"--time {text!r}: must be more than zero")
    return math.ceil(seconds / 60)


def parse_mem_gb(text: str | float) -> float:
    """Memory in GB from ``16``, ``16G``, ``16GB``, ``500M``, ``500MB`` (SLURM's units).

    Raises:
        UserError: Another format, or not positive.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([GgMmTt]?)[Bb]?\s*", str(text))
    if not m:
        raise UserError(f"--mem {text!r}: expected e.g. 16G or 500M")
    value = float(m.group(1)) * {"": 1, "g": 1, "m": 1 / 1024, "t": 1024}[m.group(2).lower()]
    if value <= 0:
        raise UserError(f"--mem {text!r}: must be more than zero")
    return value


@dataclass(frozen=True)
class ClusterOptions:
    """Resources and placement of each job (for an array: of each task).

    Attributes:
        partition: SLURM partition (None: the cluster's default).
        account: SLURM account to charge.
        qos: SLURM quality of service.
        time_min: Time limit in minutes; training is warned ``signal_delay_s`` before it
            ends, checkpoints and is requeued.
        gpus: GPUs per job (one task per job).
        cpus: CPUs per task (data loader workers + 1 is a good start).
        mem_gb: Memory per job in GB (None: the cluster's default per CPU).
        array_parallelism: At most this many array tasks run at once (``%N``); the local
            executor runs at most this many processes at once.
        job_name: Job name shown by squeue/sacct.
        signal_delay_s: Seconds before the time limit at which SLURM sends USR2
            (submitit checkpoints and requeues on it).
        sif: Apptainer/Singularity image to run every job in (None: natively).
        binds: Extra host folders to bind into the container (data and run folders are
            bound automatically).
        extra: More ``#SBATCH`` flags, e.g. ``{"constraint": "a100"}``.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    gpus: int = 0
    cpus: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 32
    job_name: str = "cellblock"
    signal_delay_s: int = 120
    sif: str | None = None
    binds: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("time_min", "cpus", "array_parallelism"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name.replace('_', '-')}: need at least 1")
        if self.gpus < 0:
            raise UserError("gpus: need 0 or more")


def _key_value(text: str) -> tuple[str, str]:
    try:
        key, value = key_value(text, what="--sbatch", bare=True)
    except UserError:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE or KEY, got {text!r}") from None
    return key.lstrip("-"), value


def add_arguments(parser: argparse.ArgumentParser, default_cluster: str = "slurm") -> None:
    """Add ``--cluster``, the SLURM resource options and ``--sif``/``--bind`` to ``parser``.

    Args:
        parser: The script's parser.
        default_cluster: The ``--cluster`` default.
    """
    g = parser.add_argument_group("cluster (submitit)")
    g.add_argument("--cluster", choices=CLUSTERS, default=default_cluster,
                   help="slurm: SLURM jobs; local: processes on this machine; debug: in this "
                        f"process (default {default_cluster})")  # fmt: skip
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--account", help="SLURM account")
    g.add_argument("--qos", help="SLURM quality of service")
    g.add_argument("--time", default="60", help="time limit: minutes, H:M:S or D-H:M:S (60)")
    g.add_argument("--gpus", type=int, default=0, help="GPUs per job (0)")
    g.add_argument("--cpus", type=int, default=1, help="CPUs per task (1)")
    g.add_argument("--mem", help="memory per job, e.g. 16G (default: the cluster's)")
    g.add_argument("--array-parallelism", type=int, default=32, metavar="N",
                   help="at most N array tasks at once (32)")  # fmt: skip
    g.add_argument("--job-name", default="cellblock", help="job name (cellblock)")
    g.add_argument("--sbatch", action="append", default=[], type=_key_value,
                   metavar="KEY=VALUE", help="extra #SBATCH flag, e.g. constraint=a100 "
                   "(repeatable)")  # fmt: skip
    c = parser.add_argument_group("container")
    c.add_argument("--sif", help="run every job in this Apptainer/Singularity image "
                                 "(default: $CELLBLOCK_SIF; '' for none)")  # fmt: skip
    c.add_argument("--bind", action="append", default=[], metavar="PATH",
                   help="extra host folder to bind into the container (repeatable)")  # fmt: skip


def from_args(args: argparse.Namespace) -> ClusterOptions:
    """The :class:`ClusterOptions` of parsed :func:`add_arguments` options."""
    return ClusterOptions(
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        time_min=parse_time_min(args.time),
        gpus=args.gpus,
        cpus=args.cpus,
        mem_gb=parse_mem_gb(args.mem) if args.mem else None,
        array_parallelism=args.array_parallelism,
        job_name=args.job_name,
        sif=args.sif,
        binds=tuple(args.bind),
        extra=dict(args.sbatch),
    )
