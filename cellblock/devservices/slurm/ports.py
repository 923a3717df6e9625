"""The three TCP ports of a local cluster: chosen free, remembered, reused on restart."""

from __future__ import annotations

from cellblock.devservices import ports
from cellblock.devservices.slurm.layout import Layout

__all__ = ["PORT_NAMES", "choose"]

PORT_NAMES = ("slurmctld", "slurmd", "slurmdbd")


def choose(layout: Layout) -> dict[str, int]:
    """Ports for this start (saved in ``ports.json``): the previous ones where free, else new.

    Random rather than SLURM's 6817-6819, so a test cluster and a development cluster
    (or a system SLURM) can run side by side.

    Args:
        layout: The cluster's paths.
    """
    chosen = ports.choose(PORT_NAMES, layout.ports_file)
    ports.remember(layout.ports_file, chosen)
    return chosen
