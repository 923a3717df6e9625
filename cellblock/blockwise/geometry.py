"""Where the blocks are: plates x rows x columns, tiled into blocks of wells of one plate.

The total ROI is ``(plate, row, col)``: axis 0 indexes the selected plates (sorted
``"EXP/PlateN"`` keys), axes 1-2 span the bounding box of the wells those plates use
(RxRx1: rows B-O, columns 02-23). A block is ``(1, rows, cols)`` wells of one plate:
one plate row of ``--block-wells`` columns, or whole rows when ``--block-wells`` is at
least the row's width. The predictions store chunks one well per chunk and the packed
dataset shards one plate row per shard, so a block writes whole chunks (two workers
never touch one) and reads whole or partial shards of a single plate row.

Blocks holding no selected well are masked (daisy's ``skip_mask``): no worker ever
sees them, so the task covers only the wells that exist.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cellblock.errors import UserError
from cellblock.screen.plates import plate_key

__all__ = ["BlockGrid", "block_shape"]

Well = tuple[int, int]


def block_shape(
    block_wells: int | None, n_cols: int, *, rows_for_a_batch: int = 1
) -> tuple[int, int, int]:
    """``(1, rows, cols)`` of a block of about ``block_wells`` wells.

    Args:
        block_wells: Wells per block; None = ``rows_for_a_batch`` rows of the bounding box.
        n_cols: Columns of the bounding box.
        rows_for_a_batch: Whole rows a block needs to fill one batch (the default block).
    """
    if block_wells is None:
        return 1, max(1, rows_for_a_batch), n_cols
    if block_wells < 1:
        raise UserError(f"--block-wells must be at least 1, got {block_wells}")
    if block_wells < n_cols:
        return 1, 1, block_wells
    return 1, block_wells // n_cols, n_cols


@dataclass(frozen=True)
class BlockGrid:
    """The blocks of one prediction task.

    Args:
        plates: ``"EXP/PlateN"`` of axis 0, in order.
        wells: Per plate, the selected wells ``(row, col)`` (0-based) and their site
            counts: ``{key: ((row, col, n_sites), ...)}``.
        origin: ``(0, row, col)`` of the bounding box's first well.
        extent: ``(plates, rows, cols)`` of the bounding box.
        block: ``(1, rows, cols)`` of a block.
    """

    plates: tuple[str, ...]
    wells: dict[str, tuple[tuple[int, int, int], ...]]
    origin: tuple[int, int, int]
    extent: tuple[int, int, int]
    block: tuple[int, int, int]

    @classmethod
    def from_table(
        cls, table: pd.DataFrame, block_wells: int | None, *, batch_sites: int = 1
    ) -> BlockGrid:
        """The grid over the wells of site-table rows.

        Args:
            table: The selected rows (``experiment``, ``plate``, ``row``, ``col``, ``site``).
            block_wells: Wells per block (None: whole plate rows holding at least
                ``batch_sites`` sites, so a block fills a batch: a smaller one leaves a
                GPU waiting on per-block overhead).
            batch_sites: Sites of one batch (the prediction's batch size).
        """
        if table.empty:
            raise UserError("nothing to predict: no sites selected")
        counts = table.groupby(["experiment", "plate", "row", "col"]).size()
        wells: dict[str, list[tuple[int, int, int]]] = {}
        for (exp, plate, row, col), n in counts.items():
            wells.setdefault(plate_key(exp, plate), []).append((int(row), int(col), int(n)))
        rows = counts.index.get_level_values("row")
        cols = counts.index.get_level_values("col")
        r0, c0 = int(rows.min()), int(cols.min())
        extent = (len(wells), int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1)
        plates = tuple(sorted(wells))
        row_sites = extent[2] * int(counts.max())  # a full row of the fullest wells
        rows_for_a_batch = -(-batch_sites // row_sites)
        _, rows_per_block, cols_per_block = block_shape(
            block_wells, extent[2], rows_for_a_batch=rows_for_a_batch
        )
        block = (1, min(rows_per_block, extent[1]), cols_per_block)  # never past the box
        return cls(plates, {k: tuple(sorted(wells[k])) for k in plates}, (0, r0, c0), extent,
                   block)  # fmt: skip

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Blocks along each axis (the last ones may be cut by the bounding box)."""
        z, y, x = (math.ceil(e / b) for e, b in zip(self.extent, self.block, strict=True))
        return z, y, x

    @property
    def n_sites(self) -> int:
        return sum(n for wells in self.wells.values() for *_, n in wells)

    def wells_in(self, offset: tuple[int, ...], shape: tuple[int, ...]) -> tuple[str, list[Well]]:
        """The plate and selected wells of the block at ``offset`` (total-ROI coordinates).

        Args:
            offset: ``(plate index, row, col)`` of the block's first well.
            shape: ``(1, rows, cols)`` of the block (cut at the bounding box).
        """
        p, r, c = (int(v) for v in offset)
        _, h, w = (int(v) for v in shape)
        key = self.plates[p]
        inside = [(row, col) for row, col, _ in self.wells[key]
                  if r <= row < r + h and c <= col < c + w]  # fmt: skip
        return key, inside

    def sites_in(self, offset: tuple[int, ...], shape: tuple[int, ...]) -> int:
        """Sites of the selected wells of a block."""
        key, inside = self.wells_in(offset, shape)
        chosen = set(inside)
        return sum(n for row, col, n in self.wells[key] if (row, col) in chosen)

    def blocks(self) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
        """``(offset, shape)`` of every block, in grid order (empty ones included)."""
        out = []
        for index in np.ndindex(*self.grid_shape):
            offset = tuple(o + i * b for o, i, b in
                           zip(self.origin, index, self.block, strict=True))  # fmt: skip
            end = tuple(min(o + b, q + e) for o, b, q, e in
                        zip(offset, self.block, self.origin, self.extent, strict=True))  # fmt: skip
            out.append((offset, tuple(e - o for e, o in zip(end, offset, strict=True))))
        return out

    def skip_mask(self) -> np.ndarray:
        """uint8 of ``grid_shape``: 1 where a block holds no selected well."""
        mask = np.zeros(self.grid_shape, np.uint8)
        for index, (offset, shape) in zip(np.ndindex(*self.grid_shape), self.blocks(),
                                          strict=True):  # fmt: skip
            mask[index] = not self.wells_in(offset, shape)[1]
        return mask

    def fingerprint(self) -> str:
        """A short hash of the layout: blocks mean the same wells iff it matches."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {
            "plates": list(self.plates),
            "wells": {k: [list(w) for w in v] for k, v in self.wells.items()},
            "origin": list(self.origin),
            "extent": list(self.extent),
            "block": list(self.block),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> BlockGrid:
        return cls(
            tuple(obj["plates"]),
            {k: tuple((int(r), int(c), int(s)) for r, c, s in v) for k, v in obj["wells"].items()},
            tuple(obj["origin"]),
            tuple(obj["extent"]),
            tuple(obj["block"]),
        )
