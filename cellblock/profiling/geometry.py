"""Compactness of a representation: an intrinsic-dimension estimate of its profiles.

TwoNN (Facco et al. 2017, Sci. Rep. 7:12140): for each point the ratio ``mu = r2 / r1`` of
its second- to first-nearest-neighbour distance follows a Pareto law whose exponent is
the intrinsic dimension; its maximum-likelihood estimate is ``N / sum(log mu)``.
Profiles are unit-normalized first (every metric here is cosine), so the estimate is
that of the directions. Fewer dimensions for the same information = more compact.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

__all__ = ["intrinsic_dimension"]


def intrinsic_dimension(features: np.ndarray) -> float | None:
    """TwoNN intrinsic dimension of the rows of ``features``.

    Args:
        features: ``(n, D)`` profiles.

    Returns:
        The estimate, or None with fewer than 3 distinct rows.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
    x = np.unique(x, axis=0)
    if len(x) < 3:
        return None
    distances, _ = NearestNeighbors(n_neighbors=3).fit(x).kneighbors(x)
    r1, r2 = distances[:, 1], distances[:, 2]
    ok = r1 > 0
    mu = r2[ok] / r1[ok]
    total = np.log(mu).sum()
    return float(ok.sum() / total) if total > 0 else None
