"""One plate in a neuroglancer viewer: the mosaic, its channels, well names, predictions.

Layers, top to bottom in the layer panel:

``composite``            all channels in RxRx1 display colours (visible)
``Hoechst`` ... ``WGA``  one per channel (hidden; toggle to see single stains)
``wells``                a box per imaged well; hover or select it for the well's name,
                         type and sirna; controls are outlined in colour
``predictions``          (with calls) a box per called well, green correct, red wrong,
                         with predicted / true / correct as properties
"""

from __future__ import annotations

import re

import neuroglancer
import pandas as pd

from cellblock.errors import UserError
from cellblock.store.packed import PackedDataset
from cellblock.viewer.display import dataset_displays
from cellblock.viewer.layers import TileNote, add_image_layers, frame, properties, tile_layer
from cellblock.viewer.mosaic import PlateMosaic, TileGrid
from cellblock.viewer.overlay import calls_layer

__all__ = ["WELL_TYPES", "parse_plate", "show_plate", "wells_layer"]

WELL_TYPES = {"treatment": 0, "positive_control": 1, "negative_control": 2, "other": 3}
WELLS_SHADER = """
void main() {
  uint t = prop_well_type();
  if (t == 1u) setColor(vec4(1.0, 0.6, 0.0, 1.0));
  else if (t == 2u) setColor(vec4(1.0, 1.0, 1.0, 1.0));
  else setColor(vec4(0.45, 0.45, 0.45, 1.0));
  setBoundingBoxBorderWidth(1.0);
}
"""


def parse_plate(text: str) -> tuple[str, int]:
    """``"HEPG2-01/Plate1"`` -> ``("HEPG2-01", 1)``; anything else is a UserError."""
    m = re.fullmatch(r"\s*([^/\s]+)/Plate(\d+)\s*", text)
    if m is None:
        raise UserError(f"--plate {text!r}: expected EXPERIMENT/PlateN, e.g. HEPG2-01/Plate1")
    return m.group(1), int(m.group(2))


def wells_layer(
    grid: TileGrid, sites: pd.DataFrame, pixel_size_um: float | None = None
) -> neuroglancer.LocalAnnotationLayer:
    """A box per imaged well: id = well name; properties well_type, sirna (-1 unknown)."""
    specs = properties("well_type", "sirna", enums={"well_type": WELL_TYPES})
    notes = []
    for well in sites.groupby(["row", "col"], as_index=False).first().itertuples(index=False):
        sirna = -1 if pd.isna(well.sirna) else int(well.sirna)
        kind = well.well_type if well.well_type in WELL_TYPES else "other"
        label = "sirna unknown" if sirna < 0 else f"sirna {sirna}"
        notes.append(
            TileNote(
                id=well.well,
                row=int(well.row),
                col=int(well.col),
                description=f"{well.well} ({well.id_code}): {well.well_type}, {label}",
                props=[WELL_TYPES[kind], sirna],
            )
        )
    return tile_layer(grid, notes, specs, WELLS_SHADER, pixel_size_um)


def show_plate(
    viewer: neuroglancer.Viewer,
    packed: PackedDataset,
    experiment: str,
    plate: int,
    *,
    calls: pd.DataFrame | None = None,
    contrast: str = "plate",
    pixel_size_um: float | None = None,
    viewport: tuple[int, int] = (1600, 1000),
) -> PlateMosaic:
    """Replace ``viewer``'s state with the plate (module docstring lists the layers).

    Args:
        viewer: A neuroglancer viewer (its server must be running: ``server.start``).
        packed: The dataset.
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.
        calls: Per-well predictions (``overlay.load_calls``), or None.
        contrast: ``"plate"`` or ``"rxrx1"`` (``display.py``).
        pixel_size_um: Pixel size, if known (else the viewer measures in pixels).
        viewport: Expected viewer size in pixels, to fit the whole plate in view.

    Returns:
        The mosaic the viewer serves (its ``grid`` maps wells to pixels).
    """
    mosaic = PlateMosaic(packed, experiment, plate)
    displays = dataset_displays(packed, experiment, plate, contrast)
    with viewer.txn() as state:
        state.layers.clear()
        add_image_layers(state, mosaic, displays, pixel_size_um)
        state.layers["wells"] = wells_layer(mosaic.grid, mosaic.sites, pixel_size_um)
        if calls is not None:
            state.layers["predictions"] = calls_layer(mosaic.grid, calls, pixel_size_um)
        frame(state, mosaic.grid.shape, viewport, pixel_size_um)
        state.selected_layer.layer = "predictions" if calls is not None else "wells"
        state.selected_layer.visible = False
    return mosaic
