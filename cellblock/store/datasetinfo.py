"""What a packed dataset and its plates record about themselves (``cellblock.store.packed``).

``DatasetInfo`` lives in ``images.zarr/zarr.json`` and ``PlateInfo`` in each plate's
``zarr.json``, both under the ``"cellblock"`` attribute key, beside the OME-Zarr
``"ome"`` metadata::

    images.zarr/zarr.json        {"attributes": {"cellblock": DatasetInfo}}
    images.zarr/EXP/Plate1/zarr.json
                                 {"attributes": {"ome": {"plate": ...},
                                                 "cellblock": PlateInfo}}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cellblock.errors import UserError
from cellblock.screen.plates import PlateFormat
from cellblock.store.platestore import STORES

__all__ = [
    "FORMAT_VERSION",
    "RXRX1_CHANNELS",
    "RXRX1_COLORS",
    "UPGRADE_HINT",
    "DatasetInfo",
    "PlateInfo",
]

FORMAT_VERSION = 2  # 1: one 6-D sharded array per plate (01_data/pack_zarr.py --upgrade)
# RxRx1 stains and the display colours of rxrx1-utils (rxrx/io.py RGB_MAP), w1..w6.
RXRX1_CHANNELS = ("Hoechst", "ConA", "Phalloidin", "Syto14", "MitoTracker", "WGA")
RXRX1_COLORS = ("#1300f9", "#2aff1f", "#ff0019", "#2dfffc", "#fa00fd", "#feff28")
UPGRADE_HINT = "convert it with 01_data/pack_zarr.py --upgrade DATASET"


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
        store: How plates are stored: ``"directory"`` or ``"zip"`` (``platestore``).
        pixel_size_um: Pixel size in micrometres, if known.
        format_version: Version of this layout.
    """

    plate_wells: int
    n_sites: int
    channels: tuple[str, ...]
    colors: tuple[str, ...]
    image_size: tuple[int, int]
    store: str = "directory"
    pixel_size_um: float | None = None
    format_version: int = FORMAT_VERSION

    @classmethod
    def for_channels(
        cls, plate_wells: int, n_sites: int, n_channels: int, image_size, **kwargs
    ) -> DatasetInfo:
        """RxRx1 names and colours for 6 channels, ``w1..wN`` and grey otherwise.

        Args:
            plate_wells: Wells per plate.
            n_sites: Sites per well.
            n_channels: Channels per site.
            image_size: ``(height, width)``.
            **kwargs: ``store``, ``pixel_size_um``.
        """
        names: tuple[str, ...]
        colors: tuple[str, ...]
        if n_channels == len(RXRX1_CHANNELS):
            names, colors = RXRX1_CHANNELS, RXRX1_COLORS
        else:
            names = tuple(f"w{i}" for i in range(1, n_channels + 1))
            colors = ("#ffffff",) * n_channels
        size = tuple(int(s) for s in image_size)
        return cls(plate_wells, n_sites, names, colors, size, **kwargs)  # type: ignore[arg-type]

    @property
    def plate_format(self) -> PlateFormat:
        return PlateFormat.from_n_wells(self.plate_wells)

    @property
    def plate_shape(self) -> tuple[int, ...]:
        """``(rows, cols, sites, channels, height, width)``: a plate's ``PlateView``."""
        fmt = self.plate_format
        return (fmt.n_rows, fmt.n_cols, self.n_sites, len(self.channels), *self.image_size)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(
        cls, obj: dict, where: str = "images.zarr attrs", version: int = FORMAT_VERSION
    ) -> DatasetInfo:
        """Parse and check; ``version`` 1 reads a dataset of the previous layout."""
        found = _require(obj, "format_version", int, where)
        if found != version:
            hint = f"; {UPGRADE_HINT}" if found == 1 else ""
            raise UserError(
                f"{where}: format_version {found}, this cellblock reads {version}{hint}"
            )
        channels = tuple(_require(obj, "channels", list, where))
        colors = tuple(_require(obj, "colors", list, where))
        size = tuple(_require(obj, "image_size", list, where))
        store = obj.get("store", "directory")
        if len(colors) != len(channels) or len(size) != 2 or store not in STORES:
            raise UserError(f"{where}: channels/colors/image_size/store are inconsistent")
        pixel = obj.get("pixel_size_um")
        return cls(
            plate_wells=_require(obj, "plate_wells", int, where),
            n_sites=_require(obj, "n_sites", int, where),
            channels=channels,
            colors=colors,
            image_size=(int(size[0]), int(size[1])),
            store=store,
            pixel_size_um=float(pixel) if pixel else None,
        )


@dataclass(frozen=True)
class PlateInfo:
    """Per-plate facts, stored in the plate group's attrs under ``"cellblock"``.

    Args:
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.
        cell_type: e.g. ``"HEPG2"``.
        split: ``"train"`` or ``"test"``.
        n_sites: Imaged sites on the plate.
        stats: ``{"all": {"mean": [...], "std": [...], "n_pixels": n},
            "negative_control": {...}}``: per-channel pixel statistics over all
            imaged wells and over negative-control wells (for normalization).
        complete: True once every field of the plate has been written.
        member_bytes: Bytes of the plate's members but its own ``zarr.json``, counted
            while writing (the dataset's size without walking its files); None in
            plates packed before it was recorded.
    """

    experiment: str
    plate: int
    cell_type: str
    split: str
    n_sites: int
    stats: dict = field(default_factory=dict)
    complete: bool = False
    member_bytes: int | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict, where: str) -> PlateInfo:
        kinds = [
            ("experiment", str),
            ("plate", int),
            ("cell_type", str),
            ("split", str),
            ("n_sites", int),
            ("stats", dict),
            ("complete", bool),
        ]
        size = obj.get("member_bytes")
        return cls(
            **{k: _require(obj, k, kind, where) for k, kind in kinds},
            member_bytes=size if isinstance(size, int) else None,
        )

    def channel_stats(self, kind: str = "all") -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(mean, std)`` over all wells or ``"negative_control"`` wells."""
        if kind not in self.stats:
            raise UserError(
                f"plate {self.experiment}/Plate{self.plate}: no {kind!r} "
                f"statistics (has {sorted(self.stats)})"
            )
        s = self.stats[kind]
        return np.asarray(s["mean"], np.float32), np.asarray(s["std"], np.float32)
