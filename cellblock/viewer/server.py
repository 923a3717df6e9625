"""Neuroglancer's web server: loopback by default, clear errors, serve until Ctrl-C.

neuroglancer runs one tornado server per process, started with the first viewer. We
start it explicitly so that the address is ours to choose (127.0.0.1 unless the user
asks: the viewer serves the images to anyone who can reach it, with no password) and a
taken port is a one-line error instead of a traceback from inside tornado.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import threading
import weakref

import neuroglancer
import neuroglancer.server

from cellblock.errors import UserError

__all__ = ["DEFAULT_BIND", "serve_forever", "server_address", "start"]

log = logging.getLogger(__name__)
DEFAULT_BIND = "127.0.0.1"
_bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # server -> our address


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def start(bind: str = DEFAULT_BIND, port: int = 0) -> tuple[str, int]:
    """Start (or restart on another address) neuroglancer's server.

    Args:
        bind: Address to listen on; ``0.0.0.0`` makes the viewer reachable from other
            machines (and anyone on the network).
        port: TCP port; 0 picks a free one.

    Returns:
        ``(address, port)`` it listens on.

    Raises:
        UserError: The port is taken, or the address is not one of this machine's.
    """
    current = neuroglancer.server.global_server
    if current is not None:
        if _bound.get(current) == bind and port in (0, current.port):
            return bind, current.port
        neuroglancer.server.stop()
    neuroglancer.set_server_bind_address(bind, port)
    try:
        neuroglancer.server.start()
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {port} on {bind} is already in use (another viewer?): "
                "choose another --port, or leave it out for a free one"
            ) from None
        raise UserError(f"cannot listen on {bind}:{port}: {err.strerror or err}") from None
    server = neuroglancer.server.global_server
    _bound[server] = bind
    if not _is_loopback(bind):
        log.warning(
            "viewer listens on %s: anyone who can reach this machine can see the data", bind
        )
    return bind, server.port


def server_address() -> tuple[str, int]:
    """``(address, port)`` of the running server."""
    server = neuroglancer.server.global_server
    if server is None or server not in _bound:
        raise RuntimeError("the viewer server was not started by cellblock.viewer.server.start")
    return _bound[server], server.port


def serve_forever(stop: threading.Event | None = None) -> None:
    """Block until ``stop`` is set or Ctrl-C (KeyboardInterrupt), then stop the server."""
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):  # a short wait keeps Ctrl-C responsive
            pass
    finally:
        neuroglancer.server.stop()
