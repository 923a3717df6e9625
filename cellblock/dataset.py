"""A packed dataset: ``metadata.parquet`` + ``images.zarr``. Where a plate is read.

Layout (DESIGN §2)::

    DATASET/
      metadata.parquet        one row per site (cellblock.metadata.SITE_COLUMNS)
      images.zarr/            zarr v3 group; attrs["cellblock"] = DatasetInfo
        {EXPERIMENT}/Plate{p} uint8 (row, col, site, channel, y, x)
                              chunk = one site, shard = one plate row;
                              attrs["cellblock"] = PlateInfo (cell type, statistics)

A plate array can be opened with nothing but zarr-python::

    zarr.open_array("DATASET/images.zarr/HEPG2-01/Plate1", mode="r")[1, 1, 0]  # B02, site 1

Site reads (the hot path of training and prediction) go through
``cellblock.shardread``, a minimal reader of the exact sharded layout we write,
measured ~2x faster than zarr-python per site (scripts/bench/io.py); arrays in
any other layout are read with zarr-python. Both return the same bytes.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from cellblock.errors import CorruptDataError, UserError
from cellblock.plates import PlateFormat
from cellblock.shardread import ShardReader

__all__ = [
    "DIMENSION_NAMES",
    "FORMAT_VERSION",
    "DatasetInfo",
    "PackedDataset",
    "PlateInfo",
    "plate_key",
]

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
DIMENSION_NAMES = ("row", "col", "site", "channel", "y", "x")
# RxRx1 stains and the display colours of the RxRx1 tools (rxrx.io), w1..w6.
RXRX1_CHANNELS = ("Hoechst", "ConA", "Phalloidin", "Syto14", "MitoTracker", "WGA")
RXRX1_COLORS = ("#1300f9", "#2aff1f", "#ff0019", "#2dfffc", "#fa00fd", "#feff28")


@functools.cache
def _warn_unverified(path: Path) -> None:
    """Once per dataset and process: its chunks carry no checksums (packed before them)."""
    log.warning(
        "%s: packed without chunk checksums (an older cellblock): reads are not verified; "
        "repack it (01_data/pack_zarr.py --raw RAW --out NEW) to have damage detected",
        path,
    )


def plate_key(experiment: str, plate: int) -> str:
    """Path of a plate array inside images.zarr: ``"HEPG2-01/Plate1"``."""
    return f"{experiment}/Plate{int(plate)}"


def _require(obj: dict, key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise UserError(f"{where}: missing key {key!r}")
    if not isinstance(obj[key], kind):
        raise UserError(f"{where}: key {key!r} should be {kind.__name__}, got {obj[key]!r}")
    return obj[key]


@dataclass(frozen=True)
class DatasetInfo:
    """Dataset-wide facts, stored in ``images.zarr`` attrs under ``"cellblock"``.

    Args:
        plate_wells: Wells per plate (96, 384 or 1536).
        n_sites: Sites per well.
        channels: Channel names, in order.
        colors: Display colour per channel (``#rrggbb``).
        image_size: ``(height, width)`` in pixels.
        format_version: Version of this layout.
    """

    plate_wells: int
    n_sites: int
    channels: tuple[str, ...]
    colors: tuple[str, ...]
    image_size: tuple[int, int]
    format_version: int = FORMAT_VERSION
    dimension_names: tuple[str, ...] = DIMENSION_NAMES

    @classmethod
    def for_channels(
        cls, plate_wells: int, n_sites: int, n_channels: int, image_size
    ) -> DatasetInfo:
        """RxRx1 names and colours for 6 channels, ``w1..wN`` and grey otherwise."""
        if n_channels == len(RXRX1_CHANNELS):
            names, colors = RXRX1_CHANNELS, RXRX1_COLORS
        else:
            names = tuple(f"w{i}" for i in range(1, n_channels + 1))
            colors = ("#ffffff",) * n_channels
        return cls(plate_wells, n_sites, names, colors, tuple(int(s) for s in image_size))

    @property
    def plate_format(self) -> PlateFormat:
        return PlateFormat.from_n_wells(self.plate_wells)

    @property
    def plate_shape(self) -> tuple[int, ...]:
        fmt = self.plate_format
        return (fmt.n_rows, fmt.n_cols, self.n_sites, len(self.channels), *self.image_size)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, obj: dict, where: str = "images.zarr attrs") -> DatasetInfo:
        version = _require(obj, "format_version", int, where)
        if version != FORMAT_VERSION:
            raise UserError(
                f"{where}: format_version {version}, this cellblock reads {FORMAT_VERSION}"
            )
        channels = tuple(_require(obj, "channels", list, where))
        colors = tuple(_require(obj, "colors", list, where))
        size = tuple(_require(obj, "image_size", list, where))
        if len(colors) != len(channels) or len(size) != 2:
            raise UserError(f"{where}: channels/colors/image_size are inconsistent")
        return cls(
            plate_wells=_require(obj, "plate_wells", int, where),
            n_sites=_require(obj, "n_sites", int, where),
            channels=channels,
            colors=colors,
            image_size=(int(size[0]), int(size[1])),
        )


@dataclass(frozen=True)
class PlateInfo:
    """Per-plate facts, stored in the plate array's attrs under ``"cellblock"``.

    Args:
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.
        cell_type: e.g. ``"HEPG2"``.
        split: ``"train"`` or ``"test"``.
        n_sites: Imaged sites on the plate.
        stats: ``{"all": {"mean": [...], "std": [...], "n_sites": n},
            "negative_control": {...}}``: per-channel pixel statistics over all
            imaged wells and over negative-control wells (for normalization).
        complete: True once every row of the plate has been written.
    """

    experiment: str
    plate: int
    cell_type: str
    split: str
    n_sites: int
    stats: dict = field(default_factory=dict)
    complete: bool = False

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict, where: str) -> PlateInfo:
        kwargs = {
            k: _require(obj, k, kind, where)
            for k, kind in [
                ("experiment", str),
                ("plate", int),
                ("cell_type", str),
                ("split", str),
                ("n_sites", int),
                ("stats", dict),
                ("complete", bool),
            ]
        }
        return cls(**kwargs)

    def channel_stats(self, kind: str = "all") -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(mean, std)`` over all wells or ``"negative_control"`` wells."""
        if kind not in self.stats:
            raise UserError(
                f"plate {self.experiment}/Plate{self.plate}: no {kind!r} statistics "
                f"(has {sorted(self.stats)})"
            )
        s = self.stats[kind]
        return np.asarray(s["mean"], np.float32), np.asarray(s["std"], np.float32)


class PackedDataset:
    """Read-only access to a packed dataset folder.

    Args:
        path: The dataset folder (holding ``metadata.parquet`` and ``images.zarr``).
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._readers: dict[str, ShardReader | None] = {}
        zpath = self.path / "images.zarr"
        if not (zpath / "zarr.json").is_file():
            raise UserError(f"{zpath}: not a packed dataset (run 01_data/pack_zarr.py)")
        self.root = zarr.open_group(zpath, mode="r")
        self.info = DatasetInfo.from_json(dict(self.root.attrs).get("cellblock", {}), str(zpath))

    @functools.cached_property
    def metadata(self) -> pd.DataFrame:
        path = self.path / "metadata.parquet"
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        return pd.read_parquet(path)

    def plate_keys(self) -> list[str]:
        """``"EXP/PlateN"`` of every plate array in the dataset, sorted."""
        keys = []
        for exp_name, group in self.root.groups():
            keys += [f"{exp_name}/{name}" for name, _ in group.arrays()]
        return sorted(keys)

    @functools.cache  # noqa: B019 - the dataset object lives as long as its cache
    def plate(self, experiment: str, plate: int) -> zarr.Array:
        """The plate's array ``(row, col, site, channel, y, x)``."""
        key = plate_key(experiment, plate)
        try:
            return zarr.open_array(self.root.store, path=key, mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError):
            available = ", ".join(self.plate_keys()) or "none"
            raise UserError(f"no plate {key} in {self.path}; available: {available}") from None

    def plate_info(self, experiment: str, plate: int) -> PlateInfo:
        attrs = dict(self.plate(experiment, plate).attrs).get("cellblock", {})
        return PlateInfo.from_json(attrs, f"{self.path}/images.zarr/{plate_key(experiment, plate)}")

    def _reader(self, experiment: str, plate: int) -> ShardReader | None:
        key = plate_key(experiment, plate)
        if key not in self._readers:
            self.plate(experiment, plate)  # a clear error for a missing plate
            reader = ShardReader.open(self.path / "images.zarr" / key)
            if reader is not None and not reader.checksummed:
                _warn_unverified(self.path)
            self._readers[key] = reader
        return self._readers[key]

    def read_site(self, experiment: str, plate: int, row: int, col: int, site: int) -> np.ndarray:
        """One site's ``(channel, y, x)`` uint8 image; ``site`` is 1-based as in RxRx1.

        Raises:
            CorruptDataError: The site's stored bytes fail their checksum or do not
                decode; the message names the dataset, plate, well and site.
        """
        reader = self._reader(experiment, plate)
        try:
            if reader is None:  # not our layout: zarr-python reads anything
                return self.plate(experiment, plate)[row, col, site - 1]
            return reader.read_chunk((row, col, site - 1, 0, 0, 0))[0, 0, 0]
        except (CorruptDataError, ValueError, RuntimeError) as err:  # zarr: ValueError on crc
            well = self.info.plate_format.well_name(row, col)
            raise CorruptDataError(
                f"{self.path}: plate {plate_key(experiment, plate)} well {well} site {site} is "
                f"damaged ({err}); re-fetch the dataset, or repack it from its PNGs "
                "(01_data/pack_zarr.py --raw RAW --out NEW)"
            ) from None
