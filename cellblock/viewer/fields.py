"""A plate in neuroglancer through its own ``zarr3://`` OME-Zarr source, no Python volume.

``view_data.py --serve`` serves the dataset folder (``dataserver``) and points a
viewer at the plate's fields there; the browser reads the fields itself, every
pyramid level, exactly as any neuroglancer (or another OME-Zarr viewer) would::

    layer "fields": one image layer; its sources are the plate's fields, each placed
      zarr3://http://127.0.0.1:P/images.zarr/EXP/Plate1/B/02/0/         (folder plates)
      http://127.0.0.1:P/images.zarr/EXP/Plate1.ozx|zip:B/02/0/|zarr3:   (zipped plates)
    at its well in plate layout (sites side by side, ``mosaic.TileGrid``), its OME
    channel axis ``c'`` made the shader's channel axis ``c^``; shader: the composite of
    the OME channels (labels, colours, windows from ``ome.omero``, ``display``).

One layer with a source per field, not a layer per field: a 308-well plate has 616
fields, and one shader and one layer entry serve them all.
"""

from __future__ import annotations

from collections.abc import Iterable

import neuroglancer
import pandas as pd

from cellblock.screen.plates import plate_key
from cellblock.store.omezarr import field_name
from cellblock.store.packed import PackedDataset
from cellblock.viewer.display import ChannelDisplay, dataset_displays
from cellblock.viewer.layers import composite_shader, xy_space
from cellblock.viewer.mosaic import TileGrid

__all__ = ["field_url", "show_fields"]


def field_url(packed: PackedDataset, base_url: str, experiment: str, plate: int, field: str) -> str:
    """neuroglancer's URL of one field (an OME-Zarr image) served at ``base_url``.

    Args:
        packed: The dataset (its store: folder or zipped plates).
        base_url: Where the dataset folder is served, e.g. ``http://127.0.0.1:8123``.
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.
        field: The field's path in the plate, e.g. ``"B/02/0"``.
    """
    key = plate_key(experiment, plate)
    if packed.info.store == "zip":
        return f"{base_url}/images.zarr/{key}.ozx|zip:{field}/|zarr3:"
    return f"zarr3://{base_url}/images.zarr/{key}/{field}/"


def _space(packed: PackedDataset) -> tuple[list[str], list[float]]:
    """Units and scales of the y and x axes as neuroglancer reads the OME axes."""
    px = packed.info.pixel_size_um
    return (["m", "m"], [px * 1e-6, px * 1e-6]) if px else (["", ""], [1.0, 1.0])


def _field_sources(
    packed: PackedDataset, sites: pd.DataFrame, grid: TileGrid, base_url: str
) -> tuple[list[neuroglancer.LayerDataSource], list[tuple[int, int]]]:
    """A ``zarr3://`` source per site, placed in the plate layout, and each one's origin.

    Args:
        packed: The dataset.
        sites: The site-table rows of the fields shown (one plate).
        grid: The plate's tile grid.
        base_url: Where the dataset folder is served.
    """
    fmt = packed.info.plate_format
    units, scales = _space(packed)
    out_dims = neuroglancer.CoordinateSpace(
        names=["c^", "y", "x"], units=["", *units], scales=[1, *scales]
    )
    sources, boxes = [], []
    for s in sites.itertuples():
        y, x = grid.site_origin(int(s.row), int(s.col), int(s.site))
        boxes.append((y, x))
        # OME puts a pixel's centre on its coordinate, neuroglancer its corner: +0.5
        matrix = [[1, 0, 0, 0], [0, 1, 0, y + 0.5], [0, 0, 1, x + 0.5]]
        url = field_url(
            packed,
            base_url,
            str(s.experiment),
            int(s.plate),
            field_name(fmt, int(s.row), int(s.col), int(s.site)),
        )
        sources.append(
            neuroglancer.LayerDataSource(
                url=url,
                transform=neuroglancer.CoordinateSpaceTransform(
                    output_dimensions=out_dims, matrix=matrix
                ),
            )
        )
    return sources, boxes


def show_fields(
    viewer: neuroglancer.Viewer,
    packed: PackedDataset,
    experiment: str,
    plate: int,
    base_url: str,
    *,
    wells: Iterable[str] | None = None,
    contrast: str = "plate",
    viewport: tuple[int, int] = (1280, 720),
) -> list[ChannelDisplay]:
    """Replace ``viewer``'s state with the plate's fields as ``zarr3://`` sources.

    Args:
        viewer: A neuroglancer viewer (its server running).
        packed: The dataset.
        experiment: e.g. ``"HEPG2-01"``.
        plate: 1-based plate number.
        base_url: Where the dataset folder is served (``DataServer.url``).
        wells: Only these wells (e.g. ``["B02", "C03"]``); default all imaged wells.
        contrast: ``"plate"`` or ``"rxrx1"`` (``display``).
        viewport: Viewer size in pixels, to frame the wells shown.

    Returns:
        The channel displays of the composite shader.
    """
    meta = packed.metadata
    sites = meta[(meta.experiment == experiment) & (meta.plate == int(plate))]
    if wells is not None:
        sites = sites[sites.well.isin(set(wells))]
    grid = TileGrid.for_plate(packed.info.plate_shape)
    sources, boxes = _field_sources(packed, sites, grid, base_url)
    displays = dataset_displays(packed, experiment, plate, contrast)
    with viewer.txn() as state:
        state.layers.clear()
        state.layers["fields"] = neuroglancer.ImageLayer(
            source=sources, shader=composite_shader(displays), opacity=1.0
        )
        state.dimensions = xy_space(packed.info.pixel_size_um)
        state.layout = "xy"
        if boxes:
            y0, x0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
            y1, x1 = max(b[0] for b in boxes) + grid.height, max(b[1] for b in boxes) + grid.width
            state.position = [(x0 + x1) / 2, (y0 + y1) / 2]
            state.cross_section_scale = max((x1 - x0) / viewport[0], (y1 - y0) / viewport[1]) * 1.05
        state.show_axis_lines = False
        state.show_default_annotations = False
        state.cross_section_background_color = "#202020"
    return displays
