"""Choosing sites of a site table: a split, some experiments or plates; wells from sites.

Prediction, ensembling, evaluation and profiling all pick the same rows the same way::

    site table (one row per site)
        |  select_sites(table, split, experiments)     split: test | train | all
        v                                               experiments: HEPG2-01, U2OS-03/Plate2
    sorted by experiment, plate, row, col, site (a well's sites are consecutive)
        |  well_table(sites)
        v
    one row per well, and where each well's sites start
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cellblock.errors import UserError
from cellblock.screen.metadata import SITE_COLUMNS

__all__ = [
    "SITE_ORDER",
    "SPLITS",
    "WELL_COLUMNS",
    "check_split",
    "plate_keys",
    "select_sites",
    "well_table",
]

SPLITS = ("test", "train", "all")
SITE_ORDER = ["experiment", "plate", "row", "col", "site"]
WELL_COLUMNS = [c for c in SITE_COLUMNS if c != "site"]


def check_split(split: str) -> None:
    """Raise ``UserError`` naming ``--split`` unless ``split`` is one of ``SPLITS``."""
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")


def plate_keys(table: pd.DataFrame) -> pd.Series:
    """Each row's plate as ``"HEPG2-01/Plate1"`` (``cellblock.screen.plates.plate_key``)."""
    return table["experiment"].astype(str) + "/Plate" + table["plate"].astype(int).astype(str)


def select_sites(
    table: pd.DataFrame,
    split: str = "test",
    experiments: Sequence[str] | None = None,
    *,
    source: str = "the dataset",
) -> pd.DataFrame:
    """The rows of ``split`` (and ``experiments``), sorted by ``SITE_ORDER``, fresh index.

    Args:
        table: A site table (``cellblock.screen.metadata.SITE_COLUMNS``).
        split: ``"test"``, ``"train"`` or ``"all"`` (the command lines' ``--split``).
        experiments: Experiment names or ``"EXP/PlateN"`` plate keys (the command lines'
            ``--experiments``); None or empty: all of the split.
        source: What ``table`` is, for messages (e.g. ``"dataset /data/packed"``).

    Raises:
        UserError: A split that is not one of ``SPLITS`` or that ``table`` lacks, an
            experiment or plate it does not have or has in another split (each named,
            with what there is).
    """
    check_split(split)
    splits = sorted(table["split"].unique())
    if split != "all" and split not in splits:
        raise UserError(f"--split {split}: {source} has no {split!r} split "
                        f"(its splits: {', '.join(splits)}); use --split all")  # fmt: skip
    chosen = table["split"] == split if split != "all" else pd.Series(True, index=table.index)
    if experiments:
        keys = plate_keys(table)
        keep = pd.Series(False, index=table.index)
        for name in experiments:
            hit = (keys == name) if "/" in name else (table["experiment"] == name)
            if not hit.any():
                have = ", ".join(sorted(table["experiment"].unique()))
                raise UserError(f"--experiments {name}: not in {source} (experiments: {have})")
            if not (hit & chosen).any():
                where = ", ".join(sorted(table.loc[hit, "split"].unique()))
                raise UserError(f"--experiments {name}: in split {where}, not {split}; "
                                "use --split all or that split")  # fmt: skip
            keep |= hit
        chosen &= keep
    return table[chosen].sort_values(SITE_ORDER).reset_index(drop=True)


def well_table(sites: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per well of sorted ``sites``, and the start of each well's sites.

    Args:
        sites: ``select_sites`` output (sorted, so a well's sites are consecutive).

    Raises:
        UserError: A well's sites are not consecutive.
    """
    ids = sites["id_code"].to_numpy(dtype=object)  # plain values whatever the string dtype
    runs = 1 + int((ids[1:] != ids[:-1]).sum()) if len(ids) else 0
    if runs != len(set(ids)):  # more runs of an id_code than wells
        raise UserError("site table: a well's sites are not consecutive (is it sorted?)")
    first = ~sites["id_code"].duplicated().to_numpy()
    starts = np.flatnonzero(first)
    wells = sites.loc[first, WELL_COLUMNS].reset_index(drop=True)
    return wells, starts
