"""Object storage addresses and the client: buckets, keys, listing, errors (boto3).

``Remote`` says where objects live; ``make_client`` opens a boto3 client for it;
``list_objects`` lists a prefix; ``local_path`` maps a key under a local folder, refusing
keys that would escape it; ``explain`` turns a boto3 failure into a one-line
``StorageError``. ``cellblock.remote.storage`` moves the bytes (fetch and publish) and
re-exports these names.

Credentials come from boto3's usual chain (environment, ``--profile``, instance
role); they are never logged. The endpoint is ``Remote.endpoint_url``, else
``AWS_ENDPOINT_URL``, else AWS.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import boto3
import botocore.exceptions
from botocore import UNSIGNED
from botocore.config import Config

from cellblock.errors import UserError

__all__ = [
    "Remote",
    "RemoteObject",
    "StorageError",
    "UnsafeKeyError",
    "explain",
    "list_objects",
    "local_path",
    "make_client",
    "parallel",
    "relative_key",
]


class StorageError(UserError):
    """A bucket, key, endpoint or credential problem; never contains a secret."""


class UnsafeKeyError(StorageError):
    """An object key that would be written outside the destination folder."""


@dataclass(frozen=True)
class Remote:
    """Where objects live.

    Args:
        bucket: Bucket name.
        prefix: Key prefix (a "folder"); keys are stored relative to it.
        endpoint_url: S3 endpoint; None: ``AWS_ENDPOINT_URL`` or AWS itself.
        anonymous: Unsigned requests (public buckets), no credentials needed.
        profile: A named profile of ``~/.aws/config``.
        region: Region name; None: the profile's, else ``us-east-1``.
    """

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    anonymous: bool = False
    profile: str | None = None
    region: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class RemoteObject:
    """One listed object.

    Args:
        key: Its full key.
        size: Its size in bytes.
        etag: Its ETag, quotes included (an MD5 for a single-part upload).
    """

    key: str
    size: int
    etag: str


def make_client(remote: Remote, max_connections: int = 16):
    """A boto3 S3 client for ``remote`` (thread-safe; share it between threads)."""
    try:
        session = boto3.Session(profile_name=remote.profile)
    except botocore.exceptions.ProfileNotFound:
        raise StorageError(f"AWS profile {remote.profile!r} not found") from None
    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=max_connections,
        connect_timeout=5,
        read_timeout=30,
        signature_version=UNSIGNED if remote.anonymous else None,
    )
    endpoint = remote.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    region = remote.region or session.region_name or "us-east-1"
    return session.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def explain(error: Exception, what: str) -> StorageError:
    """A one-line StorageError for a boto3 failure on ``what`` (no secrets, no traceback)."""
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket",):
            return StorageError(f"{what}: bucket does not exist")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return StorageError(
                f"{what}: access denied ({code}); check the credentials, or use --anonymous "
                "for a public bucket"
            )
        if code in ("NoSuchKey", "404"):
            return StorageError(f"{what}: no such object")
        return StorageError(f"{what}: {code or 'error'}")
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return StorageError(
            f"{what}: no credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            "--profile, or use --anonymous for a public bucket)"
        )
    if isinstance(error, botocore.exceptions.EndpointConnectionError | ConnectionError):
        return StorageError(f"{what}: cannot reach the endpoint ({type(error).__name__})")
    return StorageError(f"{what}: {type(error).__name__}: {error}")


def list_objects(client, remote: Remote, page_size: int = 1000) -> list[RemoteObject]:
    """Every object under ``remote.prefix``, page by page; an error if there are none."""
    out = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=remote.bucket, Prefix=remote.prefix, PaginationConfig={"PageSize": page_size}
    )
    try:
        for page in pages:
            out += [RemoteObject(o["Key"], o["Size"], o["ETag"]) for o in page.get("Contents", [])]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise explain(e, remote.url) from None
    if not out:
        raise StorageError(f"{remote.url}: no objects under this prefix")
    return out


def relative_key(key: str, prefix: str) -> str:
    rel = key[len(prefix) :] if key.startswith(prefix) else key
    if prefix and not prefix.endswith("/") and rel.startswith("/"):
        rel = rel[1:]
    return rel


def local_path(out: Path, key: str, prefix: str = "") -> Path:
    """Where ``key`` lands under ``out``; UnsafeKeyError if it would land anywhere else."""
    rel = relative_key(key, prefix)
    parts = rel.split("/")
    bad = (
        not rel
        or "\\" in rel
        or "\x00" in rel
        or rel.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or PurePosixPath(rel).is_absolute()
    )
    target = None if bad else (Path(out) / rel).resolve()
    if target is None or not target.is_relative_to(Path(out).resolve()):
        raise UnsafeKeyError(f"refusing object key {key!r}: it would be written outside {out}")
    return target


def parallel(fn: Callable, items: Iterable, workers: int) -> None:
    """Run ``fn`` over ``items`` in threads; the first error cancels what has not started.

    Args:
        fn: Called once per item.
        items: The items.
        workers: Threads (at least 1).
    """
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for f in futures:
                f.result()
        finally:
            pool.shutdown(cancel_futures=True)
