"""Loopback TCP ports of the local services: free ones, reused across restarts; listeners.

A service's ports are chosen here, not left to its programs' defaults, so that two
instances (a test's and a developer's, or a system SLURM's) run side by side, and kept
in its state folder so that a restart serves at the same addresses.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from cellblock.devservices.files import read_json

__all__ = [
    "LOOPBACK",
    "choose",
    "listening_sockets",
    "port_free",
    "random_free_port",
    "remember",
    "unix_socket_answers",
]

LOOPBACK = "127.0.0.1"


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """True if ``host:port`` can be bound now by a listener.

    Args:
        port: The TCP port.
        host: The address to bind (loopback by default).
    """
    with socket.socket() as s:
        # As the servers' own listeners do: connections of a stopped server linger in
        # TIME_WAIT on its port for a minute, which blocks a plain bind but not a restart.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def random_free_port(exclude: Collection[int] = ()) -> int:
    """A random free port below the kernel's ephemeral range, not in ``exclude``.

    Ephemeral ports are handed to outgoing connections (a service's own clients among
    them), so a port from there may be taken by a client socket by the time a restart
    re-binds it.

    Args:
        exclude: Ports already handed out for the same service.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if low > 20000:
        for _ in range(200):
            port = random.randrange(20000, low)
            if port not in exclude and port_free(port):
                return port
    while True:  # fall back to ports the kernel picks
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port


def choose(
    names: Sequence[str], previous_file: Path, fixed: Mapping[str, int] | None = None
) -> dict[str, int]:
    """A port for each of ``names``: the one in ``previous_file`` where free, else a random one.

    Args:
        names: The service's ports, by name (a flag, a daemon).
        previous_file: The JSON file ``remember`` wrote at the last start (may be missing).
        fixed: Ports asked for by name, taken as they are.
    """
    fixed = dict(fixed or {})
    previous = read_json(previous_file) or {}
    ports: dict[str, int] = {}
    for name in names:
        taken = {*fixed.values(), *ports.values()}
        old = previous.get(name)
        if name in fixed:
            ports[name] = fixed[name]
        elif isinstance(old, int) and old not in taken and port_free(old):
            ports[name] = old
        else:
            ports[name] = random_free_port(exclude=taken)
    return ports


def remember(path: Path, ports: Mapping[str, int]) -> None:
    """Save ``ports`` in ``path`` for the next start (``choose`` reads them back).

    Args:
        path: The JSON file (``ports.json`` of the state folder).
        ports: The ports, by name.
    """
    path.write_text(json.dumps(dict(ports), indent=2) + "\n")


def unix_socket_answers(path: Path, timeout: float = 1.0) -> bool:
    """True if a process accepts connections on the Unix socket ``path``.

    Args:
        path: The socket file.
        timeout: Seconds to wait for the connection.
    """
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process ``pid`` listens on (Linux /proc).

    Args:
        pid: Process id; its open file descriptors must be readable (same user or root).
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 4), ("tcp6", 16)):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A = TCP_LISTEN
                continue
            hex_addr, hex_port = cols[1].split(":")
            # /proc prints the address as host-order 32-bit words: reverse each word.
            raw = bytes.fromhex(hex_addr)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            family = socket.AF_INET if width == 4 else socket.AF_INET6
            found.append((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return sorted(set(found))
