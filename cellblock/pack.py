"""Pack a raw RxRx1 PNG tree into a chunked zarr dataset (see ``cellblock.dataset``).

One job per plate row (= one zarr shard), so processes never write the same file::

    raw PNGs of row B  --decode+check-->  (1, cols, sites, C, H, W) block  --> shard c/1/0/...
                                          + per-channel sums for the statistics

The parent process alone writes attributes: a plate is marked ``complete`` only
after all its rows are written, so a rerun skips complete plates and redoes the
rest (rows are rewritten whole, so redoing is idempotent). ``metadata.parquet`` is
written last, atomically. Wells absent from the metadata are never written: their
chunks stay absent on disk and read as 0.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from tqdm import tqdm
from zarr.codecs import BloscCodec, Crc32cCodec

from cellblock.atomic import atomic_write_parquet
from cellblock.dataset import DIMENSION_NAMES, DatasetInfo, PackedDataset, PlateInfo, plate_key
from cellblock.errors import UserError
from cellblock.locks import hold
from cellblock.metadata import load_raw_metadata, sites_of
from cellblock.parallel import ordered_map
from cellblock.plates import PlateFormat, plate_dir, site_filename
from cellblock.rawtree import RawGeometry, check_plate_folder, probe_geometry, read_png
from cellblock.verify import row_checks, verify_rows

__all__ = ["COMPRESSOR", "pack_dataset", "verify_dataset"]

log = logging.getLogger(__name__)

# Blosc-zstd with bit shuffle: the best size/decode-speed balance measured in
# scripts/bench/io.py; decoding stays far below PNG decode time.
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


@dataclass(frozen=True)
class _RowJob:
    """Everything a worker needs to pack one plate row."""

    zarr_path: str
    key: str  # "EXP/PlateN"
    folder: str  # the plate's raw folder
    row: int
    n_cols: int
    geometry: RawGeometry
    n_sites: int
    sites: tuple[tuple[int, str, int, bool], ...]  # (col, well, site, is_negative_control)


def _read_row(job: _RowJob) -> np.ndarray:
    g = job.geometry
    block = np.zeros((1, job.n_cols, job.n_sites, g.n_channels, g.height, g.width), np.uint8)
    for col, well, site, _ in job.sites:
        for ch in range(g.n_channels):
            path = Path(job.folder) / site_filename(well, site, ch + 1)
            block[0, col, site - 1, ch] = read_png(path, g.height, g.width)
    return block


def _pack_row(job: _RowJob) -> np.ndarray:
    """Write one row; return sums ``(2 kinds, 3 [n, sum, sumsq], C)`` for the statistics."""
    block = _read_row(job)
    array = zarr.open_array(job.zarr_path, path=job.key, mode="r+")
    array[job.row : job.row + 1] = block
    sums = np.zeros((2, 3, job.geometry.n_channels))
    for col, _, site, negative in job.sites:
        px = block[0, col, site - 1].reshape(job.geometry.n_channels, -1).astype(np.float64)
        for kind in (0, 1) if negative else (0,):
            sums[kind] += [np.full(len(px), px.shape[1]), px.sum(1), (px * px).sum(1)]
    return sums


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


def _run(fn, jobs: list[_RowJob], workers: int, desc: str, progress: bool, on_done=None) -> None:
    """Run ``fn`` over ``jobs`` (in ``workers`` processes), calling ``on_done`` in order."""
    total = sum(len(j.sites) for j in jobs)
    with tqdm(total=total, unit="site", desc=desc, disable=not progress) as bar:
        for job, result in zip(jobs, ordered_map(fn, jobs, workers), strict=True):
            bar.update(len(job.sites))
            if on_done:
                on_done(job, result)


def pack_dataset(
    raw: Path,
    out: Path,
    experiments: list[str] | None = None,
    workers: int = 1,
    verify: bool = False,
    plate_wells: int | None = None,
    progress: bool = True,
) -> dict:
    """Pack ``raw`` (Kaggle or v1.0 layout) into ``out``; return a summary.

    Args:
        raw: The raw tree (tables + PNG folders).
        out: The dataset folder to create or complete.
        experiments: Only these experiments (default: all in the tables).
        workers: Processes decoding and writing rows.
        verify: Re-read every packed site (checksums checked) and compare it with its PNGs.
        plate_wells: Plate format; default: from ``synthetic.json`` if present,
            else the smallest standard plate holding every listed well.
        progress: Show progress bars.

    Raises:
        FolderBusyError: Another packer is writing ``out`` (``out/pack.lock``).
    """
    with hold(Path(out) / "pack.lock", what=f"dataset folder {out}"):
        return _pack(Path(raw), Path(out), experiments, workers, verify, plate_wells, progress)


def _pack(raw, out, experiments, workers, verify, plate_wells, progress) -> dict:
    start = time.perf_counter()
    layout, table = load_raw_metadata(raw)
    table = sites_of(table, experiments)
    sites = sorted(set(table["site"]))
    if plate_wells is None:
        plate_wells = _declared_plate_wells(raw)
    fmt = (
        PlateFormat.from_n_wells(plate_wells)
        if plate_wells
        else PlateFormat.smallest_containing(set(table["well"]))
    )
    first = table.iloc[0]
    first_dir = raw / plate_dir(layout, first.split, first.experiment, first.plate)
    geometry = probe_geometry(first_dir, first.well, int(first.site))
    info = DatasetInfo.for_channels(
        fmt.n_wells, max(sites), geometry.n_channels, (geometry.height, geometry.width)
    )
    root = _open_root(out / "images.zarr", info)

    jobs, todo, skipped = [], {}, []
    for (exp, plate), sub in table.groupby(["experiment", "plate"], sort=True):
        key = plate_key(exp, plate)
        folder = raw / plate_dir(layout, sub.split.iloc[0], exp, plate)
        check_plate_folder(folder, fmt, geometry, set(zip(sub.well, sub.site, strict=True)))
        array = root.get(key)
        if array is not None and dict(array.attrs).get("cellblock", {}).get("complete"):
            skipped.append(key)
            continue
        array = root.create_array(
            key,
            shape=info.plate_shape,
            dtype="uint8",
            fill_value=0,
            chunks=(1, 1, 1, *info.plate_shape[3:]),
            shards=(1, *info.plate_shape[1:]),
            compressors=(COMPRESSOR, Crc32cCodec()),  # every chunk checksummed
            dimension_names=DIMENSION_NAMES,
            overwrite=True,
        )
        plate_jobs = [
            _RowJob(
                str(out / "images.zarr"),
                key,
                str(folder),
                int(row),
                fmt.n_cols,
                geometry,
                info.n_sites,
                tuple(zip(g.col, g.well, g.site, g.well_type == "negative_control", strict=True)),
            )
            for row, g in sub.groupby("row")
        ]
        todo[key] = [len(plate_jobs), np.zeros((2, 3, geometry.n_channels)), sub]
        jobs += plate_jobs
    if skipped:
        log.info("skipping %d complete plate(s): %s", len(skipped), ", ".join(skipped))

    def finish_row(job: _RowJob, sums: np.ndarray) -> None:
        entry = todo[job.key]
        entry[0] -= 1
        entry[1] += sums
        if entry[0] == 0:  # last row of the plate: record statistics, mark complete
            sub = entry[2]
            plate_info = PlateInfo(
                experiment=str(sub.experiment.iloc[0]),
                plate=int(sub.plate.iloc[0]),
                cell_type=str(sub.cell_type.iloc[0]),
                split=str(sub.split.iloc[0]),
                n_sites=len(sub),
                stats=_stats(entry[1]),
                complete=True,
            )
            root[job.key].attrs["cellblock"] = plate_info.to_json()

    _run(_pack_row, jobs, workers, "pack", progress, finish_row)
    _write_metadata(out / "metadata.parquet", table)
    n_verified = 0
    if verify:
        folders = {(e, int(p)): raw / plate_dir(layout, g.split.iloc[0], e, p)
                   for (e, p), g in table.groupby(["experiment", "plate"])}  # fmt: skip
        checks = row_checks(out, table, folders, geometry)
        n_verified = verify_rows(checks, workers, progress)
    return {
        "plates_packed": len(todo),
        "plates_skipped": len(skipped),
        "sites": len(table),
        "sites_verified": n_verified,
        "bytes": _du(out / "images.zarr"),
        "seconds": time.perf_counter() - start,
        "layout": layout,
        "plate_wells": fmt.n_wells,
    }


def _declared_plate_wells(raw: Path) -> int | None:
    """The plate format a generator recorded in ``synthetic.json``, if any."""
    path = raw / "synthetic.json"
    if path.is_file():
        return int(json.loads(path.read_text()).get("plate_wells") or 0) or None
    return None


def _open_root(path: Path, info: DatasetInfo) -> zarr.Group:
    """Create images.zarr, or reopen it after checking it has the same geometry."""
    if (path / "zarr.json").is_file():
        root = zarr.open_group(path, mode="r+")
        existing = DatasetInfo.from_json(dict(root.attrs).get("cellblock", {}), str(path))
        if existing != info:
            raise UserError(
                f"{path} holds a dataset of different geometry ({existing}); "
                f"this raw tree gives {info}. Pack into a new folder."
            )
        return root
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.attrs["cellblock"] = info.to_json()
    return root


def _write_metadata(path: Path, table: pd.DataFrame) -> None:
    """Merge the packed experiments' sites into metadata.parquet (atomic)."""
    if path.is_file():
        old = pd.read_parquet(path)
        table = pd.concat([old[~old.experiment.isin(set(table.experiment))], table])
        table = table.sort_values(["experiment", "plate", "row", "col", "site"], ignore_index=True)
    atomic_write_parquet(table, path)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def verify_dataset(out: Path, workers: int = 1, progress: bool = True) -> int:
    """Check every site of the packed dataset ``out`` against its chunk checksum.

    For a copy of a dataset without its PNGs (``pack_zarr.py --verify --out DATASET``).
    Returns the number of sites checked.

    Raises:
        CorruptDataError: Naming every damaged site (up to ten) and their count.
    """
    table = PackedDataset(out).metadata
    return verify_rows(row_checks(Path(out), table), workers, progress)
