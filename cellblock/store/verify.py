"""Check a packed dataset: every site against its chunk checksum, and against its source.

``pack_zarr.py --verify`` runs it after packing (with the raw tree: pixels must equal
the PNGs); ``pack_zarr.py --verify --out DATASET`` alone checks a copy of a dataset
without its PNGs (every chunk's crc32c, every chunk decodes); ``--upgrade`` checks the
converted dataset against the previous layout's arrays. Sites are read through
``PackedDataset.read_site``, the loaders' own path, one job per plate row::

    metadata.parquet --rows--> [job EXP/Plate1 row B] --read_site + crc32c--> problems
                                     (+ raw PNGs of row B, or the previous layout's
                                      plate array: pixel equality)

Every damaged or differing site is collected (not just the first), and the error
lists them, so one run tells the whole extent of a damaged copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellblock.errors import CorruptDataError, UserError
from cellblock.parallel import ordered_map
from cellblock.progress import progress_bar
from cellblock.screen.plates import plate_key, site_filename
from cellblock.store.packed import PackedDataset
from cellblock.store.rawtree import RawGeometry, read_png
from cellblock.store.shardread import ShardReader

__all__ = ["RowCheck", "verify_rows"]

_SHOWN = 10  # damaged sites named in the error; the rest are counted


@dataclass(frozen=True)
class RowCheck:
    """One plate row to verify.

    Args:
        dataset: The packed dataset folder.
        experiment: The plate's experiment.
        plate: 1-based plate number.
        row: 0-based plate row.
        sites: ``(col, well, site)`` of each imaged site of the row.
        folder: The plate's raw PNG folder, or None to check checksums only.
        geometry: The PNGs' geometry (with ``folder``).
        v1_plate: A previous-layout plate array to compare with instead of PNGs.
    """

    dataset: str
    experiment: str
    plate: int
    row: int
    sites: tuple[tuple[int, str, int], ...]
    folder: str | None = None
    geometry: RawGeometry | None = None
    v1_plate: str | None = None


def _check_row(job: RowCheck) -> list[str]:
    """Problems found in one row, one line each (empty: the row is intact)."""
    ds, problems = PackedDataset(job.dataset), []
    old = ShardReader.open(Path(job.v1_plate)) if job.v1_plate else None
    key = plate_key(job.experiment, job.plate)
    for col, well, site in job.sites:
        try:
            stored = ds.read_site(job.experiment, job.plate, job.row, col, site)
        except CorruptDataError as err:
            problems.append(str(err))
            continue
        if old is not None:
            if not np.array_equal(
                stored, old.read_chunk((job.row, col, site - 1, 0, 0, 0))[0, 0, 0]
            ):
                problems.append(f"{job.dataset}: plate {key} well {well} site {site} differs "
                                f"from {job.v1_plate}")  # fmt: skip
            continue
        if job.folder is None or job.geometry is None:  # (the geometry comes with the folder)
            continue
        g = job.geometry
        for ch in range(g.n_channels):
            png = read_png(Path(job.folder) / site_filename(well, site, ch + 1), g.height, g.width)
            if not np.array_equal(stored[ch], png):
                problems.append(f"{job.dataset}: plate {key} well {well} site {site} channel "
                                f"{ch + 1} differs from its PNG")  # fmt: skip
                break
    return problems


def row_checks(
    dataset: Path, table: pd.DataFrame, folders: dict[tuple[str, int], Path] | None = None,
    geometry: RawGeometry | None = None, v1_images: Path | None = None,
) -> list[RowCheck]:  # fmt: skip
    """One ``RowCheck`` per plate row of ``table`` (site-table rows).

    Args:
        dataset: The packed dataset folder.
        table: The sites to check (``experiment, plate, row, col, well, site``).
        folders: Raw PNG folder of each ``(experiment, plate)``; None = checksums only.
        geometry: The PNGs' geometry (with ``folders``).
        v1_images: A previous-layout images.zarr to compare with (``--upgrade``).
    """
    jobs = []
    for (exp, plate, row), g in table.groupby(["experiment", "plate", "row"], sort=True):
        folder = folders[(exp, int(plate))] if folders else None
        sites = tuple(zip(g.col.astype(int), g.well, g.site.astype(int), strict=True))
        old = str(Path(v1_images) / plate_key(exp, int(plate))) if v1_images else None
        jobs.append(RowCheck(str(dataset), str(exp), int(plate), int(row), sites,
                             str(folder) if folder else None, geometry, old))  # fmt: skip
    return jobs


def verify_rows(jobs: list[RowCheck], workers: int = 1, progress: bool = True) -> int:
    """Check every site of ``jobs``; return the number of sites checked.

    Args:
        jobs: From :func:`row_checks`.
        workers: Processes.
        progress: Show a progress bar.

    Raises:
        CorruptDataError: A site fails its checksum or does not decode (all such sites named,
            up to ten, and counted).
        UserError: A site differs from its PNG.
    """
    problems: list[str] = []
    with progress_bar(total=sum(len(j.sites) for j in jobs), unit="site", desc="verify",
              disable=not progress) as bar:  # fmt: skip
        for job, found in zip(jobs, ordered_map(_check_row, jobs, workers), strict=True):
            problems += found
            bar.update(len(job.sites))
    if problems:
        more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        listed = "\n  ".join(problems[:_SHOWN])
        kind = CorruptDataError if any("damaged" in p for p in problems) else UserError
        raise kind(f"verify: {len(problems)} damaged or differing site(s):\n  {listed}{more}")
    return sum(len(j.sites) for j in jobs)
