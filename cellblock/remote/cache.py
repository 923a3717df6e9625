"""A local, verified copy of one ``s3://bucket/key`` object in the user's cache.

Used for inputs a run needs as a file (pretrained weights, a published checkpoint):
downloaded once (size + ETag checked, written atomically), then reused while intact.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import boto3

from cellblock.errors import ConfigError
from cellblock.remote.storage import (
    Remote,
    StorageError,
    download_objects,
    list_objects,
    make_client,
)

__all__ = ["cache_root", "cached_copy"]

log = logging.getLogger(__name__)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$CELLBLOCK_CACHE``, else ``~/.cache/cellblock``."""
    return Path(cache_dir or os.environ.get("CELLBLOCK_CACHE") or "~/.cache/cellblock").expanduser()


def cached_copy(uri: str, cache_dir: str | Path | None = None) -> Path:
    """The cached local path of ``uri`` (``s3://bucket/key``), downloading it if needed.

    Without AWS credentials the request is anonymous (public buckets).

    Args:
        uri: ``s3://bucket/key`` of one object.
        cache_dir: Cache folder (see :func:`cache_root`); the object lands under
            ``checkpoints/<bucket>/<key>``.
    """
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key or key.endswith("/"):
        raise ConfigError(f"{uri!r} is not s3://bucket/key")
    parent = key.rpartition("/")[0]
    anonymous = boto3.Session().get_credentials() is None
    remote = Remote(bucket, prefix=f"{parent}/" if parent else "", anonymous=anonymous)
    client = make_client(remote, max_connections=2)
    found = [o for o in list_objects(client, Remote(bucket, prefix=key)) if o.key == key]
    if not found:
        raise StorageError(f"{uri}: no such object")
    out = cache_root(cache_dir) / "checkpoints" / bucket / parent
    stats = download_objects(client, remote, found, out, workers=1, progress=False)
    path = out / key.rpartition("/")[2]
    log.info("%s -> %s (%s)", uri, path, "cached" if stats["skipped"] else "downloaded")
    return path
