"""Neuroglancer layers for a mosaic: channel images, a composite, per-tile annotations.

Every layer lives in one 2-D coordinate space with dimensions ``x`` (right) and ``y``
(down), one unit per image pixel, or micrometres when the pixel size is known, so the
channels, the well outlines and the prediction overlay line up at any zoom.

* one ``LocalVolume`` ``(c^, y, x)`` holds all channels (``c^`` is neuroglancer's
  channel dimension); every image layer points at it, so the browser fetches each chunk
  once however many layers show it;
* ``composite``: all channels in their display colours, added and clipped (RxRx1's
  ``convert_tensor_to_rgb``, ``display.py``), one contrast control per channel;
* one layer per channel (hidden at first; toggle them on to see single stains): its
  colour and contrast are shader controls the user can change in the layer panel;
* annotation layers: one axis-aligned box per tile, with typed per-tile properties
  (well, predicted, true, ...) that the shader colours by and the selection panel lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import neuroglancer
import pandas as pd

from cellblock.viewer.display import ChannelDisplay
from cellblock.viewer.mosaic import PlateMosaic, TileGrid
from cellblock.viewer.volume import MosaicVolume

__all__ = [
    "TileNote",
    "add_image_layers",
    "annotation_table",
    "frame",
    "properties",
    "tile_layer",
    "xy_space",
]

# Whole-plate views of full-size plates need deep on-the-fly downsampling (a 384-well
# plate of 512 px sites is ~25,000 px wide); neuroglancer's default stops at 8x in 2-D.
MAX_DOWNSAMPLING = 64 * 64


def properties(
    *ids: str, types: dict[str, str] | None = None, enums: dict[str, dict[str, int]] | None = None
) -> list[neuroglancer.AnnotationPropertySpec]:
    """Annotation properties in this order: ``int32`` numbers, or other types, or enums.

    Args:
        ids: The properties' names, in the order the notes give their values.
        types: A type other than ``int32`` for some (``{"confidence": "float32"}``).
        enums: ``uint8`` enums for some, ``{label: value}`` (neuroglancer shows the label).
    """
    types, enums = types or {}, enums or {}

    def spec(name: str) -> neuroglancer.AnnotationPropertySpec:
        if name not in enums:
            return neuroglancer.AnnotationPropertySpec(id=name, type=types.get(name, "int32"))
        labels, values = list(enums[name]), list(enums[name].values())
        return neuroglancer.AnnotationPropertySpec(
            id=name, type="uint8", enum_values=values, enum_labels=labels
        )

    return [spec(name) for name in ids]


def xy_space(pixel_size_um: float | None = None, names=("x", "y")) -> neuroglancer.CoordinateSpace:
    """The viewer's 2-D space: pixels, or micrometres if ``pixel_size_um`` is given."""
    if pixel_size_um is None:
        return neuroglancer.CoordinateSpace(names=list(names), units="", scales=[1] * len(names))
    return neuroglancer.CoordinateSpace(
        names=list(names), units="m", scales=[pixel_size_um * 1e-6] * len(names)
    )


def _number(value: float) -> str:
    return f"{value:.6g}"


def _vec3(rgb: Sequence[float]) -> str:
    return "vec3({})".format(", ".join(f"{c:.4f}" for c in rgb))


def channel_shader(display: ChannelDisplay) -> str:
    """One channel in its colour; colour and range are user controls."""
    return (
        f'#uicontrol vec3 color color(default="{display.color}")\n'
        f"#uicontrol invlerp level(range=[{_number(display.low)}, {_number(display.high)}], "
        f"channel=[{display.index}])\n"
        "void main() {\n  emitRGB(color * clamp(level(), 0.0, 1.0));\n}\n"
    )


def composite_shader(displays: Sequence[ChannelDisplay]) -> str:
    """All channels: colour x clipped level, summed and clipped (``composite_rgb``)."""
    controls = "".join(
        f"#uicontrol invlerp {d.ident}(range=[{_number(d.low)}, {_number(d.high)}], "
        f"channel=[{d.index}])\n"
        for d in displays
    )
    terms = "".join(f"  rgb += {_vec3(d.rgb)} * clamp({d.ident}(), 0.0, 1.0);\n" for d in displays)
    return (
        controls
        + "void main() {\n  vec3 rgb = vec3(0.0);\n"
        + terms
        + "  emitRGB(min(rgb, vec3(1.0)));\n}\n"
    )


