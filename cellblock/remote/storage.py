"""Object storage with boto3: any S3-compatible endpoint, anonymous or with credentials.

    fetch:   list s3://bucket/prefix -> check every key is safe -> skip files already
             present and intact -> download the rest in parallel (temp name, verify,
             rename) with retries and backoff
    publish: upload a folder, then its checksum manifest (``cellblock.remote.checksums``)

Credentials come from boto3's usual chain (environment, ``--profile``, instance
role); they are never logged. The endpoint is ``Remote.endpoint_url``, else
``AWS_ENDPOINT_URL``, else AWS.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from cellblock.progress import progress_bar
from cellblock.remote.checksums import MANIFEST_NAME, Manifest, etag_matches
from cellblock.remote.s3 import (
    Remote,
    RemoteObject,
    StorageError,
    UnsafeKeyError,
    explain,
    list_objects,
    local_path,
    make_client,
    parallel,
    relative_key,
)

# Remote ... relative_key: cellblock.remote.s3, re-exported (their callers import them here)
__all__ = [
    "Remote",
    "RemoteObject",
    "StorageError",
    "UnsafeKeyError",
    "download_objects",
    "explain",
    "list_objects",
    "local_path",
    "make_client",
    "relative_key",
    "upload_folder",
]

log = logging.getLogger(__name__)
_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class _Fetch:
    """What the downloads of one ``download_objects`` call share.

    Args:
        client: The boto3 client.
        remote: Bucket and prefix.
        manifest: The bucket's checksum manifest, if it has one.
        attempts: Tries per object.
        on_bytes: Called with the size of each block received (the progress bar).
    """

    client: Any
    remote: Remote
    manifest: Manifest | None
    attempts: int
    on_bytes: Callable[[int], object]


def _intact(path: Path, obj: RemoteObject, name: str, manifest: Manifest | None) -> bool:
    if not path.is_file() or path.stat().st_size != obj.size:
        return False
    verdict = manifest.matches(name, path) if manifest else None
    return verdict if verdict is not None else etag_matches(path, obj.etag)


def _verified(tmp: Path, obj, name, manifest, digests: dict) -> bool:
    """Check a fresh download with the digests computed while streaming it (no re-read)."""
    if tmp.stat().st_size != obj.size:
        return False
    entry = manifest.files.get(name) if manifest else None
    if entry is not None:
        return digests["sha256"].hexdigest() == entry["sha256"]
    etag = obj.etag.strip('"')
    if "-" not in etag:
        return digests["md5"].hexdigest() == etag
    return etag_matches(tmp, etag)  # multipart: needs the part size, so re-read


# Errors of the local file system being written (disk full, quota, permissions,
# read-only): a retry cannot help.
_LOCAL_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
)


def _fetch_one(fetch: _Fetch, obj: RemoteObject, path: Path, name: str) -> None:
    """Download ``obj`` to ``path`` (a temp name, verified, renamed), retrying with backoff.

    Args:
        fetch: What the call's downloads share.
        obj: The object.
        path: Where it lands.
        name: Its key relative to the prefix (its manifest entry).
    """
    client, remote, manifest, attempts = fetch.client, fetch.remote, fetch.manifest, fetch.attempts
    tmp = path.with_name(f".{path.name}.part")
    what = f"s3://{remote.bucket}/{obj.key}"
    for attempt in range(attempts):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            body = client.get_object(Bucket=remote.bucket, Key=obj.key)["Body"]
            digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
            with open(tmp, "wb") as f:
                for block in body.iter_chunks(_BLOCK):
                    f.write(block)
                    for d in digests.values():
                        d.update(block)
                    fetch.on_bytes(len(block))
            if not _verified(tmp, obj, name, manifest, digests):
                raise StorageError(f"{what}: downloaded bytes fail the size/checksum check")
            os.replace(tmp, path)
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                StorageError, OSError) as e:  # fmt: skip
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno in _LOCAL_ERRNOS:
                # the local disk, not the network: retrying cannot help; the edge
                # (cellblock.cli.run) reports it in one line naming the file
                if e.filename is None:
                    e.filename = str(tmp)
                raise
            fatal = isinstance(e, botocore.exceptions.ClientError) and e.response.get(
                "Error", {}
            ).get("Code") in ("AccessDenied", "NoSuchKey", "NoSuchBucket", "403", "404")
            if fatal or attempt == attempts - 1:
                err = e if isinstance(e, StorageError) else explain(e, what)
                raise StorageError(f"{err} (after {attempt + 1} attempt(s))") from None
            delay = min(0.5 * 2**attempt, 8.0)
            log.warning("%s: %s; retrying in %.1f s", what, type(e).__name__, delay)
            time.sleep(delay)


def download_objects(
    client: Any,
    remote: Remote,
    objects: list[RemoteObject],
    out: Path,
    *,
    workers: int = 8,
    attempts: int = 8,
    progress: bool = True,
) -> dict[str, int]:
    """Download ``objects`` under ``out`` (paths relative to ``remote.prefix``).

    Args:
        client: From :func:`make_client`.
        remote: Bucket and prefix the objects were listed from.
        objects: What to fetch (from :func:`list_objects`, possibly filtered).
        out: Destination folder.
        workers: Parallel downloads.
        attempts: Tries per object before giving up, with exponential backoff capped
            at 8 s: the default 8 rides out ~30 s of a restarting server.
        progress: Show a progress bar of bytes and files.

    Returns:
        ``{"downloaded": n, "skipped": n, "bytes": n}``.
    """
    out = Path(out)
    paths = {o.key: local_path(out, o.key, remote.prefix) for o in objects}  # all keys first
    manifest = _read_manifest(client, remote, objects)
    todo = []
    for obj in objects:
        name = relative_key(obj.key, remote.prefix)
        if _intact(paths[obj.key], obj, name, manifest):
            continue
        todo.append((obj, name))
    skipped = len(objects) - len(todo)
    if skipped:
        log.info("%d of %d file(s) already present and intact: skipped", skipped, len(objects))
    total = sum(o.size for o, _ in todo)
    with progress_bar(
        total=total, unit="B", unit_scale=True, desc="fetch", disable=not progress
    ) as bar:
        done = [0]
        fetch = _Fetch(client, remote, manifest, attempts, bar.update)

        def one(item: tuple[RemoteObject, str]) -> None:
            obj, name = item
            _fetch_one(fetch, obj, paths[obj.key], name)
            done[0] += 1
            bar.set_postfix_str(f"{done[0]}/{len(todo)} files", refresh=False)

        parallel(one, todo, workers)
    return {"downloaded": len(todo), "skipped": skipped, "bytes": total}


def _read_manifest(client, remote: Remote, objects: list[RemoteObject]) -> Manifest | None:
    key = next((o.key for o in objects if relative_key(o.key, remote.prefix) == MANIFEST_NAME),
               None)  # fmt: skip
    if key is None:
        return None
    try:
        text = client.get_object(Bucket=remote.bucket, Key=key)["Body"].read().decode()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise explain(e, f"s3://{remote.bucket}/{key}") from None
    return Manifest.from_json(text, f"s3://{remote.bucket}/{key}")


# downloads in progress, writers' lock files (cellblock.locks), checkpoints set aside
_LOCAL_ONLY = (".part", ".lock", ".corrupt")


def upload_folder(
    client: Any, remote: Remote, folder: Path, *, workers: int = 8, progress: bool = True
) -> dict[str, int]:
    """Upload every file of ``folder`` under ``remote.prefix``, then ``manifest.json``.

    Local-only files are skipped: ``*.part`` downloads, ``*.lock`` files, ``*.corrupt``
    checkpoints.

    The manifest goes last, so a reader that sees it sees every file it lists.

    Args:
        client: From :func:`make_client`.
        remote: Bucket and prefix to upload under.
        folder: The folder.
        workers: Parallel uploads.
        progress: Show a progress bar of bytes.

    Returns:
        ``{"files": n, "bytes": n}``.
    """
    folder = Path(folder)
    names = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.endswith(_LOCAL_ONLY)
    )
    if not names:
        raise StorageError(f"{folder}: nothing to publish")
    manifest = Manifest.for_folder(folder, names)
    prefix = (
        remote.prefix if not remote.prefix or remote.prefix.endswith("/") else remote.prefix + "/"
    )
    total = sum(e["size"] for e in manifest.files.values())
    with progress_bar(
        total=total, unit="B", unit_scale=True, desc="publish", disable=not progress
    ) as bar:

        def one(name: str) -> None:
            try:
                client.upload_file(str(folder / name), remote.bucket, prefix + name,
                                   Callback=bar.update)  # fmt: skip
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                    boto3.exceptions.S3UploadFailedError) as e:  # fmt: skip
                raise explain(e, f"s3://{remote.bucket}/{prefix}{name}") from None

        parallel(one, names, workers)
    try:
        client.put_object(Bucket=remote.bucket, Key=prefix + MANIFEST_NAME,
                          Body=manifest.to_json().encode())  # fmt: skip
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise explain(e, f"s3://{remote.bucket}/{prefix}{MANIFEST_NAME}") from None
    return {"files": len(names), "bytes": total}
