"""Pack a raw RxRx1 PNG tree into OME-Zarr HCS plates (layout: ``cellblock.store.packed``).

::

    raw tree --tables--> site table --check folders--> PlateSource per plate
             --cellblock.store.packplates (rows in workers, plates written whole)--> images.zarr
             --atomic--> metadata.parquet (last)   [--verify: every site vs its PNGs]

A rerun skips complete plates and redoes the rest from scratch, with identical files.
Wells absent from the metadata are never written. ``cellblock.store.upgrade`` feeds the same
machinery from a dataset of the previous layout instead of PNGs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cellblock.atomic import atomic_write_parquet, atomic_write_text
from cellblock.errors import UserError
from cellblock.finished import remove_temporary
from cellblock.locks import hold
from cellblock.screen.metadata import load_raw_metadata, sites_of
from cellblock.screen.plates import PlateFormat, plate_dir
from cellblock.store.omezarr import FieldCodec, group_json
from cellblock.store.packed import DatasetInfo, PackedDataset
from cellblock.store.packplates import CODEC, PlateSource, pack_plates
from cellblock.store.rawtree import RawGeometry, check_plate_folder, probe_geometry
from cellblock.store.storesize import du, images_bytes
from cellblock.store.verify import row_checks, verify_rows

__all__ = [
    "CODEC",
    "PlateSource",
    "du",
    "open_root",
    "pack_dataset",
    "pack_plates",
    "verify_dataset",
]

log = logging.getLogger(__name__)


@dataclass
class _RawPlan:
    """What a pack reads from the raw tree before writing anything.

    Args:
        raw: The raw tree.
        layout: Its layout (``"kaggle"`` or ``"v1.0"``).
        table: The site table of the experiments packed.
        fmt: The plate format.
        geometry: Channels and image size (probed from the first site).
        info: The dataset's info.
        folders: Each plate's raw folder by ``(experiment, plate)``.
        plates: Per plate, its site-table rows and its PNG folder as a ``PlateSource``.
    """

    raw: Path
    layout: str
    table: pd.DataFrame
    fmt: PlateFormat
    geometry: RawGeometry
    info: DatasetInfo
    folders: dict[tuple[str, int], Path] = field(default_factory=dict)
    plates: list[tuple[pd.DataFrame, PlateSource]] = field(default_factory=list)


def pack_dataset(
    raw: Path | str,
    out: Path | str,
    *,
    experiments: list[str] | None = None,
    workers: int = 1,
    verify: bool = False,
    plate_wells: int | None = None,
    progress: bool = True,
    store: str = "directory",
    pixel_size_um: float | None = None,
    codec: FieldCodec = CODEC,
    strict: bool = False,
) -> dict[str, Any]:
    """Pack ``raw`` (Kaggle or v1.0 layout) into ``out``; return a summary.

    Args:
        raw: The raw tree (tables + PNG folders).
        out: The dataset folder to create or complete.
        experiments: Only these experiments (default: all in the tables).
        workers: Processes decoding and encoding rows.
        verify: Re-read every packed site (checksums checked) and compare it with its PNGs.
        plate_wells: Plate format; default: from ``synthetic.json`` if present,
            else the smallest standard plate holding every listed well.
        progress: Show progress bars.
        store: ``"directory"`` (a folder per plate) or ``"zip"`` (one .ozx per plate).
        pixel_size_um: Pixel size in micrometres, if known (OME axes units).
        codec: The field arrays' codec.
        strict: Images of sites without a metadata row are a ``RawImageError`` (else a warning).

    Returns:
        ``plates_packed``, ``plates_skipped``, ``sites``, ``sites_verified``, ``bytes``
        (of images.zarr), ``seconds``, ``layout``, ``plate_wells``, ``store``.

    Raises:
        FolderBusyError: Another packer is writing ``out`` (``out/pack.lock``).
    """
    raw, out = Path(raw), Path(out)
    with hold(out / "pack.lock", what=f"dataset folder {out}"):
        remove_temporary(out)  # a killed pack's half-written metadata.parquet, say
        start = time.perf_counter()
        plan = _read_raw(raw, experiments, plate_wells, store, pixel_size_um, strict)
        open_root(out / "images.zarr", plan.info)
        packed, skipped = pack_plates(out / "images.zarr", plan.info, plan.plates, codec=codec,
                                      workers=workers, progress=progress)  # fmt: skip
        _write_metadata(out / "metadata.parquet", plan.table)
        n_verified = 0
        if verify:
            checks = row_checks(out, plan.table, plan.folders, plan.geometry)
            n_verified = verify_rows(checks, workers, progress)
        return {
            "plates_packed": len(packed),
            "plates_skipped": len(skipped),
            "sites": len(plan.table),
            "sites_verified": n_verified,
            "bytes": images_bytes(out / "images.zarr", packed + skipped, store),
            "seconds": time.perf_counter() - start,
            "layout": plan.layout,
            "plate_wells": plan.fmt.n_wells,
            "store": store,
        }


def _read_raw(
    raw: Path,
    experiments: list[str] | None,
    plate_wells: int | None,
    store: str,
    pixel_size_um: float | None,
    strict: bool,
) -> _RawPlan:
    """Read the raw tree's tables, probe its geometry and check its plate folders.

    Args:
        raw: The raw tree.
        experiments: Only these experiments (None: all).
        plate_wells: The plate format (None: declared, else the smallest that fits).
        store: The dataset's store kind.
        pixel_size_um: Pixel size in micrometres, if known.
        strict: Images of sites the tables do not list are an error.
    """
    layout, table = load_raw_metadata(raw)
    table = sites_of(table, experiments)
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
        fmt.n_wells,
        int(table.site.max()),
        geometry.n_channels,
        (geometry.height, geometry.width),
        store=store,
        pixel_size_um=pixel_size_um,
    )
    plan = _RawPlan(raw, layout, table, fmt, geometry, info)
    for (exp, plate), sub in table.groupby(["experiment", "plate"], sort=True):
        folder = raw / plate_dir(layout, sub.split.iloc[0], exp, plate)
        sites = set(zip(sub.well, sub.site, strict=True))
        check_plate_folder(folder, fmt, geometry, sites, strict=strict)
        plan.folders[(exp, int(plate))] = folder
        plan.plates.append((sub, PlateSource("png", str(folder), geometry)))
    return plan


def _declared_plate_wells(raw: Path) -> int | None:
    """The plate format a generator recorded in ``synthetic.json``, if any."""
    path = raw / "synthetic.json"
    if path.is_file():
        return int(json.loads(path.read_text()).get("plate_wells") or 0) or None
    return None


def open_root(path: Path, info: DatasetInfo) -> None:
    """Create images.zarr, or check that an existing one has the same geometry."""
    meta = path / "zarr.json"
    if meta.is_file():
        attrs = json.loads(meta.read_text()).get("attributes", {}).get("cellblock", {})
        existing = DatasetInfo.from_json(attrs, str(path))
        if existing != info:
            raise UserError(
                f"{path} holds a dataset of different geometry or store "
                f"({existing}); this pack gives {info}. Pack into a new folder."
            )
        return
    atomic_write_text(meta, group_json({"cellblock": info.to_json()}).decode())


def _write_metadata(path: Path, table: pd.DataFrame) -> None:
    """Merge the packed experiments' sites into metadata.parquet (atomic)."""
    if path.is_file():
        old = pd.read_parquet(path)
        table = pd.concat([old[~old.experiment.isin(set(table.experiment))], table])
        table = table.sort_values(["experiment", "plate", "row", "col", "site"], ignore_index=True)
    atomic_write_parquet(table, path)


def verify_dataset(out: Path, workers: int = 1, progress: bool = True) -> int:
    """Check every site of the packed dataset ``out`` against its chunk checksum.

    For a copy of a dataset without its PNGs (``pack_zarr.py --verify --out DATASET``).
    Returns the number of sites checked.

    Raises:
        CorruptDataError: Naming every damaged site (up to ten) and their count.
    """
    table = PackedDataset(out).metadata
    return verify_rows(row_checks(Path(out), table), workers, progress)
