"""Encode plate rows in worker processes and write whole plates (``cellblock.store.pack``'s engine).

One job per plate row, in worker processes; the parent alone writes::

    pixels of row B --3 levels, zstd + crc32c--> members (name, bytes) + per-channel sums
      (PNGs, or a previous-layout array: PlateSource)
    parent: members -> plate folder or .ozx (platestore); after the plate's last row:
            well and field groups (omero windows from the statistics), then the
            plate zarr.json with PlateInfo(complete=True)

A plate is complete once its ``zarr.json`` says so (a zip: once it exists). Every byte
written is a function of the pixels (fixed member order, no timestamps), so a rerun,
a resumed run and an upgrade give the same files as a fresh pack.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellblock.atomic import atomic_write_text
from cellblock.parallel import ordered_map
from cellblock.progress import progress_bar
from cellblock.screen.plates import plate_key
from cellblock.store.datasetinfo import DatasetInfo, PlateInfo
from cellblock.store.omezarr import (
    FieldCodec,
    field_name,
    group_json,
    image_attrs,
    plate_attrs,
    well_attrs,
    windows,
)
from cellblock.store.platestore import PlateWriter, open_plate, plate_path, plate_writer
from cellblock.store.rowencode import PlateSource, RowJob, encode_row

# PlateSource: cellblock.store.rowencode, re-exported
__all__ = ["CODEC", "PlateSource", "is_complete", "pack_plates"]

log = logging.getLogger(__name__)


# zstd 16: the dataset, pyramid included, is smaller than its PNGs while a site still
# decodes in ~2.5 ms; blosc-zstd-3 + bitshuffle (the previous layout) was 1.3x larger
# than the PNGs. scripts/bench/io.py measures the options side by side.
CODEC = FieldCodec(level=16, checksum=True)


def _stats(sums: np.ndarray) -> dict:
    out = {}
    for kind, name in enumerate(("all", "negative_control")):
        n, s, ss = sums[kind]
        if n[0] == 0:
            continue
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
        out[name] = {"mean": mean.tolist(), "std": std.tolist(), "n_pixels": int(n[0])}
    return out


def _finish_plate(writer, key: str, sub: pd.DataFrame, sums: np.ndarray, info: DatasetInfo):
    """Write the groups of a plate whose fields are all written, then its zarr.json."""
    fmt = info.plate_format
    exp, plate = str(sub.experiment.iloc[0]), int(sub.plate.iloc[0])
    plate_info = PlateInfo(
        exp,
        plate,
        str(sub.cell_type.iloc[0]),
        str(sub.split.iloc[0]),
        len(sub),
        _stats(sums),
        complete=True,
    )
    window = windows(plate_info.stats, len(info.channels))
    wells = sub.groupby(["row", "col"], sort=True)
    for (row, col), g in wells:
        fields = sorted(int(s) - 1 for s in g.site)
        well = fmt.well_name(int(row), int(col))
        writer.write(f"{well[:-2]}/{well[-2:]}/zarr.json", group_json({"ome": well_attrs(fields)}))
        for site in sorted(int(s) for s in g.site):
            attrs = image_attrs(
                f"{key}/{well}/s{site}",
                list(info.channels),
                list(info.colors),
                window,
                info.pixel_size_um,
            )
            writer.write(
                f"{field_name(fmt, int(row), int(col), site)}/zarr.json", group_json({"ome": attrs})
            )
    for row in sorted(set(sub.row)):
        writer.write(f"{fmt.well_name(int(row), 0)[:-2]}/zarr.json", group_json({}))
    ome = plate_attrs(fmt, key, [(int(r), int(c)) for r, c in wells.groups], info.n_sites)
    # all written but the zarr.json that records it: the dataset's size needs no walk
    plate_info = dataclasses.replace(plate_info, member_bytes=writer.size)
    writer.commit(group_json({"ome": ome, "cellblock": plate_info.to_json()}))


def is_complete(images: Path, key: str, store: str) -> bool:
    """Whether plate ``key`` of ``images`` has been written whole."""
    path = plate_path(images, key, store)
    try:
        raw = open_plate(path).read("zarr.json") if path.exists() else None
    except OSError:
        return False
    if not raw:
        return False
    return bool(json.loads(raw)["attributes"].get("cellblock", {}).get("complete"))


@dataclass
class _PlateProgress:
    """A plate being written: rows still to come, channel sums so far, its writer.

    Args:
        sub: The plate's site-table rows, sorted.
        rows: Rows not yet written.
        sums: Per-channel sums of the rows written (``encode_row``'s shape).
        writer: Its writer, once its first row arrived.
        done: Its zarr.json is written (committed): nothing to abort.
    """

    sub: pd.DataFrame
    rows: int
    sums: np.ndarray | float = 0.0
    writer: PlateWriter | None = None
    done: bool = False


def pack_plates(
    images: Path,
    info: DatasetInfo,
    plates: list[tuple[pd.DataFrame, PlateSource]],
    *,
    codec: FieldCodec = CODEC,
    workers: int = 1,
    progress: bool = True,
    desc: str = "pack",
) -> tuple[list[str], list[str]]:
    """Write plates into ``images`` (an images.zarr whose root is written).

    Args:
        images: The images.zarr folder.
        info: The dataset's info (geometry, channels, store).
        plates: Per plate, its site-table rows and where its pixels come from.
        codec: The field arrays' codec.
        workers: Processes encoding rows.
        progress: Show a progress bar.
        desc: The progress bar's label.

    Returns:
        ``(packed, skipped)`` plate keys (skipped: complete already).
    """
    jobs, todo, skipped = _row_jobs(images, info, plates, codec)
    if skipped:
        log.info("skipping %d complete plate(s): %s", len(skipped), ", ".join(skipped))
    total = sum(len(j.sites) for j in jobs)
    try:
        with progress_bar(total=total, unit="site", desc=desc, disable=not progress) as bar:
            for job, (members, sums) in zip(
                jobs, ordered_map(encode_row, jobs, workers), strict=True
            ):
                _write_row(images, info, job, todo[job.key], members, sums)
                bar.update(len(job.sites))
    except BaseException:
        for plate in todo.values():
            if plate.writer is not None and not plate.done:
                plate.writer.abort()
        raise
    return list(todo), skipped


def _row_jobs(
    images: Path,
    info: DatasetInfo,
    plates: list[tuple[pd.DataFrame, PlateSource]],
    codec: FieldCodec,
) -> tuple[list[RowJob], dict[str, _PlateProgress], list[str]]:
    """The row jobs of the plates not complete yet (arguments: ``pack_plates``'s).

    Returns:
        ``(jobs, todo, skipped)``: the jobs in order, each plate to write by key, and
        the keys of the complete plates skipped.
    """
    jobs: list[RowJob] = []
    todo: dict[str, _PlateProgress] = {}
    skipped: list[str] = []
    for sub, source in plates:
        sub = sub.sort_values(["row", "col", "site"])  # the same bytes whatever the table order
        key = plate_key(sub.experiment.iloc[0], int(sub.plate.iloc[0]))
        if is_complete(images, key, info.store):
            skipped.append(key)
            continue
        exp_group = images / key.split("/")[0] / "zarr.json"
        if not exp_group.is_file():
            atomic_write_text(exp_group, group_json({}).decode())
        rows = [
            RowJob(key, int(row), info.plate_format, _row_sites(g), source, codec)
            for row, g in sub.groupby("row", sort=True)
        ]
        todo[key] = _PlateProgress(sub=sub, rows=len(rows))
        jobs += rows
    return jobs, todo, skipped


def _row_sites(g: pd.DataFrame) -> tuple[tuple[int, str, int, bool], ...]:
    """``RowJob.sites`` of one row's site-table rows."""
    return tuple(
        zip(
            g.col.astype(int),
            g.well,
            g.site.astype(int),
            g.well_type == "negative_control",
            strict=True,
        )
    )


def _write_row(
    images: Path,
    info: DatasetInfo,
    job: RowJob,
    plate: _PlateProgress,
    members: list[tuple[str, bytes]],
    sums: np.ndarray,
) -> None:
    """Write one encoded row; after its plate's last row, finish the plate.

    Args:
        images: The images.zarr folder.
        info: The dataset's info.
        job: The row's job.
        plate: Its plate's progress (updated).
        members: The row's encoded members.
        sums: The row's channel sums.
    """
    if plate.writer is None:
        plate.writer = plate_writer(images, job.key, info.store)
    for name, data in members:
        plate.writer.write(name, data)
    plate.rows -= 1
    plate.sums = plate.sums + sums
    if plate.rows == 0:
        _finish_plate(plate.writer, job.key, plate.sub, np.asarray(plate.sums), info)
        plate.done = True