def add_image_layers(
    state: neuroglancer.ViewerState,
    data,
    displays: Sequence[ChannelDisplay],
    pixel_size_um: float | None = None,
) -> neuroglancer.LocalVolume:
    """Add the ``composite`` layer and one layer per channel of ``data``.

    Args:
        state: The state being edited (inside ``viewer.txn()``).
        data: ``(channel, y, x)`` array or array-like (``PlateMosaic``).
        displays: Colour and range of each channel to show.
        pixel_size_um: Pixel size, if known (else pixel units).

    Returns:
        The volume the layers share.
    """
    space = xy_space(pixel_size_um, names=("y", "x"))
    dimensions = neuroglancer.CoordinateSpace(
        names=["c^", *space.names], units=["", *space.units], scales=[1, *space.scales]
    )
    kind = MosaicVolume if isinstance(data, PlateMosaic) else neuroglancer.LocalVolume
    volume = kind(
        data, dimensions=dimensions, volume_type="image", max_downsampling=MAX_DOWNSAMPLING
    )
    # opacity 1: neuroglancer's default 0.5 would halve a stain drawn over another layer
    state.layers["composite"] = neuroglancer.ImageLayer(
        source=volume, shader=composite_shader(displays), opacity=1.0
    )
    for d in displays:
        state.layers[d.name] = neuroglancer.ImageLayer(
            source=volume, shader=channel_shader(d), blend="additive", opacity=1.0
        )
        state.layers[d.name].visible = False
    return volume


@dataclass(frozen=True)
class TileNote:
    """An annotation box around one tile.

    Args:
        id: Unique id (well name, item number).
        row: Tile row.
        col: Tile column.
        description: Shown on hover and in the selection panel.
        props: One value per property of the layer, in order.
    """

    id: str
    row: int
    col: int
    description: str
    props: list = field(default_factory=list)


def tile_layer(
    grid: TileGrid,
    notes: Sequence[TileNote],
    properties: Sequence[neuroglancer.AnnotationPropertySpec],
    shader: str,
    pixel_size_um: float | None = None,
) -> neuroglancer.LocalAnnotationLayer:
    """A local annotation layer with one box per note around its tile.

    Args:
        grid: The mosaic's geometry.
        notes: The boxes.
        properties: Typed per-box properties (``props`` of each note, in this order).
        shader: Annotation shader (``prop_<id>()`` reads a property).
        pixel_size_um: As for the image layers.
    """
    annotations = []
    for note in notes:
        y0, x0, y1, x1 = grid.tile_box(note.row, note.col)
        annotations.append(
            neuroglancer.AxisAlignedBoundingBoxAnnotation(
                id=note.id,
                point_a=[x0, y0],
                point_b=[x1, y1],
                description=note.description,
                props=list(note.props),
            )
        )
    return neuroglancer.LocalAnnotationLayer(
        dimensions=xy_space(pixel_size_um),
        annotation_properties=list(properties),
        annotations=annotations,
        shader=shader,
    )


def annotation_table(layer) -> pd.DataFrame:
    """A local annotation layer's boxes as a table: ``id``, ``description`` + properties.

    Args:
        layer: ``state.layers[name]`` of a ``LocalAnnotationLayer``.
    """
    names = [p.id for p in layer.annotation_properties]
    rows = [
        {"id": a.id, "description": a.description, **dict(zip(names, a.props, strict=True))}
        for a in layer.annotations
    ]
    return pd.DataFrame(rows, columns=["id", "description", *names])


def frame(
    state: neuroglancer.ViewerState,
    shape: tuple[int, int],
    viewport: tuple[int, int] = (1600, 1000),
    pixel_size_um: float | None = None,
) -> None:
    """Show the whole ``(height, width)`` mosaic in one 2-D panel of ``viewport`` pixels."""
    height, width = shape
    state.dimensions = xy_space(pixel_size_um)
    state.layout = "xy"
    state.position = [width / 2, height / 2]
    # crossSectionScale: data units per screen pixel; a little margin around the plate.
    state.cross_section_scale = max(width / viewport[0], height / viewport[1]) * 1.03
    state.show_axis_lines = False
    state.show_default_annotations = False
    state.cross_section_background_color = "#202020"
