"""Start, query and stop the ``weed mini`` of a state folder (one per folder)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cellblock.devservices.files import read_json
from cellblock.devservices.ports import remember
from cellblock.devservices.process import log_tail
from cellblock.devservices.s3 import ports, process, ready
from cellblock.devservices.s3.server import (
    DEFAULT_PRIVATE_BUCKET,
    DEFAULT_PUBLIC_BUCKET,
    LocalS3,
    S3LocalError,
    url,
)
from cellblock.devservices.s3.state import (
    CONFIG_FILE,
    DATA_DIR,
    LOG_FILE,
    PORTS_FILE,
    STATE_FILE,
    prepare,
    save_server,
)

__all__ = ["start", "status", "stop"]

log = logging.getLogger(__name__)


def status(state_dir: Path) -> LocalS3 | None:
    """The server running on ``state_dir``, or None if none is (or it does not answer).

    Args:
        state_dir: The server's state folder.
    """
    state_dir = Path(state_dir).resolve()
    info = read_json(state_dir / STATE_FILE)
    if info is None:
        return None
    try:
        server = LocalS3.from_record(state_dir, info)
    except (KeyError, TypeError, ValueError):
        return None
    if not process.is_our_server(server.pid, state_dir) or not ready.answers(server.endpoint_url):
        return None
    return server


def _running(state_dir: Path, port: int | None) -> LocalS3 | None:
    """The server already serving ``state_dir``, or None (its folder then exists).

    Args:
        state_dir: The state folder (resolved).
        port: The port asked for (None: any).

    Raises:
        S3LocalError: It runs on another port than ``port``, or runs but does not answer.
    """
    running = status(state_dir)
    if running is not None:
        if port is not None and port != running.port:
            raise S3LocalError(
                f"a server already runs on {state_dir} at port {running.port}, not {port}"
            )
        return running
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pid = (read_json(state_dir / STATE_FILE) or {}).get("pid")
    if process.is_our_server(pid, state_dir):
        # Alive but not answering: a second weed on the same data would corrupt it.
        message = f"weed (pid {pid}) runs on {state_dir} but S3 does not answer; stop it first"
        raise S3LocalError(f"{message}; {log_tail(state_dir / LOG_FILE)}")
    return None


def start(
    state_dir: Path,
    port: int | None = None,
    timeout: float = 30.0,
    *,
    public_bucket: str = DEFAULT_PUBLIC_BUCKET,
    private_bucket: str = DEFAULT_PRIVATE_BUCKET,
) -> LocalS3:
    """Start ``weed mini`` on 127.0.0.1 with its data in ``state_dir``; return when S3 serves.

    Idempotent: if a server already runs on ``state_dir`` it is returned as is.

    Args:
        state_dir: State folder (created, mode 0700); keys, config, log and data live here,
            so a later start on the same folder serves the same objects with the same keys.
        port: S3 port. None: the previous port of this folder if it is free, else a free one.
        timeout: Seconds to wait for S3 to answer and the buckets to exist.
        public_bucket: Name of the anonymously readable bucket.
        private_bucket: Name of the bucket that needs the admin keys.

    Raises:
        S3LocalError: weed is missing, exits, or does not answer in time (the message
            ends with the tail of the server log); or a server on ``state_dir`` runs on
            another port than ``port``.
    """
    state_dir = Path(state_dir).resolve()
    running = _running(state_dir, port)
    if running is not None:
        return running
    chosen = ports.choose(state_dir, port)
    port = chosen["s3.port"]
    access_key, secret_key = prepare(state_dir, public_bucket)

    t0 = time.monotonic()
    proc, log_offset = process.spawn(state_dir, state_dir / CONFIG_FILE, chosen)
    server = LocalS3(
        endpoint_url=url(port),
        access_key=access_key,
        secret_key=secret_key,
        public_bucket=public_bucket,
        private_bucket=private_bucket,
        state_dir=state_dir,
        pid=proc.pid,
        port=port,
    )
    try:
        ready.wait_ready(proc, server, chosen, t0 + timeout, log_offset)
    except BaseException:
        ports.remove_stale_sockets(process.stop_server(proc.pid, 5.0) | set(chosen.values()))
        raise
    save_server(server, chosen)
    remember(state_dir / PORTS_FILE, chosen)
    log.info(
        "local S3 at %s (pid %d, data in %s) ready in %.1f s",
        server.endpoint_url,
        proc.pid,
        state_dir / DATA_DIR,
        time.monotonic() - t0,
    )
    return server


def stop(state_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the server running on ``state_dir``; keys and data stay for the next start.

    Args:
        state_dir: The server's state folder.
        timeout: Seconds to wait after SIGTERM before SIGKILL.

    Returns:
        True if a server was running (and is now stopped), False if none was.
    """
    state_dir = Path(state_dir).resolve()
    info = read_json(state_dir / STATE_FILE)
    if info is None:
        return False
    # Its recorded ports too: after a crash or a SIGKILL, no listener is left to ask.
    recorded = info["ports"] if isinstance(info.get("ports"), dict) else {}
    socket_ports = {p for p in recorded.values() if isinstance(p, int)}
    pid = info.get("pid")
    running = process.is_our_server(pid, state_dir)
    if running and isinstance(pid, int):  # (is_our_server: only a positive int is one)
        t0 = time.monotonic()
        socket_ports |= process.stop_server(pid, timeout)
        log.info("stopped local S3 (pid %d) in %.1f s", pid, time.monotonic() - t0)
    ports.remove_stale_sockets(socket_ports)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return running
