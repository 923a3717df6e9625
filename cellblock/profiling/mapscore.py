"""copairs mean average precision: phenotypic activity and consistency across experiments.

Both are copairs' values (``average_precision`` then ``mean_average_precision``: a null
of random rank lists per siRNA, Benjamini-Hochberg FDR) on cosine similarity, as the
Cell Painting community scores profiles (Kalinin et al. 2025). The per-well AP is
``apchunks.block_average_precision``: copairs' exact values a block of query wells at a
time, in memory that does not grow with the square of the wells; the null, p-values and
FDR are copairs' ``mean_average_precision`` itself:

* **activity**: can an siRNA's wells be told from the negative controls? Each treatment
  well queries its replicate wells (same siRNA) against every negative-control well;
* **consistency**: does an siRNA look the same in other experiments (other cell types and
  batches)? Each treatment well queries its siRNA's wells in *other* experiments against
  the wells of other siRNAs.

The score is the mean over siRNAs of their mAP; ``fraction_significant`` is the share of
siRNAs whose FDR-corrected p-value is below ``threshold``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from copairs.map import mean_average_precision
from copairs.matching import assign_reference_index

from cellblock.profiling.apchunks import PairRules, block_average_precision

__all__ = ["KINDS", "copairs_map"]

log = logging.getLogger(__name__)
KINDS = ("activity", "consistency")
LABEL = "Metadata_sirna"
REFERENCE = "Metadata_reference_index"


def _pair_rules(kind: str) -> PairRules:
    """(pos_sameby, pos_diffby, neg_diffby) of ``kind``, as copairs' tutorials pair wells."""
    if kind == "activity":
        return [LABEL, REFERENCE], [], [LABEL, REFERENCE]
    return [LABEL], ["Metadata_experiment"], [LABEL]


def copairs_map(
    meta: pd.DataFrame,
    features: np.ndarray,
    kind: str,
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int = 0,
) -> dict[str, Any] | None:
    """copairs mAP of ``kind`` (module docstring) over wells with a known label.

    Args:
        meta: One row per well: ``Metadata_sirna`` (the answer key joined: evaluation
            only; NA = unknown, left out), ``Metadata_well_type``, ``Metadata_experiment``.
        features: ``(n_wells, D)`` aligned profiles.
        kind: ``"activity"`` or ``"consistency"``.
        null_size: Random rank lists in each siRNA's null distribution.
        threshold: FDR level for ``fraction_significant``.
        seed: Seed of the null.

    Returns:
        ``{"map", "fraction_significant", "n_sirnas", "n_wells"}``, or None when no
        siRNA has a positive and a negative pair.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    well_type = meta["Metadata_well_type"]
    keep = meta[LABEL].notna() & (
        (well_type == "treatment")
        | ((well_type == "negative_control") if kind == "activity" else False)
    )
    rows = np.flatnonzero(keep.to_numpy())
    frame = meta.iloc[rows][[LABEL, "Metadata_experiment", "Metadata_well_type"]]
    frame = frame.reset_index(drop=True).astype({LABEL: np.int64})
    if kind == "activity":
        frame = assign_reference_index(frame, "Metadata_well_type == 'negative_control'",
                                       reference_col=REFERENCE, default_value=-1)  # fmt: skip
        if not (frame[REFERENCE] >= 0).any():
            return None
    x = np.asarray(features, dtype=np.float64)[rows]
    if np.isnan(x).any():  # copairs refuses NaN features
        log.warning("copairs %s mAP: features have NaN", kind)
        return None
    ap = block_average_precision(frame, x, _pair_rules(kind), desc=f"{kind} mAP")
    # copairs raises when the screen has no positive or no negative pair at all
    n_pos = ap["n_pos_pairs"].to_numpy()
    if not (n_pos > 0).any() or not (ap["n_total_pairs"].to_numpy() > n_pos).any():
        log.warning("copairs %s mAP: no positive or no negative pairs", kind)
        return None
    ap = ap[(ap["Metadata_well_type"] == "treatment") & ap["average_precision"].notna()]
    if ap.empty:
        return None
    scores = mean_average_precision(ap, [LABEL], null_size=null_size, threshold=threshold,
                                    seed=seed, progress_bar=False)  # fmt: skip
    return {
        "map": float(scores["mean_average_precision"].mean()),
        "fraction_significant": float(scores["below_corrected_p"].mean()),
        "n_sirnas": len(scores),
        "n_wells": len(ap),
    }
