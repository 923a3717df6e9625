"""Known-relationship recall, as EFAAR benchmarks maps (Celik et al. 2024).

Profiles are aggregated per siRNA (the mean of its treatment wells), unit-normalized,
and compared by cosine similarity. A null of random pairs of distinct siRNAs sets two
thresholds, its ``tail`` and ``1 - tail`` quantiles; a known pair is *recalled* when its
similarity lies beyond either (related genes can correlate or anti-correlate). By
construction a random pair is recalled at the rate ``2 * tail`` (``random_rate``,
measured on the null), so a representation that knows nothing of the relationships
recalls about that rate, and one that does recalls more.

Relationship tables (``relationships.csv``; ``make_synthetic.py --sirnas-per-gene``
writes one, CORUM/StringDB pairs mapped to siRNA ids give one for real data): a CSV with
``sirna_a``, ``sirna_b`` (the dataset's sirna ids) and optionally ``relationship`` (a
name per pair, scored separately too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellblock.errors import UserError

__all__ = ["read_relationships", "relationship_recall"]


def read_relationships(path: Path | str) -> pd.DataFrame:
    """A relationship table: ``sirna_a``, ``sirna_b`` (int), ``relationship`` (str).

    Args:
        path: The CSV file.

    Raises:
        UserError: Missing file or column, or a non-integer sirna id (naming the row).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such relationship table")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a CSV table ({err})") from None
    missing = [c for c in ("sirna_a", "sirna_b") if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; need sirna_a, sirna_b "
                        f"[, relationship] (has {list(table.columns)})")  # fmt: skip
    for column in ("sirna_a", "sirna_b"):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(f"{path}: row {row + 2}: {column} {table[column].iloc[row]!r} "
                            "is not a sirna id (an integer)")  # fmt: skip
        table[column] = values.astype(np.int64)
    if "relationship" not in table.columns:
        table["relationship"] = "known"
    table["relationship"] = table["relationship"].astype(str)
    return table[["sirna_a", "sirna_b", "relationship"]]


def _recall(sim: np.ndarray, low: float, high: float) -> float:
    return float(((sim <= low) | (sim >= high)).mean())


def relationship_recall(
    meta: pd.DataFrame,
    features: np.ndarray,
    pairs: pd.DataFrame,
    tail: float = 0.05,
    null_pairs: int = 10000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Recall of known pairs among the most (anti-)similar siRNA pairs (module docstring).

    Args:
        meta: One row per well: ``Metadata_sirna`` (answer key joined; NA left out),
            ``Metadata_well_type``.
        features: ``(n_wells, D)`` aligned profiles.
        pairs: ``read_relationships`` output.
        tail: Share of the null in each tail (EFAAR: 0.05).
        null_pairs: Random pairs in the null.
        seed: Seed of the null.

    Returns:
        ``{"recall", "random_rate", "n_pairs", "n_sirnas", "by_relationship"}``, or None
        when fewer than 2 known pairs have both siRNAs profiled.
    """
    keep = (meta["Metadata_well_type"] == "treatment") & meta["Metadata_sirna"].notna()
    rows = np.flatnonzero(keep.to_numpy())
    labels = meta["Metadata_sirna"].to_numpy()[rows].astype(np.int64)
    sirnas, inverse = np.unique(labels, return_inverse=True)
    x = np.zeros((len(sirnas), features.shape[1]))
    np.add.at(x, inverse, np.asarray(features, dtype=np.float64)[rows])
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    position = pd.Series(np.arange(len(sirnas)), index=sirnas)
    known = pairs[pairs["sirna_a"].isin(sirnas) & pairs["sirna_b"].isin(sirnas)
                  & (pairs["sirna_a"] != pairs["sirna_b"])]  # fmt: skip
    if len(known) < 2:
        return None
    a = position[known["sirna_a"]].to_numpy()
    b = position[known["sirna_b"]].to_numpy()
    sim = (x[a] * x[b]).sum(axis=1)
    rng = np.random.default_rng(seed)
    i = rng.integers(len(sirnas), size=null_pairs)
    j = (i + rng.integers(1, len(sirnas), size=null_pairs)) % len(sirnas)  # j != i
    null = (x[i] * x[j]).sum(axis=1)
    low, high = np.quantile(null, [tail, 1.0 - tail])
    by = {}
    for name in sorted(set(known["relationship"])):
        mask = (known["relationship"] == name).to_numpy()
        by[str(name)] = {"recall": _recall(sim[mask], low, high), "n_pairs": int(mask.sum())}
    return {
        "recall": _recall(sim, low, high),
        "random_rate": _recall(null, low, high),
        "n_pairs": len(known),
        "n_sirnas": len(sirnas),
        "by_relationship": by,
    }
