"""Convert a dataset of the previous layout (format 1) into OME-Zarr plates, without PNGs.

``01_data/pack_zarr.py --upgrade DATASET``. The previous layout held each plate as one
6-D sharded array; the pixels are read from it (``cellblock.store.shardread``) and written by
the packer's own machinery (``pack.pack_plates``), so the result is byte for byte what
packing the PNGs gives. Then every site is compared with the old array, and only then
is the old layout replaced::

    DATASET/images.zarr (format 1) --read rows--> DATASET/.upgrade/images.zarr (format 2)
    verify every site (pixels equal)  -> DATASET/.upgrade/verified
    images.zarr -> .upgrade/images.v1;  .upgrade/images.zarr -> images.zarr;  rm .upgrade

Resumable: a rerun skips converted plates, and finishes an interrupted swap.
``metadata.parquet`` is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import pandas as pd

from cellblock.errors import UserError
from cellblock.locks import hold
from cellblock.screen.plates import plate_key
from cellblock.store.omezarr import FieldCodec
from cellblock.store.pack import open_root
from cellblock.store.packed import FORMAT_VERSION, DatasetInfo
from cellblock.store.packplates import CODEC, PlateSource, pack_plates
from cellblock.store.rawtree import RawGeometry
from cellblock.store.shardread import ShardReader
from cellblock.store.storesize import du, images_bytes
from cellblock.store.verify import row_checks, verify_rows

__all__ = ["upgrade_dataset"]

log = logging.getLogger(__name__)


def upgrade_dataset(
    dataset: Path,
    store: str = "directory",
    workers: int = 1,
    progress: bool = True,
    codec: FieldCodec = CODEC,
) -> dict:
    """Rewrite ``dataset`` from the previous layout into the current one; return a summary.

    Args:
        dataset: The dataset folder (``metadata.parquet`` + ``images.zarr``).
        store: ``"directory"`` or ``"zip"`` plates.
        workers: Processes.
        progress: Show progress bars.
        codec: The field arrays' codec.

    Raises:
        UserError: Not a dataset, or of a format this cannot convert.
        FolderBusyError: Another packer is writing ``dataset`` (``pack.lock``).
    """
    dataset = Path(dataset)
    with hold(dataset / "pack.lock", what=f"dataset folder {dataset}"):
        return _upgrade(dataset, store, workers, progress, codec)


def _version(images: Path) -> tuple[int | None, dict]:
    try:
        attrs = json.loads((images / "zarr.json").read_text())["attributes"]["cellblock"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, {}
    return attrs.get("format_version"), attrs


def _swap(dataset: Path, work: Path) -> None:
    images = dataset / "images.zarr"
    if images.exists():
        os.replace(images, work / "images.v1")
    os.replace(work / "images.zarr", images)
    shutil.rmtree(work)


def _upgrade(dataset: Path, store: str, workers: int, progress: bool, codec) -> dict:
    start = time.perf_counter()
    images, work = dataset / "images.zarr", dataset / ".upgrade"
    version, attrs = _version(images)
    summary = {"plates_packed": 0, "plates_skipped": 0, "sites_verified": 0, "store": store}
    if version is None and (work / "verified").is_file():  # killed between the two renames
        _swap(dataset, work)
        version, attrs = _version(images)
    if version == FORMAT_VERSION:
        if work.exists():
            shutil.rmtree(work)
        return {
            **summary,
            "already": True,
            "bytes": du(images),
            "seconds": time.perf_counter() - start,
        }
    if version != 1:
        raise UserError(f"{images}: not a packed cellblock dataset (format {version!r})")
    old = DatasetInfo.from_json(attrs, str(images), version=1)
    info = DatasetInfo(
        old.plate_wells, old.n_sites, old.channels, old.colors, old.image_size, store=store
    )
    table = pd.read_parquet(dataset / "metadata.parquet")
    geometry = RawGeometry(len(info.channels), *info.image_size)
    plates = []
    for (exp, plate), sub in table.groupby(["experiment", "plate"], sort=True):
        array = images / plate_key(exp, int(plate))
        if ShardReader.open(array) is None:
            raise UserError(f"{array}: not a plate array of the previous cellblock layout")
        plates.append((sub, PlateSource("v1", str(array), geometry)))
    if (work / "images.zarr").exists():
        _, new_attrs = _version(work / "images.zarr")
        if new_attrs.get("store", "directory") != store:  # a different --store than before
            shutil.rmtree(work)
    open_root(work / "images.zarr", info)
    packed, skipped = pack_plates(
        work / "images.zarr",
        info,
        plates,
        codec=codec,
        workers=workers,
        progress=progress,
        desc="upgrade",
    )
    n = verify_rows(row_checks(work, table, v1_images=images), workers, progress)
    (work / "verified").write_text(f"{n} sites equal to {images}\n")
    _swap(dataset, work)
    log.info("upgraded %s: %d plates, %d sites verified", dataset, len(packed) + len(skipped), n)
    return {
        **summary,
        "plates_packed": len(packed),
        "plates_skipped": len(skipped),
        "sites_verified": n,
        "bytes": images_bytes(images, packed + skipped, store),
        "seconds": time.perf_counter() - start,
    }
