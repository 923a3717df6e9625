"""A static HTTP server for a dataset folder, as web viewers need it: CORS and Range.

``view_data.py --serve`` puts the dataset folder on ``http://127.0.0.1:PORT/`` so that a
browser-side viewer (neuroglancer's ``zarr3://`` source, vizarr, ...) reads the
OME-Zarr plates itself::

    GET /images.zarr/HEPG2-01/Plate1/B/02/0/zarr.json          a field's metadata
    GET /images.zarr/HEPG2-01/Plate1/B/02/0/0/c/0/0/0          a chunk
    GET /images.zarr/HEPG2-01/Plate1.ozx   Range: bytes=-65536  a zipped plate, piecewise
    GET /cellblock/state.json                                   the viewer state (extras)

Every reply carries ``Access-Control-Allow-Origin: *`` (the viewer page comes from
another port), ``Accept-Ranges: bytes``; ``Range: bytes=a-b``, ``a-`` and ``-n``
answer 206 with ``Content-Range``; ``OPTIONS`` answers the CORS preflight. Only files
under the folder are served (no listings, no ``..``); a path no file can have (a NUL
byte, ``%00``, or a name too long) is a 400. Loopback unless the user binds
elsewhere (anyone who can reach the port reads the data).
"""

from __future__ import annotations

import errno
import logging
import mimetypes
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["DataServer"]

log = logging.getLogger(__name__)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, Content-Type",
    "Access-Control-Expose-Headers": "Content-Range, Content-Length, Accept-Ranges, ETag",
}


class _Handler(BaseHTTPRequestHandler):
    server: DataServer

    def log_message(self, fmt: str, *args) -> None:  # to logging, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def _headers(self, status: int, length: int, extra: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {
            **_CORS,
            "Accept-Ranges": "bytes",
            "Content-Length": str(length),
            **(extra or {}),
        }.items():
            self.send_header(key, value)
        self.end_headers()

    def do_OPTIONS(self) -> None:
        self._headers(HTTPStatus.NO_CONTENT, 0, {"Access-Control-Max-Age": "86400"})

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        extra = self.server.extras.get(path)
        if extra is not None:
            data, kind = extra
            self._reply(data, kind, body)
            return
        try:
            target = self.server.resolve(path)
        except ValueError as e:  # a client's bad request: answered, not a traceback
            log.debug("%s: %r: %s", self.address_string(), self.path, e)
            self._headers(HTTPStatus.BAD_REQUEST, 0)
            return
        if target is None:
            self._headers(HTTPStatus.NOT_FOUND, 0)
            return
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        size = target.stat().st_size
        span = self._range(size)
        if span is None:
            self._headers(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, 0, {"Content-Range": f"bytes */{size}"}
            )
            return
        start, end = span
        status = HTTPStatus.OK if (start, end) == (0, size) else HTTPStatus.PARTIAL_CONTENT
        headers = {"Content-Type": kind}
        if status == HTTPStatus.PARTIAL_CONTENT:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self._headers(status, end - start, headers)
        if body and end > start:
            with open(target, "rb") as f:
                f.seek(start)
                while start < end:  # in pieces: a whole zipped plate is hundreds of MB
                    piece = f.read(min(1 << 20, end - start))
                    if not piece:
                        break
                    self.wfile.write(piece)
                    start += len(piece)

    def _reply(self, data: bytes, kind: str, body: bool) -> None:
        self._headers(HTTPStatus.OK, len(data), {"Content-Type": kind})
        if body:
            self.wfile.write(data)

    def _range(self, size: int) -> tuple[int, int] | None:
        """``(start, end)`` to send: the whole file, or the one requested range."""
        header = self.headers.get("Range")
        m = _RANGE.match(header.strip()) if header else None
        if m is None:
            return 0, size
        first, last = m.groups()
        if not first:  # the last n bytes
            start, end = max(0, size - int(last or 0)), size
        else:
            start, end = int(first), min(size, int(last) + 1) if last else size
        return (start, end) if start < end or size == 0 else None


class DataServer(ThreadingHTTPServer):
    """Serve ``root``'s files (and ``extras``) over HTTP in a background thread.

    Args:
        root: The folder to serve.
        bind: Address to listen on.
        port: TCP port (0: a free one).
    """

    daemon_threads = True

    def __init__(self, root: Path, bind: str = "127.0.0.1", port: int = 0):
        super().__init__((bind, port), _Handler)
        self.root = Path(root).resolve()
        self.extras: dict[str, tuple[bytes, str]] = {}
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """``http://host:port`` of the server."""
        host, port = self.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def add(self, path: str, data: bytes, kind: str = "application/json") -> str:
        """Serve ``data`` at ``path`` (e.g. ``/cellblock/state.json``); return its URL."""
        self.extras[path] = (data, kind)
        return self.url + path

    def resolve(self, path: str) -> Path | None:
        """The file under ``root`` that ``path`` names, or None (missing, a folder, outside).

        Raises:
            ValueError: ``path`` is no file name at all (a NUL byte, a name too long).
        """
        if "\0" in path:
            raise ValueError("a NUL byte in the path")
        try:
            target = (self.root / path.lstrip("/")).resolve()
            if not target.is_relative_to(self.root) or not target.is_file():
                return None
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                raise ValueError("a file name too long") from None
            return None  # unreadable (permissions, a loop): not served
        return target

    def start(self) -> DataServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
