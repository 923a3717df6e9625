"""A fast reader of one site: the single chunk of a field's full-resolution array.

Why this exists: zarr-python 3.1 spends ~2.5 ms of per-call overhead opening and
reading one 1.5 MB site, as much as its decode, and tensorstore ~0.7 ms
(scripts/bench/io.py). A site read is the hot path of training and prediction, so this
reads the chunk the way the zarr v3 spec lays it out, and nothing more::

    {row}/{col}/{field}/0/c/0/0/0  =  zstd frame (or blosc) + crc32c of it, 4 bytes LE

one read of the member (a file, or one ``pread`` in a zipped plate: cellblock.
platestore), one crc32c check (hardware CRC, ~0.1 ms, over the stored bytes as they are:
the crc32c of data followed by its own crc32c is a constant), one numcodecs decode into
the output array. A chunk that fails its checksum or does not decode raises
``CorruptDataError``: silently training on a flipped bit is worse than stopping.

A plate's fields share one array layout (the packer writes them from one template);
the reader takes it from the first field's ``zarr.json`` and accepts exactly the chains
cellblock writes: ``bytes`` -> ``zstd`` or ``blosc`` -> ``crc32c``, and the same
without ``crc32c`` (``checksummed`` False: read, with a warning from the caller).
``FieldReader.open`` returns None for anything else, and the caller falls back to
zarr-python. Tests compare the two field by field.
"""

from __future__ import annotations

import json

import numpy as np

from cellblock.store.chunkcodec import decode_chunk, numcodec
from cellblock.store.omezarr import chunk_name
from cellblock.store.platestore import PlateFiles

__all__ = ["FieldReader"]


class FieldReader:
    """Read the full-resolution chunk of any field of one plate.

    Args:
        files: The plate's files.
        meta: The parsed ``zarr.json`` of a field's level ``0`` array.
    """

    def __init__(self, files: PlateFiles, meta: dict):
        self.files = files
        self.shape = tuple(meta["shape"])
        self.fill_value = int(meta["fill_value"])
        codecs = meta["codecs"]
        self.checksummed = codecs[-1]["name"] == "crc32c"
        self.codec = numcodec(codecs[1])

    @classmethod
    def open(cls, files: PlateFiles, template: str) -> FieldReader | None:
        """A reader of ``files``' fields, or None if their layout is not one we read.

        Args:
            files: The plate's files.
            template: A field's level-0 array, e.g. ``"B/02/0/0"``.
        """
        try:
            meta = json.loads(files.read(f"{template}/zarr.json") or b"null")
            codecs = meta["codecs"]
            names = [c["name"] for c in codecs]
            names = names[:-1] if names[-1:] == ["crc32c"] else names
            ok = (
                meta.get("zarr_format") == 3
                and meta.get("node_type") == "array"
                and meta["data_type"] == "uint8"  # one byte: no byte order to handle
                and meta["chunk_grid"]["name"] == "regular"
                and meta["chunk_grid"]["configuration"]["chunk_shape"] == meta["shape"]
                and meta["chunk_key_encoding"]["name"] == "default"
                and meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/") == "/"
                and len(meta["shape"]) == 3
                and names in (["bytes", "zstd"], ["bytes", "blosc"])
                and not codecs[1].get("configuration", {}).get("checksum", False)
                and not meta.get("storage_transformers")
                and isinstance(meta["fill_value"], int)
            )
        except (OSError, KeyError, IndexError, TypeError, ValueError):
            return None
        return cls(files, meta) if ok else None

    def read(self, field: str) -> np.ndarray:
        """The field's ``(c, y, x)`` pixels; fill value where it was never written.

        Args:
            field: The field's path in the plate, e.g. ``"B/02/0"``.

        Raises:
            CorruptDataError: The chunk fails its checksum or does not decode; the
                message names the plate and the chunk.
        """
        out = np.empty(self.shape, np.uint8)
        name = chunk_name(field)
        data = self.files.read(name)
        if data is None:
            out.fill(self.fill_value)
            return out
        where = f"{self.files.path}: chunk {name}"
        return decode_chunk(data, self.codec, out, self.checksummed, where)
