"""What a running local cluster is to its clients: its config file, ports and daemons."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CLUSTER_NAME", "PARTITION", "LocalSlurm", "SlurmLocalError"]

CLUSTER_NAME = "cellblock"
PARTITION = "debug"


class SlurmLocalError(RuntimeError):
    """The local cluster could not be started, reached or stopped."""


@dataclass(frozen=True)
class LocalSlurm:
    """Connection info of a running single-node cluster on 127.0.0.1.

    Attributes:
        state_dir: The cluster's state folder (configs, spools, database, logs).
        slurm_conf: Its ``slurm.conf``; clients (sbatch, sacct, submitit) find the
            cluster through ``SLURM_CONF`` pointing here.
        cluster: ``ClusterName`` (as sacct shows it).
        partition: The one (default) partition.
        cpus: CPUs the node offers to jobs.
        memory_mb: Memory the node offers to jobs.
        ports: TCP ports on 127.0.0.1: ``slurmctld``, ``slurmd``, ``slurmdbd``.
        pids: Process id of each daemon (``layout.DAEMONS``).
    """

    state_dir: Path
    slurm_conf: Path
    cluster: str
    partition: str
    cpus: int
    memory_mb: int
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The environment that points SLURM's commands (and submitit) at this cluster."""
        return {"SLURM_CONF": str(self.slurm_conf)}

    def export_lines(self) -> str:
        """``export NAME=value`` lines (shell-quoted) for ``eval "$(... start)"``."""
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())

    def record(self) -> dict[str, Any]:
        """The fields saved in ``cluster.json``."""
        return {
            "slurm_conf": str(self.slurm_conf),
            "cluster": self.cluster,
            "partition": self.partition,
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "ports": dict(self.ports),
            "pids": dict(self.pids),
        }

    @classmethod
    def from_record(cls, state_dir: Path, info: dict[str, Any]) -> LocalSlurm:
        """The cluster that ``info`` (from ``state_dir``'s ``cluster.json``) describes.

        Raises:
            KeyError, TypeError, ValueError: ``info`` lacks a field or has a bad one.
        """
        return cls(
            state_dir=state_dir,
            slurm_conf=Path(info["slurm_conf"]),
            cluster=str(info["cluster"]),
            partition=str(info["partition"]),
            cpus=int(info["cpus"]),
            memory_mb=int(info["memory_mb"]),
            ports={str(k): int(v) for k, v in info["ports"].items()},
            pids={str(k): int(v) for k, v in info["pids"].items()},
        )
