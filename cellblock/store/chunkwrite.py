"""A fast writer of whole chunks of the unsharded zarr v3 arrays of a predictions store.

Why this exists: writing one well (a logits and an embeddings chunk) through
zarr-python 3.1 costs ~4-9 ms on the 2-core CI machine, almost all of it per-call
overhead, while a GPU worker predicting an H100's ~1,500 sites/s needs a well written in
well under 1.3 ms. The store's arrays have one chunk per well, so a block's wells are
whole chunks and each can be written as the zarr v3 spec lays it out::

    array folder   {plate}/logits/zarr.json
    chunk file     {plate}/logits/c/{row}/{col}/0/0   = zstd(little-endian bytes) + crc32c

Each chunk file is written to a temporary name (unique to the process and thread) and
renamed (a killed worker leaves no half chunk, at most a ``.tmp`` file); a chunk equal
to the fill value is not stored, as zarr-python does.
``ChunkWriter.open`` accepts exactly the codec chains ``create_store`` makes (``bytes``
little-endian, then ``zstd`` or nothing, then the zarr v3 ``crc32c`` checksum: 4 bytes,
little endian, of the bytes before it; stores made before checksums have none) and
returns None for anything else; the caller
falls back to zarr-python (also for another chunk shape). Tests compare the files with
zarr-python's.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np

from cellblock.store.shardread import chunk_file

__all__ = ["ChunkWriter"]


class ChunkWriter:
    """Write whole chunks of one unsharded zarr v3 array on a local disk.

    Args:
        path: The array folder (holding ``zarr.json``).
        meta: The parsed ``zarr.json`` of that array.
    """

    def __init__(self, path: Path, meta: dict):
        self.path = Path(path)
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        self.chunk_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.grid = tuple(-(-s // c) for s, c in zip(meta["shape"], self.chunk_shape, strict=True))
        zstd = [c for c in meta["codecs"] if c["name"] == "zstd"]
        self.checksummed = meta["codecs"][-1]["name"] == "crc32c"
        self.codec = numcodecs.Zstd(zstd[0]["configuration"]["level"]) if zstd else None
        self.separator = meta["chunk_key_encoding"]["configuration"].get("separator", "/")
        self.fill_value = float(meta["fill_value"])  # JSON: a number, "NaN" or "[-]Infinity"

    @classmethod
    def open(cls, path: Path | str) -> ChunkWriter | None:
        """A writer for the array at ``path``, or None if its layout is not one we write."""
        try:
            meta = json.loads((Path(path) / "zarr.json").read_text())
            codecs = meta["codecs"]
            names = [c["name"] for c in codecs]
            names = names[:-1] if names[-1:] == ["crc32c"] else names
            zstd = codecs[1].get("configuration", {}) if names == ["bytes", "zstd"] else {}
            ok = (
                meta.get("zarr_format") == 3
                and meta.get("node_type") == "array"
                and meta["chunk_grid"]["name"] == "regular"
                and meta["chunk_key_encoding"]["name"] == "default"
                and names in (["bytes"], ["bytes", "zstd"])
                and codecs[0].get("configuration", {}).get("endian", "little") == "little"
                and not zstd.get("checksum", False)
                and np.dtype(meta["data_type"]).kind == "f"
                and not meta.get("storage_transformers")
                and (
                    isinstance(meta["fill_value"], int | float)
                    or meta["fill_value"] in ("NaN", "Infinity", "-Infinity")
                )
            )
        except (OSError, KeyError, IndexError, TypeError, ValueError):
            return None
        return cls(Path(path), meta) if ok else None

    def chunk_file(self, coords: tuple[int, ...]) -> Path:
        """The file of the chunk at chunk-grid ``coords`` (``c/r/c/...`` by default)."""
        return chunk_file(self.path, coords, self.separator)

    def intact(self, coords: tuple[int, ...]) -> bool:
        """The chunk at ``coords`` is stored and, if checksummed, its crc32c matches."""
        try:
            data = self.chunk_file(coords).read_bytes()
        except OSError:
            return False
        if not self.checksummed:
            return len(data) > 0
        body, stored = data[:-4], data[-4:]
        return len(data) > 4 and google_crc32c.value(body).to_bytes(4, "little") == stored

    def write_chunk(self, coords: tuple[int, ...], data: np.ndarray) -> None:
        """Write (replace) the chunk at chunk-grid ``coords``.

        Args:
            coords: Chunk-grid coordinates, one per dimension.
            data: The whole chunk, ``chunk_shape``; cast to the array's dtype.

        Raises:
            ValueError: ``coords`` outside the grid, or ``data`` not chunk-shaped.
        """
        if len(coords) != len(self.grid) or not all(
            0 <= c < n for c, n in zip(coords, self.grid, strict=True)
        ):
            raise ValueError(f"{self.path}: chunk {coords} outside the chunk grid {self.grid}")
        if tuple(data.shape) != self.chunk_shape:
            raise ValueError(f"{self.path}: chunk of shape {data.shape}, not {self.chunk_shape}")
        values = np.ascontiguousarray(data, dtype=self.dtype)
        if np.array_equal(values, np.full_like(values, self.fill_value), equal_nan=True):
            # zarr-python stores no chunk that equals the fill value (and deletes one)
            self.chunk_file(coords).unlink(missing_ok=True)
            return
        raw = values.tobytes()
        encoded = self.codec.encode(raw) if self.codec else raw
        if self.checksummed:
            encoded = bytes(encoded) + google_crc32c.value(encoded).to_bytes(4, "little")
        self._write_atomically(self.chunk_file(coords), bytes(encoded))

    def _write_atomically(self, target: Path, data: bytes) -> None:
        """``data`` to a temporary name beside ``target``, then renamed over it.

        Cheaper than ``atomic_path`` per chunk (~2.4 ms there, mostly file-system calls):
        the folder is made only when it is missing (the first write of a well), and the
        temporary file is created with the mode ``open`` gives (the umask applies; no
        chmod, no ``mkstemp`` retries).
        """
        tmp = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
