"""Datasets in the previous layout (format 1), for the upgrade and ShardReader tests.

The previous layout, as cellblock up to the OME-Zarr issue wrote it::

    images.zarr/                 attrs cellblock = DatasetInfo (format_version 1)
      {EXP}/Plate{p}             uint8 (row, col, site, channel, y, x); chunk = one site,
                                 shard = one plate row; blosc(zstd 3, bitshuffle) [+ crc32c];
                                 attrs cellblock = PlateInfo
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from cellblock.screen.plates import plate_key
from cellblock.store.packed import PackedDataset

V1_CODEC = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def write_v1(packed: Path, out: Path, checksum: bool = True) -> Path:
    """Rewrite the packed dataset ``packed`` into ``out`` in the previous layout.

    Args:
        packed: A dataset of the current layout (the pixels and tables to copy).
        out: The new dataset folder.
        checksum: End the chunks' codec chain with crc32c (False: as before checksums).
    """
    ds = PackedDataset(packed)
    info = ds.info
    out.mkdir(parents=True)
    shutil.copy(packed / "metadata.parquet", out / "metadata.parquet")
    root = zarr.open_group(out / "images.zarr", mode="w", zarr_format=3)
    root.attrs["cellblock"] = {
        "plate_wells": info.plate_wells,
        "n_sites": info.n_sites,
        "channels": list(info.channels),
        "colors": list(info.colors),
        "image_size": list(info.image_size),
        "format_version": 1,
        "dimension_names": ["row", "col", "site", "channel", "y", "x"],
    }
    shape = info.plate_shape
    for (exp, plate), sub in ds.metadata.groupby(["experiment", "plate"]):
        array = root.create_array(
            plate_key(exp, int(plate)),
            shape=shape,
            dtype="uint8",
            fill_value=0,
            chunks=(1, 1, 1, *shape[3:]),
            shards=(1, *shape[1:]),
            compressors=(V1_CODEC, Crc32cCodec()) if checksum else V1_CODEC,
            dimension_names=("row", "col", "site", "channel", "y", "x"),
        )
        for r, c, s in sub[["row", "col", "site"]].itertuples(index=False):
            array[r, c, s - 1] = ds.read_site(exp, int(plate), int(r), int(c), int(s))
        array.attrs["cellblock"] = ds.plate_info(exp, int(plate)).to_json()
    return out


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def root_format(dataset: Path) -> int:
    """The ``format_version`` of a dataset's images.zarr."""
    meta = json.loads((dataset / "images.zarr" / "zarr.json").read_text())
    return meta["attributes"]["cellblock"]["format_version"]


def v1_pixels(dataset: Path, key: str) -> np.ndarray:
    """A previous-layout plate's whole array, read by zarr-python."""
    return zarr.open_array(dataset / "images.zarr" / key, mode="r")[:]
