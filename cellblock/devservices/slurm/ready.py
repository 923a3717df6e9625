"""When each daemon of a starting cluster is ready, asked the way its clients ask it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

from cellblock.devservices.slurm.cluster import CLUSTER_NAME, HOST
from cellblock.devservices.slurm.daemons import binary, client_env
from cellblock.devservices.slurm.layout import Layout

__all__ = ["READY_CHECKS", "ctld_answers", "node_state", "run_client"]


def run_client(layout: Layout, *argv: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Run a SLURM client command (sinfo, scontrol, sacct...) against this cluster."""
    return subprocess.run(
        [binary(argv[0]), *argv[1:]],
        env=client_env(layout),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _unix_socket_answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def _tcp_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _munge_ready(layout: Layout, ports: dict[str, int]) -> bool:
    # A credential encoded through the socket proves the daemon has its key loaded.
    result = subprocess.run(
        [binary("munge"), "--socket", str(layout.munge_socket), "--no-input"],
        capture_output=True,
        timeout=10,
    )
    return result.returncode == 0


def _mariadb_ready(layout: Layout, ports: dict[str, int]) -> bool:
    return _unix_socket_answers(str(layout.mysql_socket))


def _slurmdbd_ready(layout: Layout, ports: dict[str, int]) -> bool:
    return _tcp_answers(ports["slurmdbd"])


def ctld_answers(layout: Layout) -> bool:
    """True if slurmctld answers ``scontrol ping``."""
    try:
        result = run_client(layout, "scontrol", "ping", timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and "UP" in result.stdout


def _slurmctld_ready(layout: Layout, ports: dict[str, int]) -> bool:
    if not ctld_answers(layout):
        return False
    # slurmctld registers the cluster with slurmdbd as it starts; sacct needs that.
    result = run_client(layout, "sacctmgr", "-n", "-P", "show", "cluster", "format=cluster")
    return result.returncode == 0 and CLUSTER_NAME in result.stdout.split()


def node_state(layout: Layout) -> str:
    """The node's state as sinfo prints it (``idle``, ``mixed``, ``down*``...), or ``""``."""
    try:
        result = run_client(layout, "sinfo", "-h", "-N", "-n", "localhost", "-o", "%T")
    except subprocess.TimeoutExpired:
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _slurmd_ready(layout: Layout, ports: dict[str, int]) -> bool:
    # Registered and schedulable; "unknown" until slurmd has talked to slurmctld.
    return node_state(layout) in ("idle", "mixed", "allocated", "completing")


# Daemon -> check(layout, ports); run after the daemon is started, until it holds.
READY_CHECKS: dict[str, Callable[[Layout, dict[str, int]], bool]] = {
    "munged": _munge_ready,
    "mariadbd": _mariadb_ready,
    "slurmdbd": _slurmdbd_ready,
    "slurmctld": _slurmctld_ready,
    "slurmd": _slurmd_ready,
}
