"""copairs' per-well average precision, a block of query wells at a time.

copairs' ``average_precision`` lists every positive and negative pair of the screen,
their cosine similarities and one lexsort of all rank lists: memory and time grow with
the square of the wells (1.7 GB at 5,540 wells, ~18 GB at RxRx1's ~19,900 test wells).
``block_average_precision`` scores the same queries against every well a block of
queries at a time, so its memory is ``block_elements`` similarities whatever the screen's
size, and its values are copairs' exactly:

* similarities: one BLAS product of the unit-normalized profiles per block, rounded to
  float32 as copairs stores them. copairs sums the products elementwise instead; the two
  float64 sums differ by at most ``4 * D * eps`` (unit vectors), so where that interval
  around a value straddles a float32 rounding boundary (a few in a million pairs) the
  pair is recomputed with copairs' own ``pairwise_cosine``;
* ranks: copairs lexsorts by ``1 - similarity`` (float32) with positives listed first,
  so a negative tied with a positive ranks below it: a positive's rank is the positives
  before it plus the negatives with a strictly smaller key;
* AP: each query's 0/1 rank list goes through copairs' ``ap_contiguous`` and
  ``normalize_ap``, the very float operations copairs applies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from copairs.compute import ap_contiguous, pairwise_cosine
from copairs.map.normalization import normalize_ap

from cellblock.progress import progress_bar

__all__ = ["PairRules", "block_average_precision"]

log = logging.getLogger(__name__)

# (pos_sameby, pos_diffby, neg_diffby): copairs' pair rules without neg_sameby (unused)
PairRules = tuple[Sequence[str], Sequence[str], Sequence[str]]


def _codes(frame: pd.DataFrame, columns: Sequence[str]) -> list[np.ndarray]:
    return [pd.factorize(frame[c])[0] for c in columns]


def _pair_masks(codes: tuple[list[np.ndarray], ...], rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative candidates of the queries ``rows`` among all wells."""
    pos_same, pos_diff, neg_diff = codes
    n = len((pos_same or pos_diff or neg_diff)[0])
    pos = np.ones((rows.stop - rows.start, n), dtype=bool)
    for c in pos_same:
        pos &= c[rows, None] == c[None, :]
    for c in pos_diff:
        pos &= c[rows, None] != c[None, :]
    neg = np.ones_like(pos)
    for c in neg_diff:
        neg &= c[rows, None] != c[None, :]
    # a well is never its own pair (copairs joins on A.index < B.index)
    diagonal = np.arange(rows.start, rows.stop)
    pos[diagonal - rows.start, diagonal] = neg[diagonal - rows.start, diagonal] = False
    return pos, neg


def _similarities(x: np.ndarray, unit: np.ndarray, rows: slice, cols: np.ndarray) -> np.ndarray:
    """copairs' float32 cosine similarities of the queries ``rows`` with wells ``cols``."""
    exact = unit[rows] @ unit[cols].T
    tol = 4 * x.shape[1] * np.finfo(np.float64).eps
    sims = exact.astype(np.float32)
    unsure = (exact - tol).astype(np.float32) != (exact + tol).astype(np.float32)
    if unsure.any():
        q, w = np.nonzero(unsure)
        with np.errstate(divide="ignore", invalid="ignore"):
            sims[q, w] = pairwise_cosine(x[q + rows.start], x[cols[w]])
    return sims


def _smaller(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many ``values`` are strictly below each threshold."""
    if len(thresholds) <= 32:  # a few replicates: comparing beats sorting every negative
        return (values[None, :] < thresholds[:, None]).sum(axis=1)
    return np.searchsorted(np.sort(values), thresholds, side="left")


def _rank_lists(
    keys: np.ndarray, pos: np.ndarray, neg: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each query's 0/1 rank list (copairs' order) and its length."""
    lists, counts = [], np.zeros(len(keys), dtype=np.uint32)
    for q in range(len(keys)):
        kp, kn = np.sort(keys[q, pos[q]]), keys[q, neg[q]]
        ranked = np.zeros(len(kp) + len(kn), dtype=np.uint32)
        ranked[np.arange(len(kp)) + _smaller(kn, kp)] = 1
        lists.append(ranked)
        counts[q] = len(ranked)
    return lists, counts


def block_average_precision(
    frame: pd.DataFrame,
    features: np.ndarray,
    rules: PairRules,
    block_elements: int = 4_000_000,
    desc: str = "average precision",
) -> pd.DataFrame:
    """copairs' ``average_precision`` of every well of ``frame``, in bounded memory.

    Args:
        frame: One row per well: the columns the rules name.
        features: ``(n_wells, D)`` profiles (float64, no NaN).
        rules: ``(pos_sameby, pos_diffby, neg_diffby)`` as copairs takes them.
        block_elements: Query-by-well similarities held at once (x ~40 bytes of
            temporaries each: 4 million is ~160 MB).
        desc: The progress line's name.

    Returns:
        ``frame`` plus copairs' ``average_precision``, ``normalized_average_precision``,
        ``n_pos_pairs`` and ``n_total_pairs`` (NaN AP: no positive pair; 0 pairs: none).
    """
    x = np.ascontiguousarray(features, dtype=np.float64)
    n = len(x)
    with np.errstate(divide="ignore", invalid="ignore"):  # all-zero rows: NaN, as copairs
        unit = x / np.linalg.norm(x, axis=1)[:, np.newaxis]
    codes = tuple(_codes(frame, columns) for columns in rules)
    ap = np.full(n, np.nan)
    confs = np.zeros((n, 2), dtype=np.int64)
    step = max(1, block_elements // max(n, 1))
    with progress_bar(n, desc=desc, unit="well") as bar:
        for start in range(0, n, step):
            rows = slice(start, min(n, start + step))
            pos, neg = _pair_masks(codes, rows)
            # only the wells some query pairs with (activity: replicates and controls)
            cols = np.flatnonzero((pos | neg).any(axis=0))
            pos, neg = pos[:, cols], neg[:, cols]
            keys = np.float32(1) - _similarities(x, unit, rows, cols)
            # an all-zero profile has NaN similarities, which copairs' sort puts last
            keys[np.isnan(keys)] = np.inf
            lists, counts = _rank_lists(keys, pos, neg)
            paired = np.flatnonzero(counts)
            if len(paired):
                with np.errstate(divide="ignore", invalid="ignore"):
                    scores, conf = ap_contiguous(
                        np.concatenate([lists[q] for q in paired]), counts[paired]
                    )
                ap[start + paired], confs[start + paired] = scores, conf
            bar.update(rows.stop - rows.start)
    out = frame.reset_index(drop=True).copy()
    out["n_pos_pairs"], out["n_total_pairs"] = confs[:, 0], confs[:, 1]
    out["average_precision"] = ap
    has = confs[:, 1] > 0
    normalized = np.full(n, np.nan)
    normalized[has] = normalize_ap(ap[has], confs[has, 0], confs[has, 1] - confs[has, 0])
    out["normalized_average_precision"] = normalized
    return out
