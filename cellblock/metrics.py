"""Accuracy of well labels against the answer key: overall, per cell type, per experiment.

One definition shared by ``04_ensemble/evaluate.py``, the ensemble report and the tests,
so every number the project prints about a submission is computed the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["accuracy_breakdown", "format_breakdown"]


def accuracy_breakdown(
    wells: pd.DataFrame, predicted: np.ndarray | pd.Series, truth: str = "sirna"
) -> dict[str, Any] | None:
    """Accuracy of ``predicted`` over the wells whose true label is known.

    Args:
        wells: One row per well with ``experiment``, ``cell_type`` and the ``truth``
            column (nullable: NA where the label is unknown; those wells are left out).
        predicted: Predicted label per row of ``wells``, in its order.
        truth: Name of the column holding the true label.

    Returns:
        ``{"overall", "n", "per_cell_type": {name: acc}, "per_experiment": {name: acc},
        "n_per_cell_type", "n_per_experiment"}``, or None when no label is known.
    """
    predicted = np.asarray(predicted)
    if len(predicted) != len(wells):
        raise ValueError(f"{len(predicted)} predictions for {len(wells)} wells")
    known = wells[truth].notna().to_numpy()
    if not known.any():
        return None
    frame = pd.DataFrame(
        {
            "experiment": wells["experiment"].to_numpy()[known],
            "cell_type": wells["cell_type"].to_numpy()[known],
            "hit": predicted[known].astype(np.int64)
            == wells[truth].to_numpy()[known].astype(np.int64),
        }
    )
    out: dict[str, Any] = {"overall": float(frame["hit"].mean()), "n": len(frame)}
    for key, column in (("per_cell_type", "cell_type"), ("per_experiment", "experiment")):
        by = frame.groupby(column, sort=True)["hit"]
        out[key] = {str(k): float(v) for k, v in by.mean().items()}
        out["n_" + key] = {str(k): int(v) for k, v in by.size().items()}
    return out


def format_breakdown(results: dict[str, dict[str, Any] | None]) -> str:
    """A plain-text table of one or more ``accuracy_breakdown`` results side by side.

    Args:
        results: Column title -> breakdown (None columns are shown as ``-``).
    """
    titles = list(results)
    first = next((r for r in results.values() if r is not None), None)
    if first is None:
        return "no labels known: accuracy cannot be computed"

    def cell(result: dict[str, Any] | None, section: str | None, key: str | None) -> str:
        if result is None:
            return "-"
        value = result["overall"] if section is None else result[section].get(key)
        return "-" if value is None else f"{value:.4f}"

    lines = [f"{'':<22}{'n':>6}" + "".join(f"{t:>12}" for t in titles)]
    lines.append(
        f"{'overall':<22}{first['n']:>6}"
        + "".join(f"{cell(results[t], None, None):>12}" for t in titles)
    )
    for section in ("per_cell_type", "per_experiment"):
        for key, n in first["n_" + section].items():
            lines.append(
                f"{key:<22}{n:>6}"
                + "".join(f"{cell(results[t], section, key):>12}" for t in titles)
            )
    return "\n".join(lines)
