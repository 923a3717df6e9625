"""Aligning well profiles across plates and experiments, fitted on control wells.

The steps of the image-based profiling literature, each including the ones before:

* ``none``: the models' well-mean embeddings as they are;
* ``centre``: minus the plate's mean profile (all wells of the plate), removing the
  plate/batch offset;
* ``standardize``: then, per experiment, centre and scale on the experiment's negative
  controls (``sklearn.preprocessing.StandardScaler`` fitted on them; what pycytominer
  ``normalize(method="standardize", samples="Metadata_well_type == 'negative_control'")``
  does, per experiment). Controls are pooled over the experiment's plates: RxRx1 has one
  negative-control well per plate. An experiment with fewer than two negative controls
  is scaled on all its wells instead (a warning says so);
* ``tvn``: typical variation normalization (Ando et al. 2017): then PCA whitening fitted
  on every negative-control well, so the directions in which untreated wells vary most
  (batch and noise) count least. The controls' covariance is shrunk
  (``sklearn.covariance.LedoitWolf``): with fewer control wells than dimensions the
  sample covariance is singular and plain whitening would blow up its null space.

Cosine similarity, which every metric here uses, does not change under the rotation of
PCA whitening, so PCA- and ZCA-whitening score alike.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.covariance import LedoitWolf
from sklearn.preprocessing import StandardScaler

from cellblock.errors import UserError

__all__ = ["ALIGNMENTS", "DEFAULT_ALIGN", "align_profiles"]

log = logging.getLogger(__name__)
ALIGNMENTS = ("none", "centre", "standardize", "tvn")
# the default of ensemble.py and benchmark.py: on the synthetic screens tvn's whitening,
# fitted on a few control wells per experiment, lowered consistency mAP (0.29 -> 0.15)
DEFAULT_ALIGN = "standardize"


def _groups(keys: pd.Series) -> list[np.ndarray]:
    return list(keys.groupby(keys.to_numpy(), sort=False).indices.values())


def align_profiles(
    meta: pd.DataFrame,
    features: np.ndarray,
    method: str = DEFAULT_ALIGN,
    eps: float = 1e-6,
) -> np.ndarray:
    """Align ``features`` by ``method`` (module docstring), fitted on control wells.

    Args:
        meta: One row per well: ``Metadata_plate``, ``Metadata_experiment``,
            ``Metadata_well_type`` (``negative_control`` marks the controls).
        features: ``(n_wells, D)`` aligned with ``meta``.
        method: One of ``ALIGNMENTS``.
        eps: Added to standard deviations and eigenvalues (constant directions stay finite).

    Returns:
        float32 ``(n_wells, D)``.

    Raises:
        UserError: Unknown ``method``, or ``tvn`` without two negative-control wells.
    """
    if method not in ALIGNMENTS:
        raise UserError(f"--align {method!r}: expected one of {', '.join(ALIGNMENTS)}")
    x = features.astype(np.float64)
    if method == "none":
        return x.astype(np.float32)
    for rows in _groups(meta["Metadata_plate"]):
        x[rows] -= x[rows].mean(axis=0)
    if method == "centre":
        return x.astype(np.float32)
    negative = (meta["Metadata_well_type"] == "negative_control").to_numpy()
    few = []
    for rows in _groups(meta["Metadata_experiment"]):
        controls = rows[negative[rows]]
        if len(controls) < 2:
            few.append(str(meta["Metadata_experiment"].iloc[rows[0]]))
            controls = rows
        scaler = StandardScaler().fit(x[controls])
        scaler.scale_ = np.sqrt(scaler.var_) + eps
        x[rows] = scaler.transform(x[rows])
    if few:
        log.warning(
            "fewer than 2 negative controls in %d experiment(s), e.g. %s: scaled on all "
            "their wells",
            len(few),
            few[0],
        )
    if method == "standardize":
        return x.astype(np.float32)
    if negative.sum() < 2:
        raise UserError(
            f"--align tvn: {int(negative.sum())} negative-control well(s); whitening needs "
            "at least 2 (use --align standardize)"
        )
    controls = x[negative]
    cov = LedoitWolf().fit(controls).covariance_
    values, vectors = np.linalg.eigh(cov)
    whiten = vectors / np.sqrt(np.clip(values, 0.0, None) + eps)
    return ((x - controls.mean(axis=0)) @ whiten).astype(np.float32)
