"""Reference probes: what a plain linear model reaches on the same wells a CNN is scored on.

A probe is a linear classifier from per-well features to the siRNA (the benchmark's:
``cellblock.profiling.probes.make_probe``, a shrunk linear discriminant in closed form),
fitted on the labelled wells of the training experiments and scored on the treatment
wells of the held-out experiments, reported as the ensemble reports a model::

    sites --features--> wells (mean of sites) --per-plate z-score--> linear probe
        (train split, every labelled well) --> log-probabilities of the held-out wells
        --> argmax | masked to the plate's detected treatment group | per-plate assignment

Features: ``image`` (84 image statistics, ``cellblock.probes.imagestats``: the floor a
CNN should clear) or, on a synthetic screen, ``oracle`` (the cells' true mean trait
shifts from ``site_traits.csv``: the ceiling the phenotypes allow, before staining,
optics and batch effects hide them). Per-plate normalization removes what is shared by
a plate (the experiment's morphology drift, a plate's gain and background), as the CNN's
per-plate normalization does.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from cellblock.ensemble.assign import assign, control_ids
from cellblock.ensemble.groups import detect_groups, treatment_groups
from cellblock.errors import UserError
from cellblock.metrics import accuracy_breakdown
from cellblock.profiling.probes import make_probe

__all__ = ["WELL_COLUMNS", "plate_normalized", "run_probe", "well_means"]

log = logging.getLogger(__name__)

WELL_COLUMNS = [
    "id_code",
    "experiment",
    "plate",
    "well",
    "cell_type",
    "split",
    "well_type",
    "sirna",
]


def well_means(sites: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """One row per well (``WELL_COLUMNS`` + the mean of each feature over its sites).

    Args:
        sites: One row per site with ``WELL_COLUMNS`` and ``features``.
        features: The feature columns.
    """
    missing = sorted(set(WELL_COLUMNS + features) - set(sites.columns))
    if missing:
        raise UserError(f"site features: no column(s) {missing}")
    means = sites.groupby("id_code", sort=False)[features].mean()
    meta = sites.drop_duplicates("id_code").set_index("id_code")[WELL_COLUMNS[1:]]
    return meta.join(means).reset_index().sort_values(["experiment", "plate", "well"],
                                                      ignore_index=True)  # fmt: skip


def plate_normalized(wells: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Each feature z-scored within its plate (over all the plate's wells).

    Args:
        wells: ``well_means`` output.
        features: The feature columns.
    """
    values = wells[features].to_numpy(np.float64)
    out = np.empty_like(values)
    for _, rows in wells.groupby(["experiment", "plate"], sort=False).indices.items():
        block = values[rows]
        std = block.std(0)
        out[rows] = (block - block.mean(0)) / np.where(std > 1e-9, std, 1.0)
    return out


def _accuracy(wells: pd.DataFrame, predicted: np.ndarray) -> dict[str, Any] | None:
    scored = (wells["well_type"] == "treatment").to_numpy()
    return accuracy_breakdown(wells[scored], np.asarray(predicted)[scored])


def run_probe(
    wells: pd.DataFrame,
    features: list[str],
    table: pd.DataFrame,
    held_out: str = "test",
    kind: str = "lda",
) -> dict[str, Any]:
    """Fit a probe on the training wells and score it on the held-out ones.

    Args:
        wells: ``well_means`` output for the training split and the held-out wells.
        features: Its feature columns.
        table: The dataset's full site table (the treatment groups come from its
            training plates; the control labels it publishes).
        held_out: The split scored (``"test"``: the experiments the CNN never saw).
        kind: The probe (``make_probe``: ``"lda"``, or the former ``"logistic"``).

    Returns:
        ``{"accuracy": {"argmax", "masked", "assigned"}, "n_train_wells",
        "n_scored_wells", "n_features", "n_classes"}``; each accuracy an
        ``accuracy_breakdown`` (None where the held-out labels are unknown).
    """
    x = plate_normalized(wells, features)
    train = ((wells["split"] == "train") & wells["sirna"].notna()).to_numpy()
    test = (wells["split"] == held_out).to_numpy()
    if not train.any() or not test.any():
        raise UserError(f"probe: {train.sum()} labelled training wells, {test.sum()} "
                        f"{held_out} wells; need both")  # fmt: skip
    y = wells.loc[train, "sirna"].astype(np.int64).to_numpy()
    probe = make_probe(kind, max_iter=3000)
    probe.fit(x[train], y)
    held = wells[test].reset_index(drop=True)
    log_probs = probe.predict_log_proba(x[test])
    classes = probe.classes_.astype(np.int64)
    # the plate step sees what the ensemble's sees: control labels, not the answer key
    public = held.assign(sirna=held["sirna"].where(held["well_type"] != "treatment"))
    groups = treatment_groups(table)
    plates = detect_groups(public, log_probs, classes, groups)
    result = assign(public, log_probs, classes, control_ids(table), groups, plates)
    return {
        "accuracy": {
            "argmax": _accuracy(held, classes[log_probs.argmax(1)]),
            "masked": _accuracy(held, result.masked),
            "assigned": _accuracy(held, result.labels),
        },
        "n_train_wells": int(train.sum()),
        "n_scored_wells": int((held["well_type"] == "treatment").sum()),
        "n_features": len(features),
        "n_classes": len(classes),
    }
