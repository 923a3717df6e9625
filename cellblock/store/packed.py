"""A packed dataset: ``metadata.parquet`` + ``images.zarr``. Where a plate is read.

Layout (DESIGN §2; every plate an OME-Zarr 0.5 HCS plate, ``cellblock.store.omezarr``)::

    DATASET/
      metadata.parquet          one row per site (cellblock.screen.metadata.SITE_COLUMNS)
      images.zarr/              zarr v3 group; attrs["cellblock"] = DatasetInfo
        {EXPERIMENT}/           zarr v3 group
          Plate{p}/             HCS plate (store "directory"), or Plate{p}.ozx (store
                                "zip", cellblock.store.platestore); attrs["cellblock"] = PlateInfo
            {ROW}/{COL}/{F}/0   uint8 (c, y, x): site F + 1 of well {ROW}{COL}

Any zarr v3 reader opens a field with nothing else::

    zarr.open_array("DATASET/images.zarr/HEPG2-01/Plate1/B/02/0/0", mode="r")[:]  # B02, s1

Site reads (the hot path of training and prediction) go through
``cellblock.store.fieldread``, one file read (or one ``pread`` in a zipped plate) and one
decode per site; fields in any other layout are read with zarr-python. Both return the
same pixels. ``plate()`` gives the old 6-D view ``(row, col, site, channel, y, x)`` of
a plate for code that wants whole plates.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cellblock.errors import CorruptDataError, UserError
from cellblock.screen.plates import plate_key
from cellblock.store.datasetinfo import (
    FORMAT_VERSION,
    RXRX1_CHANNELS,
    RXRX1_COLORS,
    UPGRADE_HINT,
    DatasetInfo,
    PlateInfo,
)
from cellblock.store.fieldread import FieldReader
from cellblock.store.omezarr import field_name
from cellblock.store.platestore import PlateFiles, open_plate, plate_path

__all__ = [
    "DIMENSION_NAMES",
    "FORMAT_VERSION",
    "RXRX1_CHANNELS",
    "RXRX1_COLORS",
    "UPGRADE_HINT",
    "DatasetInfo",
    "PackedDataset",
    "PlateInfo",
    "PlateView",
]

log = logging.getLogger(__name__)
DIMENSION_NAMES = ("row", "col", "site", "channel", "y", "x")  # of PlateView


@functools.cache
def _warn_unverified(path: Path) -> None:
    """Once per dataset and process: its chunks carry no checksums (packed before them)."""
    log.warning(
        "%s: packed without chunk checksums (an older cellblock): reads are not "
        "verified; repack it (01_data/pack_zarr.py --raw RAW --out NEW) to have "
        "damage detected",
        path,
    )


@dataclass
class _Plate:
    """One opened plate: its files, root attributes, first field, and fast reader."""

    files: PlateFiles
    attrs: dict
    template: str | None  # the first imaged field, e.g. "B/02/0"
    reader: FieldReader | None


class PackedDataset:
    """Read-only access to a packed dataset folder.

    Args:
        path: The dataset folder (holding ``metadata.parquet`` and ``images.zarr``).

    Raises:
        UserError: Not a packed dataset, or one of the previous layout (with the
            command that converts it).
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.images = self.path / "images.zarr"
        try:
            root = json.loads((self.images / "zarr.json").read_text())
        except (OSError, ValueError):
            raise UserError(
                f"{self.images}: not a packed dataset (run 01_data/pack_zarr.py)"
            ) from None
        attrs = root.get("attributes", {}).get("cellblock", {})
        self.info = DatasetInfo.from_json(attrs, str(self.images))
        self._plates: dict[str, _Plate] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_plates": {}}  # each process opens its own files

    @functools.cached_property
    def metadata(self) -> pd.DataFrame:
        path = self.path / "metadata.parquet"
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        return pd.read_parquet(path)

    def plate_keys(self) -> list[str]:
        """``"EXP/PlateN"`` of every written plate of the dataset, sorted."""
        keys = []
        for exp in sorted(p for p in self.images.iterdir() if (p / "zarr.json").is_file()):
            for p in exp.glob("Plate*"):
                if (p.is_dir() and (p / "zarr.json").is_file()) or p.suffix == ".ozx":
                    keys.append(f"{exp.name}/{p.name.removesuffix('.ozx')}")
        return sorted(keys)

    def plate_path(self, experiment: str, plate: int) -> Path:
        """The plate's folder or ``.ozx`` file."""
        return plate_path(self.images, plate_key(experiment, plate), self.info.store)

    def _plate(self, experiment: str, plate: int) -> _Plate:
        key = plate_key(experiment, plate)
        if key not in self._plates:
            path = self.plate_path(experiment, plate)
            files = open_plate(path) if path.exists() else None
            raw = files.read("zarr.json") if files is not None else None
            if files is None or raw is None:
                available = ", ".join(self.plate_keys()) or "none"
                raise UserError(f"no plate {key} in {self.path}; available: {available}")
            attrs = json.loads(raw).get("attributes", {})
            wells = attrs.get("ome", {}).get("plate", {}).get("wells", [])
            template, reader = None, None
            if wells:
                well = json.loads(files.read(f"{wells[0]['path']}/zarr.json") or b"{}")
                images = well.get("attributes", {}).get("ome", {}).get("well", {}).get("images")
                template = f"{wells[0]['path']}/{images[0]['path']}" if images else None
            if template is not None:
                reader = FieldReader.open(files, f"{template}/0")
                if reader is not None and not reader.checksummed:
                    _warn_unverified(self.path)
            self._plates[key] = _Plate(files, attrs, template, reader)
        return self._plates[key]

    def plate(self, experiment: str, plate: int) -> PlateView:
        """The plate as one lazy array ``(row, col, site, channel, y, x)``."""
        self._plate(experiment, plate)  # a clear error for a missing plate
        return PlateView(self, experiment, int(plate))

    def plate_info(self, experiment: str, plate: int) -> PlateInfo:
        attrs = self._plate(experiment, plate).attrs.get("cellblock", {})
        return PlateInfo.from_json(attrs, str(self.plate_path(experiment, plate)))

    def omero(self, experiment: str, plate: int) -> dict:
        """The OME ``omero`` metadata (channel labels, colours, windows) of the plate's
        fields ({} if it has none)."""
        p = self._plate(experiment, plate)
        if p.template is None:
            return {}
        meta = json.loads(p.files.read(f"{p.template}/zarr.json") or b"{}")
        return meta.get("attributes", {}).get("ome", {}).get("omero", {})

    def read_site(self, experiment: str, plate: int, row: int, col: int, site: int) -> np.ndarray:
        """One site's ``(channel, y, x)`` uint8 image; ``site`` is 1-based as in RxRx1.

        A site never imaged reads as zeros.

        Raises:
            CorruptDataError: The site's stored bytes fail their checksum or do not decode;
                the message names the dataset, plate, well and site.
        """
        p = self._plate(experiment, plate)
        name = field_name(self.info.plate_format, row, col, site)
        try:
            if p.reader is not None:
                return p.reader.read(name)
            return self._read_with_zarr(p, name)  # not our layout: zarr-python reads it
        except (CorruptDataError, ValueError, RuntimeError) as err:  # zarr: ValueError on crc
            well = self.info.plate_format.well_name(row, col)
            raise CorruptDataError(
                f"{self.path}: plate {plate_key(experiment, plate)} well {well} site {site} is "
                f"damaged ({err}); re-fetch the dataset, or repack it from its PNGs "
                "(01_data/pack_zarr.py --raw RAW --out NEW)"
            ) from None

    def _read_with_zarr(self, p: _Plate, name: str) -> np.ndarray:
        import zarr
        from zarr.storage import ZipStore

        if p.files.read(f"{name}/0/zarr.json") is None:
            return np.zeros((len(self.info.channels), *self.info.image_size), np.uint8)
        zipped = p.files.path.suffix == ".ozx"
        store = ZipStore(p.files.path, mode="r") if zipped else p.files.path
        return np.asarray(zarr.open_array(store, path=f"{name}/0", mode="r")[:])


