"""The three TCP ports of a local cluster: chosen free, remembered, reused on restart."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

from cellblock.devservices.ports import port_free
from cellblock.devservices.slurm.layout import Layout

__all__ = ["PORT_NAMES", "choose", "port_free"]

PORT_NAMES = ("slurmctld", "slurmd", "slurmdbd")


def _random_free(exclude: set[int]) -> int:
    """A free port below the ephemeral range (those go to outgoing connections)."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(500):
        port = random.randrange(20000, max(low, 20001))
        if port not in exclude and port_free(port):
            return port
    raise OSError("no free TCP port found on 127.0.0.1")


def choose(layout: Layout) -> dict[str, int]:
    """Ports for this start: the previous ones when all are free, else new random ones.

    Random rather than SLURM's 6817-6819, so a test cluster and a development cluster
    (or a system SLURM) can run side by side.
    """
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        previous = json.loads(layout.ports_file.read_text())
        ports = {name: int(previous[name]) for name in PORT_NAMES}
        if len(set(ports.values())) == len(ports) and all(map(port_free, ports.values())):
            return ports
    chosen: dict[str, int] = {}
    for name in PORT_NAMES:
        chosen[name] = _random_free(set(chosen.values()))
    layout.ports_file.write_text(json.dumps(chosen, indent=2) + "\n")
    return chosen
