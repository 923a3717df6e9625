"""OME-Zarr 0.5 HCS plates: the layout of a packed plate and its metadata (DESIGN §2).

A packed plate is an OME-Zarr (NGFF) 0.5 high-content-screening plate on zarr v3, so
napari (napari-ome-zarr), ome-zarr-py, neuroglancer (``zarr3://``), vizarr, Fiji/MoBIE
and OMERO read it as a plate::

    Plate1/                   (or Plate1.ozx: the same tree in one zip, cellblock.store.platestore)
      zarr.json               plate group: ome.plate (rows A.., columns 01.., wells,
                              field_count, acquisitions); cellblock: PlateInfo
      B/zarr.json             row group
      B/02/zarr.json          well group: ome.well.images = fields "0", "1" (sites 1, 2)
      B/02/0/zarr.json        field = image group: ome.multiscales (axes c, y, x; a scale
                              [+ translation] per level), ome.omero (labels, colours, windows)
      B/02/0/0/zarr.json      level 0: uint8 (c, y, x), one chunk = the whole site
      B/02/0/0/c/0/0/0        its only chunk: bytes -> zstd -> crc32c
      B/02/0/1/...            level 1: 1/4 of the size (4 x 4 block means), one chunk
      B/02/0/2/...            level 2: 1/16

Rows and columns are named as RxRx1 names them (well ``B02`` is ``B/02``), field ``k``
is site ``k + 1``: the same indices as the predictions store's ``(row, col, site)``.
Chunks are encoded here with numcodecs, byte for byte what zarr-python writes for the
same ``zarr.json`` (tests compare the two), so the packer never pays zarr-python's
per-call overhead.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numcodecs
import numpy as np

from cellblock.screen.plates import PlateFormat

__all__ = [
    "FIELD_AXES",
    "LEVELS",
    "OME_VERSION",
    "FieldCodec",
    "array_json",
    "chunk_name",
    "downsample",
    "field_name",
    "group_json",
    "image_attrs",
    "plate_attrs",
    "row_col_names",
    "well_attrs",
    "windows",
]

OME_VERSION = "0.5"
FIELD_AXES = ("c", "y", "x")
LEVELS = (1, 4, 16)  # downsampling factor of each multiscale level (path "0", "1", "2")
PIXEL_MAX = 255.0


def row_col_names(fmt: PlateFormat) -> tuple[list[str], list[str]]:
    """RxRx1's row and column names of a plate: ``(["A", ..., "P"], ["01", ..., "24"])``."""
    rows = [fmt.well_name(r, 0)[:-2] for r in range(fmt.n_rows)]
    cols = [fmt.well_name(0, c)[-2:] for c in range(fmt.n_cols)]
    return rows, cols


def field_name(fmt: PlateFormat, row: int, col: int, site: int) -> str:
    """Path of a site's field in its plate: ``(1, 1, site=1) -> "B/02/0"`` (site 1-based)."""
    well = fmt.well_name(row, col)
    return f"{well[:-2]}/{well[-2:]}/{site - 1}"


def chunk_name(field: str, level: int = 0) -> str:
    """The file of a field level's only chunk: ``"B/02/0/0/c/0/0/0"``."""
    return f"{field}/{level}/c/0/0/0"