class PlateView:
    """A plate as one lazy, read-only ``(row, col, site, channel, y, x)`` uint8 array.

    Integers and slices on the first three axes choose sites (read with ``read_site``;
    sites never imaged are zeros); anything numpy takes on the rest.

    Args:
        packed: The dataset.
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.
    """

    def __init__(self, packed: PackedDataset, experiment: str, plate: int):
        self.packed, self.experiment, self.plate = packed, experiment, plate
        self.shape = packed.info.plate_shape
        self.dtype, self.ndim = np.dtype(np.uint8), len(self.shape)

    def __getitem__(self, item) -> np.ndarray:
        item = item if isinstance(item, tuple) else (item,)
        if any(i is Ellipsis for i in item):
            at = item.index(Ellipsis)
            item = item[:at] + (slice(None),) * (self.ndim - len(item) + 1) + item[at + 1 :]
        head = list(item[:3]) + [slice(None)] * max(0, 3 - len(item))
        picks: list[range | list[int]] = []
        squeeze = []
        for axis, (index, size) in enumerate(zip(head, self.shape[:3], strict=True)):
            if isinstance(index, slice):
                picks.append(range(*index.indices(size)))
            elif isinstance(index, int | np.integer) and -size <= index < size:
                picks.append([int(index) % size])
                squeeze.append(axis)
            else:
                raise IndexError(f"PlateView index {index!r} on axis {axis} (size {size})")
        out = np.zeros((*map(len, picks), *self.shape[3:]), self.dtype)
        for i, r in enumerate(picks[0]):
            for j, c in enumerate(picks[1]):
                for k, s in enumerate(picks[2]):
                    out[i, j, k] = self.packed.read_site(self.experiment, self.plate, r, c, s + 1)
        out = out.squeeze(axis=tuple(squeeze)) if squeeze else out
        return out[(slice(None),) * (3 - len(squeeze)) + tuple(item[3:])]
