"""A fast reader for single chunks of the sharded zarr v3 arrays that ``pack`` writes.

Why this exists: reading one 1.5 MB site through zarr-python 3.1 costs ~2.5 ms of
Python overhead on top of a ~2.4 ms decode, and tensorstore still adds ~0.7 ms
(scripts/bench/io.py). A site read is the hot path of training, so this module reads
a chunk the way the zarr v3 sharding spec lays it out, and nothing more::

    shard file  c/{row}/0/0/0/0/0  =  [chunk 0 bytes][chunk 1 bytes]...[index][crc32c]
    index       n_chunks x (offset: uint64 LE, nbytes: uint64 LE); all-ones = empty chunk

It reads the index once per shard (pread of the tail, crc32c checked), then one
pread and one numcodecs Blosc decode per chunk. It accepts exactly the codec chain
cellblock writes (``sharding_indexed`` -> ``bytes`` + ``blosc``, index ``bytes`` +
``crc32c`` at the end); ``ShardReader.open`` returns None for anything else, and the
caller falls back to zarr-python. Tests compare it with zarr-python chunk by chunk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np

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
        blosc = shard["codecs"][1]["configuration"]
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[blosc["shuffle"]]
        self.codec = numcodecs.Blosc(blosc["cname"], blosc["clevel"], shuffle, blosc["blocksize"])
        self.fill_value = meta["fill_value"]
        self.separator = meta["chunk_key_encoding"]["configuration"].get("separator", "/")
        self._index: dict[tuple[int, ...], np.ndarray | None] = {}

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
                and [c["name"] for c in shard["codecs"]] == ["bytes", "blosc"]
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
            tail = os.pread(fd, size, os.fstat(fd).st_size - size)
            if google_crc32c.value(tail[:-4]) != int.from_bytes(tail[-4:], "little"):
                raise OSError(f"{self._shard_file(shard)}: shard index checksum mismatch")
            self._index[shard] = np.frombuffer(tail[:-4], dtype="<u8").reshape(-1, 2)
        return self._index[shard]

    def read_chunk(self, coords: tuple[int, ...]) -> np.ndarray:
        """The chunk at chunk-grid ``coords``, shaped ``chunk_shape``."""
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
        self.codec.decode(data, out=out)
        return out
