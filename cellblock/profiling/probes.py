"""Linear probes on aligned profiles: what a profile tells (siRNA) and should not (batch).

The probe (``make_probe``) is a linear discriminant (``lda.SharedLDA``): standardized
features, class means and one within-class covariance shrunk by Ledoit-Wolf, solved in
closed form. Its cost
is one pass over the wells and a ``D x D`` solve per fold: linear in the wells, where the
L2 logistic regression it replaces (``kind="logistic"``, kept for comparison) ran L-BFGS
on ``D x classes`` parameters, 53% of ``benchmark.py`` at 6,160 wells and 15-20 minutes
at RxRx1's size. ``scripts/bench/probescale.py`` measures the two side by side.

* ``linear_probe``: logistic regression from a treatment well's profile to its siRNA,
  trained on some experiments and scored on held-out ones (leave-one-experiment-out;
  grouped 5-fold with more than 10 experiments): higher is better;
* ``batch_probe``: how well a probe tells a well's experiment (from all wells; every
  experiment carries every siRNA, so only batch tells them apart) and its plate (from
  the control wells, the same on every plate; treatment groups would give plates away):
  stratified 5-fold accuracy, lower is better, ``chance`` is the majority class's share.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cellblock.profiling.lda import SharedLDA

__all__ = ["PROBES", "batch_probe", "linear_probe", "make_probe"]

PROBES = ("lda", "logistic")


def make_probe(kind: str = "lda", max_iter: int = 2000) -> Any:
    """A scikit-learn classifier with ``predict_log_proba``: standardize, then ``kind``.

    Args:
        kind: ``"lda"`` (module docstring) or ``"logistic"`` (L2, C=1, L-BFGS).
        max_iter: The logistic regression's iterations.
    """
    if kind == "lda":
        return make_pipeline(StandardScaler(), SharedLDA())
    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))
    raise ValueError(f"probe {kind!r}: expected one of {PROBES}")


def linear_probe(
    meta: pd.DataFrame, features: np.ndarray, kind: str = "lda"
) -> dict[str, Any] | None:
    """siRNA accuracy of a linear probe on held-out experiments (treatment wells).

    Args:
        meta: One row per well: ``Metadata_sirna`` (answer key joined; NA left out),
            ``Metadata_well_type``, ``Metadata_experiment``.
        features: ``(n_wells, D)`` aligned profiles.
        kind: The probe (``make_probe``).

    Returns:
        ``{"accuracy", "chance", "n_wells", "n_experiments"}``; None with fewer than 2
        experiments.
    """
    keep = (meta["Metadata_well_type"] == "treatment") & meta["Metadata_sirna"].notna()
    rows = np.flatnonzero(keep.to_numpy())
    groups = meta["Metadata_experiment"].to_numpy()[rows]
    n_groups = len(set(groups))
    if n_groups < 2:
        return None
    y = meta["Metadata_sirna"].to_numpy()[rows].astype(np.int64)
    cv = LeaveOneGroupOut() if n_groups <= 10 else GroupKFold(5)
    predicted = cross_val_predict(make_probe(kind), features[rows], y, groups=groups, cv=cv)
    return {
        "accuracy": float((predicted == y).mean()),
        "chance": 1.0 / len(set(y)),
        "n_wells": len(rows),
        "n_experiments": n_groups,
    }


def _batch_accuracy(features: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any] | None:
    _, counts = np.unique(labels, return_counts=True)
    folds = min(5, int(counts.min()))
    if len(counts) < 2 or folds < 2:
        return None
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(make_probe(), features, labels, cv=cv)
    return {
        "accuracy": float((predicted == labels).mean()),
        "chance": float(counts.max() / counts.sum()),
        "n_wells": len(labels),
        "n_classes": len(counts),
    }


def batch_probe(meta: pd.DataFrame, features: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Residual batch effect: probe accuracy for experiment and plate (lower is better).

    Args:
        meta: One row per well: ``Metadata_experiment``, ``Metadata_plate``,
            ``Metadata_well_type``.
        features: ``(n_wells, D)`` aligned profiles.
        seed: Seed of the folds.

    Returns:
        ``{"experiment": ..., "plate": ...}``, each ``{"accuracy", "chance", ...}`` or
        None (one class only, or fewer than 2 wells of some class).
    """
    experiment = meta["Metadata_experiment"].astype(str).to_numpy()
    controls = np.flatnonzero((meta["Metadata_well_type"] != "treatment").to_numpy())
    plate = meta["Metadata_plate"].astype(str).to_numpy()[controls]
    return {
        "experiment": _batch_accuracy(features, experiment, seed),
        "plate": _batch_accuracy(features[controls], plate, seed) if len(controls) else None,
    }
