"""When a starting ``weed mini`` is ready: S3 answers, buckets exist, volumes are registered."""

from __future__ import annotations

import json
import logging
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import botocore
import botocore.exceptions
from botocore.config import Config

from cellblock.devservices import process
from cellblock.devservices.s3.server import REGION, LocalS3, S3LocalError, url
from cellblock.devservices.s3.state import DATA_DIR, LOG_FILE

__all__ = ["answers", "wait_ready"]

log = logging.getLogger(__name__)

# No proxy: a cluster's http_proxy must not intercept requests to 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers(url: str, path: str = "/healthz", timeout: float = 2.0) -> bool:
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
    tails = (path.stem.rpartition("_")[2] for path in data_dir.glob("*.dat"))
    return {int(tail) for tail in tails if tail.isdigit()}


def _master_knows_volumes(master_url: str, volume_ids: set[int]) -> bool:
    """True if a volume server has registered with the master, with all ``volume_ids``.

    S3 answers, and buckets exist, before the volume server's first heartbeat; until
    then reads of existing objects fail with InternalError ("volume N not found").
    """
    try:
        topology = _get_json(f"{master_url}/dir/status").get("Topology") or {}
        racks = [rack for dc in topology.get("DataCenters") or [] for rack in dc.get("Racks") or []]
        return any(rack.get("DataNodes") for rack in racks) and all(
            _get_json(f"{master_url}/dir/lookup?volumeId={vid}").get("locations")
            for vid in sorted(volume_ids)
        )
    except (OSError, ValueError, AttributeError):
        return False


def client(server: LocalS3, anonymous: bool = False, config: Config | None = None):
    """A boto3 S3 client for ``server``: with its admin keys, or unsigned (anonymous).

    Args:
        server: The running server.
        anonymous: Unsigned requests, as a public-bucket reader makes them.
        config: botocore settings (timeouts, retries); merged with the signature choice.
    """
    config = config or Config()
    where = {"endpoint_url": server.endpoint_url, "region_name": REGION}
    if anonymous:
        unsigned = config.merge(Config(signature_version=botocore.UNSIGNED))
        return boto3.client("s3", **where, config=unsigned)
    keys = {"aws_access_key_id": server.access_key, "aws_secret_access_key": server.secret_key}
    return boto3.client("s3", **where, **keys, config=config)


def _ensure_bucket(client, bucket: str) -> None:
    """Create ``bucket`` unless it exists (it does after a restart)."""
    try:
        client.create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def wait_ready(
    proc: subprocess.Popen, server: LocalS3, ports: dict[str, int], deadline: float, log_offset: int
) -> None:
    """Poll until S3 serves both buckets and every stored volume; else raise with the log.

    Args:
        proc: The weed process.
        server: Where it should serve.
        ports: Its ports, by flag name (see ``ports.PORT_FLAGS``).
        deadline: ``time.monotonic()`` value to give up at.
        log_offset: Byte offset in ``server.log`` where this start's output begins.

    Raises:
        S3LocalError: weed exited, or S3 was not ready by ``deadline`` (with the tail of
            its log).
    """
    # Short timeouts and no retries: the caller polls.
    admin = client(server, config=Config(connect_timeout=2, read_timeout=5,
                                         retries={"max_attempts": 1}))  # fmt: skip
    volume_ids = _volume_ids(server.state_dir / DATA_DIR)  # before weed makes new ones
    master_url = url(ports["master.port"])

    def buckets_problem() -> str | None:
        if not answers(server.endpoint_url, timeout=1.0):
            return "no answer"
        try:
            # Buckets are made here rather than with weed's -bucket flag, which creates
            # them in the background after S3 already answers (a race for callers).
            for bucket in (server.public_bucket, server.private_bucket):
                _ensure_bucket(admin, bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            return f"{type(e).__name__}: {e}"  # boto3 messages carry no secrets
        return None

    def volumes_problem() -> str | None:
        if _master_knows_volumes(master_url, volume_ids):
            return None
        return f"volume server not registered with the master ({master_url})"

    what, log_path = f"weed (S3 on port {server.port})", server.state_dir / LOG_FILE
    for step in (buckets_problem, volumes_problem):
        process.wait_ready(
            step, proc, what, deadline, log_path=log_path, log_offset=log_offset, error=S3LocalError
        )

    # S3 does not need weed's embedded admin server, but weed mini always runs it, and a
    # SIGTERM that arrives while it is still starting can leave its shutdown waiting ~10 s
    # on a lock held at the master: wait for it too (best effort, 5 s at most).
    admin_url = url(ports["admin.port"])
    admin_wait = min(deadline - time.monotonic(), 5.0)
    if not process.wait_until(lambda: answers(admin_url, "/health", timeout=1.0), admin_wait):
        log.debug("weed's admin server at %s did not answer; going on without it", admin_url)
