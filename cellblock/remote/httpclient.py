"""Bytes over plain HTTP(S) with the standard library: resumable downloads, ranged files.

    download_url:  GET into ``.<name>.part`` beside the target; a rerun or retry sends
                   ``Range: bytes=<have>-`` (206 appends, 200 restarts, 416 ends a part
                   that is already complete); size checked, then renamed
    HttpRangeFile: a seekable read-only file, one Range request per read (or per
                   announced span), for ``zipfile`` over a remote zip

Connection errors, timeouts, 5xx and short bodies are retried with exponential backoff;
other answers (404, 403) fail at once. Every failure is a one-line ``StorageError``
naming the URL; no credentials are sent anywhere.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cellblock.progress import ProgressBar, progress_bar
from cellblock.remote.storage import StorageError

__all__ = ["HttpRangeFile", "RangeNotSupportedError", "download_url", "open_url"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_BLOCK = 1 << 20
_BUFFER = 64 << 10  # BufferedReader size: small reads (zip headers) cost one small request
_SPAN = 16 << 20  # the most one read-ahead request fetches: few requests, bounded memory
_RETRY = {408, 425, 429, 500, 502, 503, 504}
_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


class RangeNotSupportedError(StorageError):
    """The server answers a Range request with the whole file."""


class _TransientError(Exception):
    """A transient failure (5xx, short body): worth another attempt after a pause."""


def _get(url: str, first: int | None = None, last: int | None = None, timeout: float = 30.0):
    """GET ``url``, bytes ``first``-``last`` if given; the response (4xx ones too, unraised)."""
    headers = {"User-Agent": "cellblock"}
    if first is not None:
        headers["Range"] = f"bytes={first}-{'' if last is None else last}"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code in _RETRY:
            e.close()
            raise _TransientError(f"HTTP {e.code} {e.reason}") from None
        return e  # 416, 404, ...: an answer the caller interprets


def _content_range(headers) -> tuple[int | None, int | None]:
    """(first byte, total size) of a ``Content-Range`` header; None where absent or ``*``."""
    m = _RANGE.match(headers.get("Content-Range") or "")
    if not m:
        return None, None
    return (int(m[1]) if m[1] else None), (int(m[2]) if m[2] != "*" else None)


def _retrying(url: str, attempts: int, backoff: float, fn: Callable[[], T]) -> T:
    """``fn()``, retried with exponential backoff on connection errors, timeouts and 5xx."""
    for attempt in range(attempts):
        try:
            return fn()
        except (_TransientError, OSError, http.client.HTTPException) as e:  # URLError is an OSError
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            if attempt == attempts - 1:
                raise StorageError(f"{url}: {reason} (after {attempts} attempt(s))") from None
            delay = min(backoff * 2**attempt, 30.0)
            log.warning("%s: %s; retrying in %.1f s", url, reason, delay)
            time.sleep(delay)
    raise StorageError(f"{url}: no attempts made (attempts={attempts})")


def _fatal(url: str, resp) -> StorageError:
    return StorageError(f"{url}: HTTP {resp.status} {resp.reason}")


def _attempt(url: str, part: Path, timeout: float, bar: ProgressBar, got: list[int]) -> None:
    """One try at completing ``part``; what arrives is kept, so the next try resumes."""
    have = part.stat().st_size if part.exists() else 0
    with _get(url, have or None, timeout=timeout) as resp:
        if resp.status == 416 and have:
            total = _content_range(resp.headers)[1]
            if total == have:
                return  # the part is already complete (a crash just before the rename)
            log.info("%s: %d-byte partial file does not fit; starting over", url, have)
            part.unlink()  # garbage past the end, or an unknown size: trust none of it
            return _attempt(url, part, timeout, bar, got)
        if resp.status == 206:
            first, total = _content_range(resp.headers)
            if first is None or first > have:
                raise _fatal(url, resp)
        elif resp.status == 200:  # no Range sent, or a server that ignores it
            first, length = 0, resp.headers.get("Content-Length")
            total = int(length) if length else None
            if have:
                log.info("%s: the server ignored the Range request; restarting", url)
        else:
            raise _fatal(url, resp)
        bar.reset(total)
        bar.update(first)
        with open(part, "r+b" if first else "wb") as f:
            f.seek(first)
            f.truncate()
            while block := resp.read(_BLOCK):
                f.write(block)
                got[0] += len(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _TransientError(f"received {size} of {total} bytes")


def download_url(
    url: str,
    dest: Path,
    attempts: int = 5,
    progress: bool = True,
    backoff: float = 0.5,
    timeout: float = 30.0,
) -> int:
    """Download ``url`` to ``dest``, resuming a partial download left by an earlier run.

    Bytes go to ``.<name>.part`` beside ``dest`` and are renamed onto it only once the
    size matches the server's (Content-Length or the Content-Range total), so ``dest``
    never holds a partial file.

    Args:
        url: An ``http://`` or ``https://`` URL.
        dest: The file to create (its folder is created).
        attempts: Tries before giving up (connection errors, timeouts, 5xx, short bodies).
        progress: Show a progress bar of bytes.
        backoff: Seconds before the second try; doubled after each failure (at most 30).
        timeout: Seconds a connect or a read may stall.

    Returns:
        The bytes received over the network by this call (a resumed download counts
        only the rest).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    got = [0]
    with progress_bar(unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
        _retrying(url, attempts, backoff, lambda: _attempt(url, part, timeout, bar, got))
    os.replace(part, dest)
    return got[0]


class HttpRangeFile(io.RawIOBase):
    """A read-only, seekable file over a URL; every read is one Range request.

    Wrap it in ``io.BufferedReader`` (:func:`open_url`) for ``zipfile.ZipFile``, which
    then reads the central directory and single members, not the whole archive
    (:func:`cellblock.remote.unzip.extract_zip` accepts it as it is).

    Args:
        url: An ``http://`` or ``https://`` URL whose server honours Range requests.
        attempts: Tries per request (connection errors, timeouts, 5xx, short bodies).
        backoff: Seconds before the second try; doubled after each failure.
        timeout: Seconds a connect or a read may stall.

    Attributes:
        size: The file's size in bytes.
        bytes_read: Bytes received so far (what the network carried).
        requests: Range requests made so far.
    """

    def __init__(self, url: str, attempts: int = 5, backoff: float = 0.5, timeout: float = 30.0):
        super().__init__()
        self.url, self.attempts, self.backoff, self.timeout = url, attempts, backoff, timeout
        self.bytes_read = self.requests = self._pos = self._ahead = self._cache_at = 0
        self._cache = b""
        self.size = _retrying(url, attempts, backoff, self._probe)

    def _probe(self) -> int:
        # A one-byte GET, not HEAD: some hosts answer HEAD differently, or not at all.
        with _get(self.url, 0, 0, self.timeout) as resp:
            total = _content_range(resp.headers)[1]
            if resp.status in (206, 416) and total is not None:  # 416: an empty file
                return total
            if resp.status == 200:
                raise RangeNotSupportedError(f"{self.url}: the server ignores Range requests")
            raise _fatal(self.url, resp)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"{self.url}: seek to a negative position")
        self._pos = base + offset
        return self._pos

    def read_ahead(self, end: int) -> None:
        """Announce that bytes from the current position up to ``end`` will be read next.

        Reads inside the span then fetch up to its end (at most 16 MiB a request), not
        one buffer's worth: a run of wanted zip members costs one request, and nothing
        past it.

        Args:
            end: One past the last byte that will be wanted.
        """
        self._ahead = end

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        if self._pos >= self.size or not len(view):
            return 0
        offset = self._pos - self._cache_at
        if not 0 <= offset < len(self._cache):
            # Inside an announced span, fetch up to its end and no further (a short read is
            # fine for BufferedReader); elsewhere, what was asked for.
            want = min(self._ahead - self._pos, _SPAN) if self._pos < self._ahead else len(view)
            end = min(self._pos + want, self.size)
            self._cache_at, self._cache, offset = self._pos, self._fetch(self._pos, end), 0
        n = min(len(view), len(self._cache) - offset)
        view[:n] = memoryview(self._cache)[offset : offset + n]  # no copy of the slice
        self._pos += n
        return n

    def _fetch(self, first: int, end: int) -> bytes:
        def once() -> bytes:
            with _get(self.url, first, end - 1, self.timeout) as resp:
                self.requests += 1
                if resp.status != 206 or _content_range(resp.headers)[0] != first:
                    raise _fatal(self.url, resp)
                data = resp.read()
            self.bytes_read += len(data)
            if len(data) != end - first:
                raise _TransientError(f"received {len(data)} of {end - first} bytes")
            return data

        return _retrying(self.url, self.attempts, self.backoff, once)


def open_url(url: str, buffer_size: int = _BUFFER, **kwargs) -> io.BufferedReader:
    """A buffered :class:`HttpRangeFile` over ``url`` (``kwargs`` go to it)."""
    return io.BufferedReader(HttpRangeFile(url, **kwargs), buffer_size)
