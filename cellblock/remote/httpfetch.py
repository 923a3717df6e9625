"""Datasets published as plain HTTP(S) files, such as RxRx1's zips (``datasets.json``).

    whole:  download_url into ``out/.downloads/`` (resumable) -> extract_zip -> the
            archive is removed (a rerun asks the remote central directory whether
            every member is already here, instead of downloading again)
    subset: HttpRangeFile over each zip -> only the wanted experiments' members travel
            (RxRx1's images zip is 46 GB; one experiment is about 1 GB)

The pieces live in ``cellblock.remote.httpclient`` (HTTP) and ``cellblock.remote.unzip``
(zips); they are re-exported here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from cellblock.errors import UserError
from cellblock.remote.httpclient import (
    HttpRangeFile,
    RangeNotSupportedError,
    download_url,
    open_url,
)
from cellblock.remote.storage import StorageError, UnsafeKeyError, local_path
from cellblock.remote.unzip import extract_zip, extract_zips, intact_members

__all__ = [
    "HttpRangeFile",
    "RangeNotSupportedError",
    "download_url",
    "extract_zip",
    "fetch_archives",
    "open_url",
]

log = logging.getLogger(__name__)


def fetch_archives(
    files: list[dict],
    out: Path,
    wanted: Sequence[str] | None = None,
    progress: bool = True,
    attempts: int = 5,
    backoff: float = 0.5,
) -> dict:
    """Fetch a catalog entry's files (``{"url", "extract", "strip"}``) into ``out``.

    Without ``wanted``, a zip is downloaded whole into ``out/.downloads/`` (resumable),
    extracted, then removed; a rerun reads the remote central directory and skips the
    download if every member is present and intact. With ``wanted``, every zip is read
    in place and only the wanted members travel. ``extract: false`` files are
    downloaded as they are into ``out``.

    Args:
        files: The entry's ``files`` list from ``01_data/datasets.json``.
        out: Destination folder.
        wanted: Experiments or ``EXP/PlateN`` entries (see :func:`extract_zip`); each
            must match a member of some archive, else nothing is extracted.
        progress: Show progress bars.
        attempts: Tries per request.
        backoff: Seconds before the second try; doubled after each failure.

    Returns:
        ``{"archives": n, "downloaded": bytes, "extracted": n, "skipped": n, "bytes": n}``:
        bytes received over the network, members extracted and found intact, and the
        bytes extracted.
    """
    out, wanted = Path(out), list(wanted or [])
    net: dict[str, Any] = {"attempts": attempts, "backoff": backoff}
    total = {"archives": len(files), "downloaded": 0, "extracted": 0, "skipped": 0, "bytes": 0}
    targets = [local_path(out, _file_name(e["url"])) for e in files]  # every name, first
    zips = [(e, t) for e, t in zip(files, targets, strict=True) if e.get("extract", False)]
    for entry, target in zip(files, targets, strict=True):
        if not entry.get("extract", False) and not target.exists():  # exists only complete
            total["downloaded"] += download_url(entry["url"], target, progress=progress, **net)
    if wanted:  # read each zip in place: only the wanted members travel
        raws = [HttpRangeFile(e["url"], **net) for e, _ in zips]
        sources = [(r, int(e.get("strip", 0))) for r, (e, _) in zip(raws, zips, strict=True)]
        total.update(extract_zips(sources, out, wanted, progress))
        total["downloaded"] += sum(r.bytes_read for r in raws)
    for entry, target in zips if not wanted else []:
        _fetch_whole(entry, out / ".downloads" / target.name, out, progress, net, total)
    return total


def _file_name(url: str) -> str:
    name = unquote(PurePosixPath(urlparse(url).path).name)
    if not name:
        raise UserError(f"{url}: the URL names no file")
    return name


def _fetch_whole(entry: dict, archive: Path, out: Path, progress, net, total) -> None:
    url, strip = entry["url"], int(entry.get("strip", 0))
    if not archive.exists():  # it exists only complete (a crash during extraction)
        try:  # after a finished run the archive is gone: is everything still here?
            present = intact_members(HttpRangeFile(url, **net), out, strip)
            if present is not None:
                log.info("%s: all %d member(s) present and intact; not fetched", url, present)
                total["skipped"] += present
                return
        except RangeNotSupportedError:
            pass
        total["downloaded"] += download_url(url, archive, progress=progress, **net)
    try:
        summary = extract_zip(archive, out, strip, None, progress)
    except StorageError as e:
        if isinstance(e, UnsafeKeyError):
            raise
        archive.unlink()  # damaged in transit or at rest: keeping it would fail every rerun
        raise StorageError(f"{e}; removed {archive}, run again to download it anew") from None
    for key, n in summary.items():
        total[key] += n
    archive.unlink()  # 46 GB for RxRx1's images: do not keep a second copy
    with contextlib.suppress(OSError):
        archive.parent.rmdir()  # only if empty
