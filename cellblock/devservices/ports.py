"""Loopback ports for the local services (S3, SLURM): is one free to listen on?"""

from __future__ import annotations

import socket

__all__ = ["LOOPBACK", "port_free"]

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
