"""One stored zarr v3 chunk -> its pixels, as cellblock's fast readers decode it.

Both fast readers (``cellblock.store.fieldread`` for OME-Zarr fields, ``cellblock.store.shardread``
for the previous layout's shards) store a chunk as::

    [zstd frame or blosc block][crc32c of it, 4 bytes little endian]   (zarr v3 crc32c codec)

The check needs no copy of the bytes without their last 4: the CRC-32C of any bytes
followed by their own CRC-32C (little endian) is a constant (0.03 ms instead of 0.1 ms
for a 0.75 MB chunk). A chunk that fails it, or does not decode, raises
``CorruptDataError``: silently training on a flipped bit is worse than stopping.
"""

from __future__ import annotations

import google_crc32c
import numcodecs
import numpy as np

from cellblock.errors import CorruptDataError

__all__ = ["CRC32C_RESIDUE", "decode_chunk", "numcodec"]

CRC32C_RESIDUE = 0x48674BC7  # crc32c(data + crc32c(data) as 4 bytes LE), for any data
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def numcodec(codec: dict) -> numcodecs.abc.Codec:
    """The numcodecs codec of a zarr v3 ``zstd`` or ``blosc`` codec entry.

    Args:
        codec: One entry of a ``zarr.json``'s ``codecs``, e.g.
            ``{"name": "zstd", "configuration": {"level": 16, "checksum": false}}``.

    Raises:
        KeyError: Neither zstd nor blosc, or a blosc entry without its configuration.
    """
    config = codec.get("configuration", {})
    if codec["name"] == "zstd":
        return numcodecs.Zstd(config.get("level", 0))
    if codec["name"] == "blosc":
        return numcodecs.Blosc(
            config["cname"], config["clevel"], _SHUFFLE[config["shuffle"]],
            config.get("blocksize", 0),
        )  # fmt: skip
    raise KeyError(codec["name"])


def decode_chunk(
    data: bytes | memoryview,
    codec: numcodecs.abc.Codec,
    out: np.ndarray,
    checksummed: bool,
    where: str,
) -> np.ndarray:
    """Check and decode one stored chunk into ``out``.

    Args:
        data: The chunk's stored bytes.
        codec: Its compressor (:func:`numcodec`).
        out: The array to decode into (the chunk's shape and dtype).
        checksummed: The bytes end in their crc32c (False: datasets from before checksums).
        where: Names the chunk in errors, e.g. ``"images.zarr/EXP/Plate1: chunk B/02/0/0/c/0/0/0"``.

    Raises:
        CorruptDataError: The chunk fails its checksum or does not decode.
    """
    if checksummed:
        if len(data) < 4 or google_crc32c.value(data) != CRC32C_RESIDUE:
            raise CorruptDataError(f"{where} fails its crc32c checksum")
        data = memoryview(data)[:-4]
    try:
        codec.decode(data, out=out)
    except (RuntimeError, ValueError) as err:  # zstd/blosc: a damaged frame
        raise CorruptDataError(f"{where} does not decode ({err})") from None
    return out
