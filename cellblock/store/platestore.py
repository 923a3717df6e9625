"""Where a packed plate's files live: a folder, or one zip file (zipped OME-Zarr, RFC-9).

The same OME-Zarr tree (``cellblock.store.omezarr``) in one of two stores::

    images.zarr/HEPG2-01/Plate1/B/02/0/0/c/0/0/0     store "directory": ~4,600 files a
                                                      308-well, 2-site plate
    images.zarr/HEPG2-01/Plate1.ozx                  store "zip": 1 file a plate; inside,
        [B/02/0/0/c/0/0/0 bytes]...[zarr.json]...     the same names, STORED (chunks are
        [central directory: zarr.json entries first]  compressed already), zarr.json at
        [comment: {"ome": {"version": "0.5", ...}}]   the root, ZIP64 when it needs it

HPC file systems pay per file (metadata servers, inode quotas); a zip costs one. zarr-
python (``ZipStore``) and neuroglancer (``URL|zip:B/02/0/|zarr3:``) read it as it is
(tensorstore has a ``zip`` kvstore too). A reader here reads a member with one
``pread`` at an offset found once from the central directory.

Writers make a plate appear whole or not at all: a folder is complete once its plate
``zarr.json`` (written last) says so; a zip is written as ``.Plate1.ozx.partial`` and
renamed into place when finished.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

__all__ = [
    "STORES",
    "DirectoryFiles",
    "PlateFiles",
    "ZipFiles",
    "open_plate",
    "plate_path",
    "plate_writer",
]

STORES = ("directory", "zip")
ZIP_SUFFIX = ".ozx"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same plate, the same bytes
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, 30 bytes
ZIP_COMMENT = {"ome": {"version": "0.5", "zipFile": {"centralDirectory": {"jsonFirst": True}}}}


def plate_path(images: Path, key: str, store: str) -> Path:
    """The plate ``key`` (``"EXP/PlateN"``) of ``images`` (images.zarr) in ``store``."""
    return Path(images) / (key + ZIP_SUFFIX if store == "zip" else key)


class PlateFiles(abc.ABC):
    """Read-only access to the files of one plate, by name relative to the plate root."""

    path: Path

    @abc.abstractmethod
    def read(self, name: str) -> bytes | None:
        """The member's bytes, or None if it does not exist."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Every member name (files only)."""


class DirectoryFiles(PlateFiles):
    """A plate stored as a folder.

    Args:
        path: The plate folder.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self, name: str) -> bytes | None:
        try:
            with open(self.path / name, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def names(self) -> list[str]:
        return sorted(
            p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
        )


class ZipFiles(PlateFiles):
    """A plate stored as one zip file (members STORED, as cellblock writes them).

    The central directory is parsed once; a member's data offset once per member; then
    each read is one ``pread``. The file stays open, and is reopened in a forked child
    (descriptors are per process here).

    Args:
        path: The ``.ozx`` file.

    Raises:
        zipfile.BadZipFile: Not a zip file, or a member is compressed.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        with zipfile.ZipFile(self.path) as zf:
            infos = zf.infolist()
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED:
                raise zipfile.BadZipFile(f"{self.path}: member {info.filename} is compressed")
        self._entries = {i.filename: (i.header_offset, i.compress_size) for i in infos}
        self._offsets: dict[str, int] = {}
        self._fd, self._pid = -1, -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": -1, "_pid": -1}

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0 and self._pid == os.getpid():
            os.close(self._fd)

    def _handle(self) -> int:
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def read(self, name: str) -> bytes | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        header_offset, size = entry
        fd = self._handle()
        offset = self._offsets.get(name)
        if offset is None:
            header = os.pread(fd, _LOCAL_HEADER.size, header_offset)
            fields = _LOCAL_HEADER.unpack(header) if len(header) == _LOCAL_HEADER.size else ()
            if not fields or fields[0] != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"{self.path}: bad local header of member {name}")
            offset = header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
            self._offsets[name] = offset
        return os.pread(fd, size, offset)

    def names(self) -> list[str]:
        return sorted(self._entries)


def open_plate(path: Path) -> PlateFiles:
    """The files of the plate at ``path`` (a folder, or a ``.ozx`` zip)."""
    return ZipFiles(path) if Path(path).suffix == ZIP_SUFFIX else DirectoryFiles(path)


class PlateWriter(abc.ABC):
    """Write one plate's members; ``commit`` makes it visible as complete.

    Args:
        path: The plate (folder or ``.ozx``).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.size = 0  # bytes of the members written: the plate's size, without a walk

    @abc.abstractmethod
    def write(self, name: str, data: bytes) -> None:
        """Add (or replace) the member ``name``."""

    @abc.abstractmethod
    def commit(self, root_json: bytes) -> None:
        """Write the plate's root ``zarr.json`` (its complete flag) last and finish."""

    def abort(self) -> None:  # noqa: B027 (a folder leaves nothing to drop)
        """Drop what a failed write left behind (a zip's partial file)."""


class DirectoryWriter(PlateWriter):
    """Members are files under the plate folder (any earlier partial plate is removed)."""

    def __init__(self, path: Path):
        super().__init__(path)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)

    def write(self, name: str, data: bytes) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        self.size += len(data)

    def commit(self, root_json: bytes) -> None:
        self.write("zarr.json", root_json)


class ZipWriter(PlateWriter):
    """Members go into ``.{name}.partial`` beside the plate; ``commit`` renames it."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._zip = zipfile.ZipFile(self.partial, "w", zipfile.ZIP_STORED, allowZip64=True)

    def write(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, _EPOCH)
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, data)
        self.size += len(data)

    def commit(self, root_json: bytes) -> None:
        self.write("zarr.json", root_json)
        # RFC-9: zarr.json entries first in the central directory, breadth-first
        self._zip.filelist.sort(
            key=lambda i: (not i.filename.endswith("zarr.json"), i.filename.count("/"), i.filename)
        )
        self._zip.comment = json.dumps(ZIP_COMMENT).encode()
        self._zip.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._zip.close()
        self.partial.unlink(missing_ok=True)


def plate_writer(images: Path, key: str, store: str) -> PlateWriter:
    """A writer for plate ``key`` of ``images`` in ``store`` (``"directory"``/``"zip"``)."""
    path = plate_path(images, key, store)
    return ZipWriter(path) if store == "zip" else DirectoryWriter(path)
