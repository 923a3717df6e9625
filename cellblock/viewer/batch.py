"""A training batch snapshot in neuroglancer: the inputs, with labels and predictions.

The batch's items are laid out on a grid, row-major in batch order, each shown as the
network saw it (augmented and normalized; contrast from the batch's own percentiles).
An ``items`` annotation layer boxes every item, green where the prediction matched the
label, red where not, grey when unlabelled, with ``index``, ``label``, ``predicted``,
``correct`` and ``site`` as properties and the well's id_code in its description.
"""

from __future__ import annotations

import neuroglancer
import numpy as np

from cellblock.store.packed import DatasetInfo
from cellblock.training.snapshots import Snapshot
from cellblock.viewer.display import snapshot_displays
from cellblock.viewer.layers import TileNote, add_image_layers, frame, properties, tile_layer
from cellblock.viewer.mosaic import TileGrid, tile_images
from cellblock.viewer.overlay import CALLS_SHADER, CORRECT

__all__ = ["item_table", "show_snapshot"]

UNKNOWN = -1


def _class_ids(indices: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Class indices -> sirna ids (``classes``), keeping -1 (unlabelled)."""
    indices = np.asarray(indices, np.int64)
    if not classes:
        return indices
    lookup = np.asarray(classes, np.int64)
    valid = (indices >= 0) & (indices < len(lookup))
    return np.where(valid, lookup[np.clip(indices, 0, len(lookup) - 1)], UNKNOWN)


def item_table(snapshot: Snapshot) -> list[dict]:
    """Per item: index, id_code, site, label and predicted sirna ids, correct."""
    labels = _class_ids(snapshot.labels, snapshot.classes)
    predicted = _class_ids(snapshot.predicted, snapshot.classes)
    items = []
    for i in range(len(snapshot.labels)):
        if snapshot.labels[i] < 0:
            correct = "unknown"
        else:
            correct = "correct" if snapshot.predicted[i] == snapshot.labels[i] else "wrong"
        items.append(
            {
                "index": i,
                "id_code": snapshot.id_code[i],
                "site": int(snapshot.site[i]),
                "label": int(labels[i]),
                "predicted": int(predicted[i]),
                "correct": correct,
            }
        )
    return items


def _items_layer(grid: TileGrid, snapshot: Snapshot) -> neuroglancer.LocalAnnotationLayer:
    specs = properties("index", "label", "predicted", "correct", "site", enums={"correct": CORRECT})
    notes = []
    for item in item_table(snapshot):
        label = "unlabelled" if item["label"] == UNKNOWN else f"label {item['label']}"
        row, col = divmod(item["index"], grid.n_cols)
        notes.append(
            TileNote(
                id=str(item["index"]),
                row=row,
                col=col,
                description=f"#{item['index']} {item['id_code']} s{item['site']}: {label}, "
                f"predicted {item['predicted']} ({item['correct']})",
                props=[
                    item["index"],
                    item["label"],
                    item["predicted"],
                    CORRECT[item["correct"]],
                    item["site"],
                ],
            )
        )
    return tile_layer(grid, notes, specs, CALLS_SHADER)


def show_snapshot(
    viewer: neuroglancer.Viewer,
    snapshot: Snapshot,
    info: DatasetInfo | None = None,
    viewport: tuple[int, int] = (1600, 1000),
) -> TileGrid:
    """Replace ``viewer``'s state with the snapshot's batch.

    Args:
        viewer: A neuroglancer viewer (its server must be running).
        snapshot: From ``cellblock.training.snapshots.read_snapshot``.
        info: The dataset's info, for channel names and colours (optional).
        viewport: Expected viewer size, to fit the batch in view.

    Returns:
        The grid of items.
    """
    displays = snapshot_displays(snapshot.inputs, snapshot.channels, info)
    black = [d.low for d in displays]  # gaps black, though normalized inputs are 0 at mean
    mosaic, grid = tile_images(np.asarray(snapshot.inputs, np.float32), fill=black)
    with viewer.txn() as state:
        state.layers.clear()
        add_image_layers(state, mosaic, displays)
        state.layers["items"] = _items_layer(grid, snapshot)
        frame(state, grid.shape, viewport)
    return grid
