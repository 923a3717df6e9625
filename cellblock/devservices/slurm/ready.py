"""When each daemon of a starting cluster is ready, asked the way its clients ask it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

from cellblock.devservices.ports import LOOPBACK, unix_socket_answers
from cellblock.devservices.slurm.cluster import CLUSTER_NAME
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


def _tcp_answers(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0):
            return True
    except OSError:
        return False


def _munge_problem(layout: Layout, ports: dict[str, int]) -> str | None:
    # A credential encoded through the socket proves the daemon has its key loaded.
    result = subprocess.run(
        [binary("munge"), "--socket", str(layout.munge_socket), "--no-input"],
        capture_output=True,
        timeout=10,
    )
    return None if result.returncode == 0 else "munge cannot encode a credential"


def _mariadb_problem(layout: Layout, ports: dict[str, int]) -> str | None:
    return None if unix_socket_answers(layout.mysql_socket) else "no answer on its socket"


def _slurmdbd_problem(layout: Layout, ports: dict[str, int]) -> str | None:
    return None if _tcp_answers(ports["slurmdbd"]) else f"no answer on port {ports['slurmdbd']}"


def ctld_answers(layout: Layout) -> bool:
    """True if slurmctld answers ``scontrol ping``."""
    try:
        result = run_client(layout, "scontrol", "ping", timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and "UP" in result.stdout


def _slurmctld_problem(layout: Layout, ports: dict[str, int]) -> str | None:
    if not ctld_answers(layout):
        return "no answer to scontrol ping"
    # slurmctld registers the cluster with slurmdbd as it starts; sacct needs that.
    result = run_client(layout, "sacctmgr", "-n", "-P", "show", "cluster", "format=cluster")
    if result.returncode == 0 and CLUSTER_NAME in result.stdout.split():
        return None
    return f"cluster {CLUSTER_NAME!r} not registered in the accounting database"


def node_state(layout: Layout) -> str:
    """The node's state as sinfo prints it (``idle``, ``mixed``, ``down*``...), or ``""``."""
    try:
        result = run_client(layout, "sinfo", "-h", "-N", "-n", "localhost", "-o", "%T")
    except subprocess.TimeoutExpired:
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _slurmd_problem(layout: Layout, ports: dict[str, int]) -> str | None:
    # Registered and schedulable; "unknown" until slurmd has talked to slurmctld.
    state = node_state(layout)
    if state in ("idle", "mixed", "allocated", "completing"):
        return None
    return f"node state {state or 'unknown'!r}"


# Daemon -> check(layout, ports): None once ready, else what is missing; run after the
# daemon is started, until it returns None.
READY_CHECKS: dict[str, Callable[[Layout, dict[str, int]], str | None]] = {
    "munged": _munge_problem,
    "mariadbd": _mariadb_problem,
    "slurmdbd": _slurmdbd_problem,
    "slurmctld": _slurmctld_problem,
    "slurmd": _slurmd_problem,
}
