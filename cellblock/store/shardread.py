"""A fast reader of single chunks of the previous layout's sharded plate arrays.

The previous layout (format 1, before OME-Zarr) held each plate as one 6-D array
``(row, col, site, channel, y, x)``, chunk = one site, shard = one plate row.
``01_data/pack_zarr.py --upgrade`` reads such datasets through this module (and
``cellblock.store.chunkwrite`` uses ``chunk_file``); the current layout is read by
``cellblock.store.fieldread``. The chunk is read the way the zarr v3 sharding spec lays it
out, and nothing more::

    shard file  c/{row}/0/0/0/0/0  =  [chunk 0 bytes][chunk 1 bytes]...[index][crc32c]
    index       n_chunks x (offset: uint64 LE, nbytes: uint64 LE); all-ones = empty chunk

    chunk       blosc(bytes) + crc32c(blosc bytes), 4 bytes little endian (zarr v3 crc32c codec)

It reads the index once per shard (pread of the tail, crc32c checked), then per chunk
one pread, one crc32c check (hardware CRC: ~0.1 ms for a 0.75 MB chunk) and one
numcodecs Blosc decode. A chunk or index that fails its checksum, or does not decode,
raises ``CorruptDataError``: silently training on a flipped bit is worse than stopping.

It accepts exactly the codec chains cellblock writes (``sharding_indexed`` -> ``bytes``
+ ``blosc`` + ``crc32c``, index ``bytes`` + ``crc32c`` at the end), and the chain of
datasets packed before chunk checksums (no ``crc32c`` after ``blosc``:
``checksummed`` is False); ``ShardReader.open`` returns None for anything else, and
the caller falls back to zarr-python (which verifies the crc32c codec too). Tests
compare it with zarr-python chunk by chunk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import google_crc32c
import numpy as np

from cellblock.errors import CorruptDataError
from cellblock.store.chunkcodec import decode_chunk, numcodec

__all__ = ["ShardReader", "chunk_file"]

_EMPTY = np.uint64(2**64 - 1)


def chunk_file(array: Path, coords: tuple[int, ...], separator: str = "/") -> Path:
    """The file of the chunk (or shard) at grid ``coords`` of a zarr v3 array with the
    ``default`` chunk key encoding: ``c/1/0/2`` (separator ``/``) or ``c.1.0.2``.

    Args:
        array: The array folder.
        coords: Chunk-grid coordinates.
        separator: The encoding's separator.
    """
    if separator == "/":
        return Path(array).joinpath("c", *map(str, coords))
    return Path(array) / ("c" + separator + separator.join(map(str, coords)))


class ShardReader:
    """Read single chunks of one sharded, Blosc-compressed zarr v3 array.

    Args:
        path: The array folder (holding ``zarr.json``).
        meta: The parsed ``zarr.json`` of that array.
    """

    def __init__(self, path: Path, meta: dict):
        self.path = Path(path)
        shard = meta["codecs"][0]["configuration"]
        self.dtype = np.dtype(meta["data_type"])
        self.shape = tuple(meta["shape"])
        self.shard_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.chunk_shape = tuple(shard["chunk_shape"])
        self.chunks_per_shard = tuple(
            s // c for s, c in zip(self.shard_shape, self.chunk_shape, strict=True)
        )
        self.n_chunks = int(np.prod(self.chunks_per_shard))
        self.checksummed = len(shard["codecs"]) == 3  # [bytes, blosc, crc32c]
        self.codec = numcodec(shard["codecs"][1])
        self.fill_value = meta["fill_value"]
        self.separator = meta["chunk_key_encoding"]["configuration"].get("separator", "/")
        self._index: dict[tuple[int, ...], np.ndarray] = {}

    @classmethod
    def open(cls, path: Path) -> ShardReader | None:
        """A reader for the array at ``path``, or None if its layout is not the one we write."""
        try:
            meta = json.loads((Path(path) / "zarr.json").read_text())
            codecs = meta["codecs"]
            shard = codecs[0]["configuration"]
            ok = (
                meta.get("zarr_format") == 3
                and meta["chunk_grid"]["name"] == "regular"
                and meta["chunk_key_encoding"]["name"] == "default"
                and len(codecs) == 1
                and codecs[0]["name"] == "sharding_indexed"
                and [c["name"] for c in shard["codecs"]]
                in (["bytes", "blosc", "crc32c"], ["bytes", "blosc"])
                and [c["name"] for c in shard["index_codecs"]] == ["bytes", "crc32c"]
                and shard["index_codecs"][0].get("configuration", {}).get("endian", "little")
                == "little"
                and shard.get("index_location", "end") == "end"
                and np.dtype(meta["data_type"]).itemsize == 1  # no byte order to handle
            )
        except (OSError, KeyError, IndexError, TypeError, ValueError):
            return None
        return cls(path, meta) if ok else None

    def _shard_file(self, shard: tuple[int, ...]) -> Path:
        return chunk_file(self.path, shard, self.separator)

    def _shard_index(self, fd: int, shard: tuple[int, ...]) -> np.ndarray:
        if shard not in self._index:
            size = 16 * self.n_chunks + 4
            file_size = os.fstat(fd).st_size
            if file_size < size:
                raise CorruptDataError(
                    f"{self._shard_file(shard)}: truncated shard ({file_size} bytes)"
                )
            tail = os.pread(fd, size, file_size - size)
            if google_crc32c.value(tail[:-4]) != int.from_bytes(tail[-4:], "little"):
                raise CorruptDataError(
                    f"{self._shard_file(shard)}: shard index fails its crc32c checksum"
                )
            self._index[shard] = np.frombuffer(tail[:-4], dtype="<u8").reshape(-1, 2)
        return self._index[shard]

    def read_chunk(self, coords: tuple[int, ...]) -> np.ndarray:
        """The chunk at chunk-grid ``coords``, shaped ``chunk_shape``.

        Raises:
            CorruptDataError: The chunk (or its shard's index) fails its checksum or does not
                decode; the message names the shard file and the chunk.
        """
        shard = tuple(c // n for c, n in zip(coords, self.chunks_per_shard, strict=True))
        inner = tuple(c % n for c, n in zip(coords, self.chunks_per_shard, strict=True))
        out = np.empty(self.chunk_shape, self.dtype)
        try:
            fd = os.open(self._shard_file(shard), os.O_RDONLY)
        except FileNotFoundError:  # shard never written: every chunk is fill value
            out.fill(self.fill_value)
            return out
        try:
            offset, nbytes = self._shard_index(fd, shard)[
                np.ravel_multi_index(inner, self.chunks_per_shard)
            ]
            if offset == _EMPTY:
                out.fill(self.fill_value)
                return out
            data = os.pread(fd, int(nbytes), int(offset))
        finally:
            os.close(fd)
        where = f"{self._shard_file(shard)}: chunk {inner}"
        return decode_chunk(data, self.codec, out, self.checksummed, where)
