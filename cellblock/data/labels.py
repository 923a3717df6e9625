"""Training labels from the site table: which rows are labelled, and with what class.

Test treatment labels in the site table are the answer key (``test_labels.csv``) and
stay hidden (-1) unless explicitly asked for; test control labels are public in RxRx1
(``test_controls.csv``) and stay. A pseudo-label CSV labels the hidden test wells.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cellblock.errors import UserError

__all__ = ["class_sirnas", "control_classes", "make_labels", "n_classes", "read_pseudo_labels"]

log = logging.getLogger(__name__)

PSEUDO_COLUMNS = ("id_code", "sirna", "confidence")


def control_classes(table: pd.DataFrame) -> np.ndarray:
    """Sorted sirna ids of the control wells: class ``k`` of ``label="control"`` is entry k.

    Args:
        table: The full site table (so the classes do not depend on a subset).
    """
    controls = table.loc[table["well_type"] != "treatment", "sirna"].dropna()
    return np.sort(controls.astype(np.int64).unique())


def class_sirnas(label: str, table: pd.DataFrame, num_classes: int) -> np.ndarray:
    """The sirna id of each class index: what a logit column means.

    Args:
        label: ``"sirna"`` (class k is sirna k) or ``"control"`` (the control sirnas).
        table: The full site table.
        num_classes: The network's number of classes.
    """
    if label == "control":
        return control_classes(table)[:num_classes]
    return np.arange(num_classes, dtype=np.int64)


def n_classes(table: pd.DataFrame, label: str = "sirna") -> int:
    """Number of classes for ``label`` (``"sirna"``: largest sirna id + 1).

    Args:
        table: The full site table.
        label: ``"sirna"`` or ``"control"``.
    """
    if label == "control":
        return len(control_classes(table))
    return int(table["sirna"].max()) + 1


def read_pseudo_labels(path: Path | str, table: pd.DataFrame) -> pd.DataFrame:
    """Read and validate a pseudo-label CSV ``id_code,sirna[,confidence]``.

    Args:
        path: The CSV file.
        table: The full site table; every id_code must be a test well of it, and
            every sirna a class of it.

    Returns:
        One row per well: ``id_code``, ``sirna`` (int64), ``confidence`` (float64, 1.0
        where the file has no such column).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: pseudo-label file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in PSEUDO_COLUMNS[:2] if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; need id_code,sirna[,confidence]")
    extra = [c for c in df.columns if c not in PSEUDO_COLUMNS]
    if extra:
        raise UserError(f"{path}: unexpected column(s) {extra}; need id_code,sirna[,confidence]")

    def bad(column: str, i: int | np.integer, why: str) -> UserError:
        # i is 0-based over data rows; line 1 is the header
        return UserError(f"{path}: column {column!r}, line {i + 2}: {why}")

    sirna = pd.to_numeric(df["sirna"], errors="coerce")
    for i in np.flatnonzero(sirna.isna() | (sirna % 1 != 0) | (sirna < 0)):
        raise bad("sirna", i, f"{df['sirna'].iloc[i]!r} is not a non-negative integer")
    limit = n_classes(table)
    for i in np.flatnonzero(sirna >= limit):
        raise bad("sirna", i, f"{int(sirna.iloc[i])} is not a class (0..{limit - 1})")
    if "confidence" in df.columns:
        conf = pd.to_numeric(df["confidence"], errors="coerce")
        for i in np.flatnonzero(conf.isna() | (conf < 0) | (conf > 1)):
            raise bad("confidence", i, f"{df['confidence'].iloc[i]!r} is not a number in [0, 1]")
    else:
        conf = pd.Series(1.0, index=df.index)
    test_ids = set(table.loc[table["split"] == "test", "id_code"])
    for i in np.flatnonzero(~df["id_code"].isin(test_ids)):
        raise bad("id_code", i, f"{df['id_code'].iloc[i]!r} is not a test well of the dataset")
    for i in np.flatnonzero(df["id_code"].duplicated()):
        raise bad("id_code", i, f"{df['id_code'].iloc[i]!r} appears twice")
    return pd.DataFrame(
        {
            "id_code": df["id_code"],
            "sirna": sirna.astype(np.int64),
            "confidence": conf.astype(np.float64),
        }
    )


def make_labels(
    table: pd.DataFrame,
    label: str = "sirna",
    use_test_labels: bool = False,
    pseudo: pd.DataFrame | None = None,
    min_confidence: float = 0.0,
) -> pd.Series:
    """The class of every site-table row, -1 where unknown or hidden.

    Args:
        table: The full site table.
        label: ``"sirna"`` (every sirna id, controls included) or ``"control"``
            (controls only, as indices into ``control_classes``; treatments -1).
        use_test_labels: Keep the answer key of test treatment wells.
        pseudo: ``read_pseudo_labels`` output: fills test rows still unknown.
        min_confidence: Pseudo labels with lower confidence are ignored.

    Returns:
        int64 Series on ``table.index``.
    """
    sirna = table["sirna"].astype("Float64")
    hidden = (table["split"] == "test") & (table["well_type"] == "treatment")
    if not use_test_labels:
        sirna = sirna.mask(hidden)
    if pseudo is not None:
        keep = pseudo[pseudo["confidence"] >= min_confidence]
        fill = table["id_code"].map(keep.set_index("id_code")["sirna"]).astype("Float64")
        unknown = sirna.isna() & (table["split"] == "test")
        sirna = sirna.mask(unknown, fill)
        log.info("pseudo labels: %d of %d rows kept", len(keep), len(pseudo))
    labels = sirna.fillna(-1).astype(np.int64)
    if label == "control":
        classes = control_classes(table)
        is_control = (table["well_type"] != "treatment") & (labels >= 0)
        idx = np.searchsorted(classes, labels.to_numpy())
        labels = pd.Series(np.where(is_control, idx, -1), index=table.index, dtype=np.int64)
    return labels