def level_shape(shape: tuple[int, int, int], factor: int) -> tuple[int, int, int]:
    """``(c, y, x)`` of a level ``factor`` times smaller (edges rounded up)."""
    c, h, w = shape
    return c, -(-h // factor), -(-w // factor)


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """``(C, H, W)`` uint8 -> the mean of each ``factor x factor`` block, rounded.

    Partial blocks at the edges average the pixels they have.

    Args:
        image: One site.
        factor: Block size (1 returns the image).
    """
    if factor == 1:
        return image
    channels, height, width = image.shape
    ny, nx = -(-height // factor), -(-width // factor)
    pad = ((0, 0), (0, ny * factor - height), (0, nx * factor - width))
    sums = np.pad(image.astype(np.int64), pad).reshape(channels, ny, factor, nx, factor)
    counts = np.pad(np.ones((height, width), np.int64), pad[1:]).reshape(ny, factor, nx, factor)
    n = counts.sum((1, 3))
    return ((2 * sums.sum((2, 4)) + n) // (2 * n)).astype(np.uint8)  # round half up


@dataclass(frozen=True)
class FieldCodec:
    """The chunk codec chain of every field array: ``bytes -> zstd(level) [-> crc32c]``.

    Args:
        level: zstd level (1-22). 16 makes a synthetic RxRx1 dataset, pyramid included,
            ~6% smaller than its PNGs and still decodes in ~2.5 ms a site
            (scripts/bench/io.py compares the options).
        checksum: End the chain with the zarr v3 ``crc32c`` codec.
    """

    level: int = 16
    checksum: bool = True

    def codecs(self) -> list[dict]:
        """The ``codecs`` of the arrays' ``zarr.json``."""
        chain: list[dict] = [
            {"name": "bytes"},
            {"name": "zstd", "configuration": {"level": self.level, "checksum": False}},
        ]
        return [*chain, {"name": "crc32c"}] if self.checksum else chain

    def encode(self, chunk: np.ndarray) -> bytes:
        """One whole chunk (uint8, C order) -> its stored bytes."""
        data = bytes(numcodecs.Zstd(self.level).encode(np.ascontiguousarray(chunk)))
        if self.checksum:
            data += google_crc32c.value(data).to_bytes(4, "little")
        return data


def group_json(attributes: dict[str, Any]) -> bytes:
    """A zarr v3 group's ``zarr.json`` with ``attributes``, as zarr-python writes it."""
    meta = {"attributes": attributes, "zarr_format": 3, "node_type": "group"}
    return json.dumps(meta, indent=2, allow_nan=True).encode()


@functools.cache
def array_json(shape: tuple[int, int, int], codec: FieldCodec) -> bytes:
    """``zarr.json`` of one field level: uint8 ``shape``, one chunk, ``codec``, fill 0.

    Made by zarr-python itself (in memory), so it is exactly what zarr-python writes.
    """
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec
    from zarr.storage import MemoryStore

    store = MemoryStore()
    compressors: tuple[ZstdCodec | Crc32cCodec, ...] = (
        ZstdCodec(level=codec.level, checksum=False),
    )
    compressors += (Crc32cCodec(),) if codec.checksum else ()
    zarr.create_array(
        store,
        shape=shape,
        chunks=shape,
        dtype="uint8",
        fill_value=0,
        compressors=compressors,
        dimension_names=FIELD_AXES,
    )
    return store._store_dict["zarr.json"].to_bytes()


def plate_attrs(
    fmt: PlateFormat, name: str, wells: list[tuple[int, int]], field_count: int
) -> dict[str, Any]:
    """``ome`` attributes of a plate group.

    Args:
        fmt: The plate format (all its rows and columns are named).
        name: Plate name, e.g. ``"HEPG2-01/Plate1"``.
        wells: 0-based ``(row, col)`` of every imaged well.
        field_count: Most fields (sites) in a well.
    """
    rows, cols = row_col_names(fmt)
    return {
        "version": OME_VERSION,
        "plate": {
            "name": name,
            "rows": [{"name": r} for r in rows],
            "columns": [{"name": c} for c in cols],
            "wells": [
                {"path": f"{rows[r]}/{cols[c]}", "rowIndex": r, "columnIndex": c}
                for r, c in sorted(wells)
            ],
            "field_count": field_count,
            "acquisitions": [{"id": 0, "name": name, "maximumfieldcount": field_count}],
            "version": OME_VERSION,
        },
    }


def well_attrs(fields: list[int]) -> dict[str, Any]:
    """``ome`` attributes of a well group whose fields are ``fields`` (paths ``"0"``..)."""
    images = [{"path": str(f), "acquisition": 0} for f in sorted(fields)]
    return {"version": OME_VERSION, "well": {"images": images, "version": OME_VERSION}}


def windows(stats: dict, n_channels: int) -> list[tuple[float, float]]:
    """Display window ``(start, end)`` per channel from a plate's pixel statistics.

    ``[mean - std / 2, mean + 3 std]`` over all imaged wells: the background (about the
    median of a fluorescence image, a little under the mean) black, bright structures
    at full colour; the full uint8 range without statistics.

    Args:
        stats: ``PlateInfo.stats`` (``{"all": {"mean": [...], "std": [...]}}``).
        n_channels: Number of channels.
    """
    if "all" not in stats:
        return [(0.0, PIXEL_MAX)] * n_channels
    out = []
    for m, s in zip(stats["all"]["mean"], stats["all"]["std"], strict=True):
        low = float(max(0.0, m - s / 2))
        out.append((round(low, 3), round(float(min(PIXEL_MAX, max(low + 1.0, m + 3 * s))), 3)))
    return out


def image_attrs(
    name: str,
    channels: list[str],
    colors: list[str],
    window: list[tuple[float, float]],
    pixel_size_um: float | None = None,
) -> dict[str, Any]:
    """``ome`` attributes of a field (image group): multiscales + omero channels.

    Args:
        name: Image name, e.g. ``"HEPG2-01/Plate1/B02/s1"``.
        channels: Channel labels (the stains).
        colors: Display colour per channel, ``#rrggbb``.
        window: Display ``(start, end)`` per channel (``windows``).
        pixel_size_um: Pixel size in micrometres, if known: the y/x axes get the unit
            ``micrometer`` and physical scales; unknown, they are unitless pixels.
    """
    px = pixel_size_um or 1.0
    unit = {"unit": "micrometer"} if pixel_size_um else {}
    datasets = []
    for i, f in enumerate(LEVELS):
        transforms: list[dict] = [{"type": "scale", "scale": [1.0, f * px, f * px]}]
        if f > 1:  # a block mean's centre sits (f - 1) / 2 pixels in from the block's corner
            shift = (f - 1) / 2 * px
            transforms.append({"type": "translation", "translation": [0.0, shift, shift]})
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
    omero = [
        {
            "label": label,
            "color": color.lstrip("#").upper(),
            "active": True,
            "coefficient": 1.0,
            "family": "linear",
            "inverted": False,
            "window": {"min": 0.0, "max": PIXEL_MAX, "start": start, "end": end},
        }
        for label, color, (start, end) in zip(channels, colors, window, strict=True)
    ]
    return {
        "version": OME_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", **unit},
                    {"name": "x", "type": "space", **unit},
                ],
                "datasets": datasets,
                "type": "local_mean",
                "metadata": {
                    "method": "cellblock.store.omezarr.downsample",
                    "factors": list(LEVELS),
                    "description": "mean of factor x factor pixel blocks, rounded",
                },
            }
        ],
        "omero": {"name": name, "channels": omero, "rdefs": {"model": "color"}},
    }
