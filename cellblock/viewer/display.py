"""How channels are shown: a colour and an intensity range per channel, summed to RGB.

This is RxRx1's own recipe (``rxrx.io.convert_tensor_to_rgb`` of the rxrx1-utils
starter code): each channel is scaled by its range, clipped to [0, 1], multiplied by its
display colour, and the coloured channels are added and clipped. The neuroglancer layers
(``layers.py``) and the static montage (``montage.py``) both use it, so the browser and
the PNG show the same colours.

Names, colours and ranges come from the plate's OME metadata (``ome.omero`` of its
fields: labels, colours, windows; ``dataset_displays``), the same metadata napari and
neuroglancer's own OME-Zarr reader show. Ranges:
    ``plate``   (default) the OME windows, ``[mean - std / 2, mean + 3 std]`` of the
                plate's own pixel statistics (``omezarr.windows``, written by pack): the
                background (about the median of a fluorescence image, a little under the
                mean) black, bright structures at full colour; every well of a plate on
                the same scale, so failing wells and gradients across the plate show.
    ``rxrx1``   the fixed ranges of rxrx1-utils (same scale on every plate, so plates
                compare; meant for real RxRx1 images).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from cellblock.errors import UserError
from cellblock.store.omezarr import windows
from cellblock.store.packed import (
    RXRX1_CHANNELS,
    RXRX1_COLORS,
    DatasetInfo,
    PackedDataset,
    PlateInfo,
)

__all__ = [
    "CONTRASTS",
    "ChannelDisplay",
    "composite_rgb",
    "dataset_displays",
    "ome_displays",
    "percentile_displays",
    "plate_displays",
    "snapshot_displays",
]

CONTRASTS = ("plate", "rxrx1")
# rxrx1-utils RGB_MAP ranges, channels w1..w6 (all start at 0).
RXRX1_RANGES = (51.0, 107.0, 64.0, 191.0, 89.0, 191.0)


@dataclass(frozen=True)
class ChannelDisplay:
    """Display of one channel.

    Args:
        index: Position of the channel in the data (0-based).
        name: Channel name, e.g. ``"Hoechst"``.
        color: ``#rrggbb``.
        low: Value shown black.
        high: Value shown at full colour.
    """

    index: int
    name: str
    color: str
    low: float
    high: float

    @property
    def rgb(self) -> tuple[float, float, float]:
        """The colour as three floats in [0, 1]."""
        value = self.color.lstrip("#")
        r, g, b = (int(value[i : i + 2], 16) / 255 for i in (0, 2, 4))
        return r, g, b

    @property
    def ident(self) -> str:
        """The name as a shader control name: ``"hoechst"``, ``"w1"``, ``"ch_3"``.

        Lower case: neuroglancer rejects a shader whose control names start with a
        capital letter, and silently falls back to its grey default shader.
        """
        ident = re.sub(r"\W", "_", self.name.lower())
        return ident if re.match(r"[a-z]", ident) else f"ch_{ident}"


def plate_displays(
    info: DatasetInfo, plate_info: PlateInfo | None, contrast: str = "plate"
) -> list[ChannelDisplay]:
    """The displays of a packed plate's channels.

    Args:
        info: The dataset's info (names, colours).
        plate_info: The plate's info (pixel statistics), for ``contrast="plate"``.
        contrast: ``"plate"`` or ``"rxrx1"`` (module docstring).
    """
    if contrast not in CONTRASTS:
        raise UserError(f"contrast {contrast!r}: expected one of {', '.join(CONTRASTS)}")
    n = len(info.channels)
    window = windows(plate_info.stats if plate_info is not None else {}, n)  # as pack writes
    return _ranged([ChannelDisplay(i, info.channels[i], info.colors[i], *window[i])
                    for i in range(n)], contrast)  # fmt: skip


def _ranged(displays: list[ChannelDisplay], contrast: str) -> list[ChannelDisplay]:
    if contrast != "rxrx1":
        return displays
    if tuple(d.name for d in displays) != RXRX1_CHANNELS:
        names = tuple(d.name for d in displays)
        raise UserError(f"contrast 'rxrx1' needs the 6 RxRx1 channels, not {names}")
    return [ChannelDisplay(d.index, d.name, d.color, 0.0, high)
            for d, high in zip(displays, RXRX1_RANGES, strict=True)]  # fmt: skip


def ome_displays(omero: dict, contrast: str = "plate") -> list[ChannelDisplay]:
    """The displays an OME ``omero`` block describes (labels, colours, windows).

    Args:
        omero: ``ome.omero`` of a field (``{"channels": [{"label", "color", "window"}]}``).
        contrast: ``"plate"`` (the windows) or ``"rxrx1"`` (module docstring).
    """
    if contrast not in CONTRASTS:
        raise UserError(f"contrast {contrast!r}: expected one of {', '.join(CONTRASTS)}")
    out = []
    for i, ch in enumerate(omero["channels"]):
        window = ch.get("window", {})
        low, high = float(window.get("start", 0.0)), float(window.get("end", 255.0))
        color = "#" + str(ch.get("color", "FFFFFF")).lower()
        out.append(ChannelDisplay(i, str(ch.get("label", f"w{i + 1}")), color, low,
                                  high if high > low else low + 1.0))  # fmt: skip
    return _ranged(out, contrast)


def dataset_displays(
    packed: PackedDataset, experiment: str, plate: int, contrast: str = "plate"
) -> list[ChannelDisplay]:
    """A packed plate's displays, from its OME metadata (else its cellblock attributes).

    Args:
        packed: The dataset.
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.
        contrast: ``"plate"`` or ``"rxrx1"``.
    """
    omero = packed.omero(experiment, plate)
    if omero.get("channels") and len(omero["channels"]) == len(packed.info.channels):
        return ome_displays(omero, contrast)
    return plate_displays(packed.info, packed.plate_info(experiment, plate), contrast)


def percentile_displays(
    data: np.ndarray, names, colors, low_pct: float = 1.0, high_pct: float = 99.5
) -> list[ChannelDisplay]:
    """Displays from the data's own percentiles, for float inputs (normalized batches).

    Args:
        data: ``(..., C, H, W)``; channel axis third from last.
        names: Channel names.
        colors: ``#rrggbb`` per channel.
        low_pct: Percentile shown black.
        high_pct: Percentile shown at full colour.
    """
    out = []
    for i, (name, color) in enumerate(zip(names, colors, strict=True)):
        values = np.asarray(data[..., i, :, :], np.float64).ravel()
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [low_pct, high_pct]) if values.size else (0.0, 1.0)
        high = high if high > low else low + 1.0
        out.append(ChannelDisplay(i, name, color, float(low), float(high)))
    return out


def snapshot_displays(
    inputs: np.ndarray, channels, info: DatasetInfo | None = None
) -> list[ChannelDisplay]:
    """Displays of a batch snapshot's inputs (``channels``: 1-based dataset channels).

    Names and colours come from ``info`` when given, else RxRx1's when every channel is
    one of RxRx1's six, else ``w<k>`` in white.
    """
    if info is not None:
        if max(channels) > len(info.channels):
            raise UserError(
                f"snapshot channels {list(channels)} do not fit the dataset's "
                f"{len(info.channels)} channels"
            )
        names = [info.channels[c - 1] for c in channels]
        colors = [info.colors[c - 1] for c in channels]
    elif max(channels) <= len(RXRX1_CHANNELS):
        names = [RXRX1_CHANNELS[c - 1] for c in channels]
        colors = [RXRX1_COLORS[c - 1] for c in channels]
    else:
        names, colors = [f"w{c}" for c in channels], ["#ffffff"] * len(channels)
    return percentile_displays(inputs, names, colors)


def composite_rgb(image: np.ndarray, displays: list[ChannelDisplay]) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W, 3)`` float32 in [0, 1], RxRx1-style (module docstring)."""
    rgb = np.zeros((*image.shape[-2:], 3), np.float32)
    for d in displays:
        level = (image[d.index].astype(np.float32) - d.low) / (d.high - d.low)
        rgb += np.clip(level, 0.0, 1.0)[..., None] * np.asarray(d.rgb, np.float32)
    return np.clip(rgb, 0.0, 1.0)
