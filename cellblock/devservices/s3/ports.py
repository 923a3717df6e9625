"""The ten TCP ports of a ``weed mini``: chosen, remembered, reused; and its socket files."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import stat
from collections.abc import Collection, Iterable
from pathlib import Path

from cellblock.devservices.ports import port_free
from cellblock.devservices.s3.server import HOST, S3LocalError
from cellblock.devservices.s3.state import PORTS_FILE, read_json

__all__ = ["PORT_FLAGS", "choose", "port_free", "remember", "remove_stale_sockets"]

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


def _free_port(exclude: Collection[int] = ()) -> int:
    """A random free port below the kernel's ephemeral range, not in ``exclude``.

    Ephemeral ports are handed to outgoing connections (weed's own gRPC among them), so
    a port from there may be taken by a client socket by the time a restart re-binds it.

    Args:
        exclude: Ports already handed out for the same server.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if low > 20000:
        for _ in range(200):
            port = random.randrange(20000, low)
            if port not in exclude and port_free(port):
                return port
    while True:  # fall back to ports the kernel picks
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port


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
    if s3_port is not None and not port_free(s3_port):
        raise S3LocalError(f"port {s3_port} on {HOST} is already in use")
    previous = read_json(state_dir / PORTS_FILE) or {}
    ports: dict[str, int] = {} if s3_port is None else {"s3.port": s3_port}
    for flag in PORT_FLAGS:
        if flag in ports:
            continue
        old = previous.get(flag)
        if isinstance(old, int) and old not in ports.values() and port_free(old):
            ports[flag] = old
        else:
            ports[flag] = _free_port(exclude=set(ports.values()))
    return ports


def remember(state_dir: Path, ports: dict[str, int]) -> None:
    """Save ``ports`` in ``ports.json`` for the next start on ``state_dir``."""
    (state_dir / PORTS_FILE).write_text(json.dumps(ports, indent=2) + "\n")


def _socket_in_use(path: Path) -> bool:
    """True if a process accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def remove_stale_sockets(ports: Iterable[int]) -> None:
    """Remove the ``/tmp/seaweedfs-*-<port>.sock`` files weed leaves behind.

    weed names its Unix sockets by TCP port in /tmp (not $TMPDIR), whatever its flags.
    One still accepting connections belongs to a live server and stays.
    """
    for port in set(ports):
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode) and not _socket_in_use(path):
                    path.unlink()
