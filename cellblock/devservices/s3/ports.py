"""The ten TCP ports of a ``weed mini`` (chosen, reused: ``devservices.ports``); its sockets."""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Iterable
from pathlib import Path

from cellblock.devservices import ports
from cellblock.devservices.s3.server import S3LocalError
from cellblock.devservices.s3.state import PORTS_FILE

__all__ = ["PORT_FLAGS", "choose", "remove_stale_sockets"]

# Every listener weed mini opens (with WebDAV, Iceberg and Lance off), as its port flag.
# All are chosen here: left to weed, every instance starts from the same defaults (9333,
# 8888, ...) and falls back to the next free port, so concurrent instances race for the
# same ports (a lost race is a fatal "address already in use"), and one stopping can
# unlink the /tmp/seaweedfs-*-<port>.sock of another that just took its port.
PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def choose(state_dir: Path, s3_port: int | None) -> dict[str, int]:
    """A port for each of ``PORT_FLAGS``: the last start's where free, else a random one.

    Reusing them keeps the endpoint that shells already hold, the master's state folder
    (``data/m<port>``) and the volume server's identity (``127.0.0.1:<port>``).

    Args:
        state_dir: The server's state folder (``ports.json`` holds the last ports).
        s3_port: The S3 port asked for, or None.

    Raises:
        S3LocalError: ``s3_port`` is in use.
    """
    if s3_port is not None and not ports.port_free(s3_port):
        raise S3LocalError(f"port {s3_port} on {ports.LOOPBACK} is already in use")
    fixed = {} if s3_port is None else {"s3.port": s3_port}
    return ports.choose(PORT_FLAGS, state_dir / PORTS_FILE, fixed)


def remove_stale_sockets(tcp_ports: Iterable[int]) -> None:
    """Remove the ``/tmp/seaweedfs-*-<port>.sock`` files weed leaves behind.

    weed names its Unix sockets by TCP port in /tmp (not $TMPDIR), whatever its flags.
    One still accepting connections belongs to a live server and stays.

    Args:
        tcp_ports: The TCP ports of the server (its flags' or its listeners').
    """
    for port in set(tcp_ports):
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode) and not ports.unix_socket_answers(
                    path, timeout=0.5
                ):
                    path.unlink()
