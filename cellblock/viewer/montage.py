"""A static overview PNG of a plate, for users without a browser.

The plate as in the viewer (wells in plate layout, sites side by side), each site
shrunk to ``site_px`` pixels and coloured like the viewer's composite
(``display.composite_rgb``); rows and columns labelled with well names; with calls,
each well outlined green (correct) or red (wrong) and the accuracy in the title.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed, and none is here in batch jobs

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch, Rectangle
from PIL import Image

from cellblock.atomic import atomic_path
from cellblock.screen.plates import PlateFormat, plate_key
from cellblock.store.packed import PackedDataset
from cellblock.viewer.display import composite_rgb, dataset_displays
from cellblock.viewer.mosaic import PlateMosaic, TileGrid
from cellblock.viewer.overlay import summarize_calls

__all__ = ["CALL_COLORS", "montage_image", "plate_montage"]

log = logging.getLogger(__name__)
CALL_COLORS = {"correct": "#19f233", "wrong": "#ff1a1a", "unknown": "#999999"}


def montage_image(
    packed: PackedDataset, experiment: str, plate: int, site_px: int = 64, contrast: str = "plate"
) -> tuple[np.ndarray, TileGrid]:
    """The plate's composite at reduced size.

    Args:
        packed: The dataset.
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.
        site_px: Longest side of a site in the overview, in pixels (never enlarged).
        contrast: ``"plate"`` or ``"rxrx1"`` (``display.py``).

    Returns:
        ``(rgb (Y, X, 3) uint8, grid)``: the overview and its geometry.
    """
    mosaic = PlateMosaic(packed, experiment, plate, cache_bytes=0)
    displays = dataset_displays(packed, experiment, plate, contrast)
    height, width = packed.info.image_size
    scale = max(1, -(-max(height, width) // site_px))
    grid = TileGrid.for_plate(packed.info.plate_shape, scale)
    out = np.zeros((*grid.shape, 3), np.uint8)
    for row, col, site in sorted(mosaic.imaged):
        rgb = composite_rgb(packed.read_site(experiment, plate, row, col, site), displays)
        small = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8))
        if scale > 1:  # BOX: the mean of each block, as the viewer downsamples
            small = small.resize((grid.width, grid.height), Image.Resampling.BOX)
        y, x = grid.site_origin(row, col, site)
        out[y : y + grid.height, x : x + grid.width] = np.asarray(small)
    return out, grid


def _outline_calls(ax: plt.Axes, grid: TileGrid, calls: pd.DataFrame) -> None:
    """Outline each called well in its call's colour, with a legend.

    Args:
        ax: The montage's axes.
        grid: The montage's tile grid.
        calls: Per-well predictions (``overlay.load_calls``).
    """
    for call in calls.itertuples(index=False):
        y0, x0, y1, x1 = grid.tile_box(int(call.row), int(call.col))
        # on the well's edge: neighbours' outlines stay a gap apart
        ax.add_patch(
            Rectangle(
                (x0 - 0.5, y0 - 0.5),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=CALL_COLORS[call.correct],
                linewidth=1.5,
            )
        )
    ax.legend(
        handles=[Patch(edgecolor=c, facecolor="none", label=k) for k, c in CALL_COLORS.items()],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=7,
        frameon=False,
    )


def plate_montage(
    packed: PackedDataset,
    experiment: str,
    plate: int,
    out: Path | str,
    *,
    calls: pd.DataFrame | None = None,
    site_px: int = 64,
    contrast: str = "plate",
) -> Path:
    """Write the plate overview PNG (atomically).

    Args:
        packed: The dataset.
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.
        out: The PNG to write.
        calls: Per-well predictions (``overlay.load_calls``) to outline, or None.
        site_px: Size of a site in the overview (``montage_image``).
        contrast: ``"plate"`` or ``"rxrx1"``.

    Returns:
        ``out``.
    """
    image, grid = montage_image(packed, experiment, plate, site_px, contrast)
    fmt = PlateFormat(grid.n_rows, grid.n_cols)
    dpi = 100
    fig_w, fig_h = image.shape[1] / dpi + 1.2, image.shape[0] / dpi + 1.2
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=dpi)
    try:
        ax.imshow(image, interpolation="nearest")
        step_c, step_r = max(1, grid.n_cols // 24), max(1, grid.n_rows // 16)
        cols, rows = range(0, grid.n_cols, step_c), range(0, grid.n_rows, step_r)
        ax.set_xticks([grid.tile_origin(0, c)[1] + grid.tile_width / 2 for c in cols])
        ax.set_xticklabels([f"{c + 1:02d}" for c in cols], fontsize=7)
        ax.set_yticks([grid.tile_origin(r, 0)[0] + grid.tile_height / 2 for r in rows])
        ax.set_yticklabels([fmt.well_name(r, 0)[:-2] for r in rows], fontsize=7)
        ax.tick_params(length=0)
        ax.xaxis.tick_top()
        info = packed.plate_info(experiment, plate)
        title = f"{plate_key(experiment, plate)}  ({info.cell_type}, {info.split})"
        if calls is not None:
            title += f"\npredictions: {summarize_calls(calls)}"
            _outline_calls(ax, grid, calls)
        ax.set_title(title, fontsize=9, pad=14)
        for spine in ax.spines.values():
            spine.set_visible(False)
        fig.tight_layout()
        out = Path(out)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    finally:
        plt.close(fig)
    log.info("wrote %s", out)
    return out
