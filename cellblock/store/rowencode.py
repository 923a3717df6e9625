"""Encode one plate row in a worker process (``cellblock.store.packplates``' worker side).

The pixels of the row's sites (PNGs, or a previous-layout plate array) become the
members of their fields (3 pyramid levels: array metadata and one chunk each) and the
per-channel sums the plate's statistics come from. Only bytes go back to the parent,
which alone writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellblock.errors import UserError
from cellblock.screen.plates import PlateFormat, site_filename
from cellblock.store.omezarr import (
    LEVELS,
    FieldCodec,
    array_json,
    chunk_name,
    downsample,
    field_name,
)
from cellblock.store.rawtree import RawGeometry, read_png
from cellblock.store.shardread import ShardReader

__all__ = ["PlateSource", "RowJob", "encode_row"]


@dataclass(frozen=True)
class PlateSource:
    """Where a plate's pixels come from: a raw PNG folder, or a previous-layout array.

    Args:
        kind: ``"png"`` (a raw plate folder) or ``"v1"`` (a format-1 plate array).
        path: The folder or array.
        geometry: Channels and image size.
    """

    kind: str
    path: str
    geometry: RawGeometry


@dataclass(frozen=True)
class RowJob:
    """Everything a worker needs to encode one plate row.

    Args:
        key: The plate, ``"EXP/PlateN"``.
        row: The row index (0-based).
        fmt: The plate format.
        sites: ``(col, well, site, is_negative_control)`` of the row's sites, in order.
        source: Where the plate's pixels come from.
        codec: The field arrays' codec.
    """

    key: str  # "EXP/PlateN"
    row: int
    fmt: PlateFormat
    sites: tuple[tuple[int, str, int, bool], ...]  # (col, well, site, is_negative_control)
    source: PlateSource
    codec: FieldCodec


_v1_readers: dict[str, ShardReader] = {}  # per process: the shard indexes read once


def _read_site(job: RowJob, col: int, well: str, site: int) -> np.ndarray:
    g, src = job.source.geometry, job.source
    if src.kind == "png":
        return np.stack(
            [
                read_png(Path(src.path) / site_filename(well, site, ch + 1), g.height, g.width)
                for ch in range(g.n_channels)
            ]
        )
    if src.path not in _v1_readers:
        reader = ShardReader.open(Path(src.path))
        if reader is None:
            raise UserError(f"{src.path}: not a plate of the previous cellblock layout")
        _v1_readers[src.path] = reader
    return _v1_readers[src.path].read_chunk((job.row, col, site - 1, 0, 0, 0))[0, 0, 0]


def encode_row(job: RowJob) -> tuple[list[tuple[str, bytes]], np.ndarray]:
    """Members of one row's fields, and sums ``(2 kinds, 3 [n, sum, sumsq], C)``.

    Args:
        job: The row (the kinds of sums: every well, negative-control wells).
    """
    members, sums = [], np.zeros((2, 3, job.source.geometry.n_channels))
    for col, well, site, negative in job.sites:
        image = _read_site(job, col, well, site)
        field = field_name(job.fmt, job.row, col, site)
        for level, factor in enumerate(LEVELS):
            data = downsample(image, factor)
            members.append((f"{field}/{level}/zarr.json", array_json(data.shape, job.codec)))
            members.append((chunk_name(field, level), job.codec.encode(data)))
        px = image.reshape(len(image), -1).astype(np.float64)
        for kind in (0, 1) if negative else (0,):
            sums[kind] += [np.full(len(px), px.shape[1]), px.sum(1), (px * px).sum(1)]
    return members, sums
