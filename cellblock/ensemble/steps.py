"""The parts of one ensemble run (``pipeline.run_ensemble``) and the state they share.

In order: ``combined`` (the stores into wells, with their argmax), ``assign_plates``
(group mask + per-plate assignment; ``keep_argmax`` without it), ``write_answers``
(submission.csv, wells.parquet), ``step_accuracy`` and ``plot`` (the report's accuracy
and figures), ``group_summary``.
Each part reads and extends one ``EnsembleState``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import softmax

from cellblock.atomic import atomic_write_parquet
from cellblock.ensemble import report as reporting
from cellblock.ensemble.assign import assign, control_ids
from cellblock.ensemble.combine import Combined, combine
from cellblock.ensemble.groups import detect_groups, treatment_groups, true_groups
from cellblock.ensemble.submission import (
    expected_ids,
    make_submission,
    validate_submission,
    write_submission,
)
from cellblock.metrics import accuracy_breakdown
from cellblock.profiling.table import public_labels
from cellblock.store.packed import PackedDataset

__all__ = [
    "EnsembleState",
    "assign_plates",
    "combined",
    "group_summary",
    "keep_argmax",
    "plot",
    "step_accuracy",
    "write_answers",
]

META = ["id_code", "experiment", "plate", "well", "row", "col", "cell_type", "split", "well_type"]


@dataclass
class EnsembleState:
    """What the parts of one ensemble run hand each other.

    Args:
        out: The output folder.
        packed: The packed dataset the stores predicted.
        combined: The stores' well-level scores (``combine``).
        per_well: One row per well: metadata, public labels, argmax and, after the
            plate step, masked / assigned labels, confidence, group.
        groups: The treatment groups the plates were masked to (None: no mask).
        plates: Each plate's detected group (None: no mask).
        step: What the plate step did, in words (the report's ``plate_step``).
        outputs: The files written so far (the report's ``outputs``).
    """

    out: Path
    packed: PackedDataset
    combined: Combined
    per_well: pd.DataFrame
    groups: list[np.ndarray] | None = None
    plates: pd.DataFrame | None = None
    step: str = "none (argmax)"
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """The label each well ends with (assigned, or argmax without the plate step)."""
        return self.per_well["assigned"].to_numpy()


def combined(
    preds: Sequence[Path | str],
    packed: PackedDataset,
    out: Path,
    *,
    split: str,
    experiments: Sequence[str] | None,
    weights: Sequence[float] | None,
    mode: str,
) -> EnsembleState:
    """The stores combined into wells, each with its argmax: a run's first state.

    Args:
        preds: Prediction folders or ``predictions.zarr`` stores.
        packed: The packed dataset they predicted.
        out: The output folder.
        split: ``"test"``, ``"train"`` or ``"all"``.
        experiments: Only these experiments of the split.
        weights: Weight per store (None: equal).
        mode: ``"mean-logits"`` or ``"mean-probs"``.
    """
    c = combine(preds, packed, split, experiments, weights, mode)
    probs = softmax(c.log_probs, axis=1)
    top = probs.argmax(axis=1)
    per_well = c.wells[META].assign(
        sirna=public_labels(c.wells).to_numpy(),
        argmax=c.classes[top],
        argmax_confidence=probs[np.arange(len(top)), top],
    )
    return EnsembleState(out=out, packed=packed, combined=c, per_well=per_well)


def keep_argmax(run: EnsembleState) -> None:
    """No plate step: each well keeps its argmax (``assigned``, ``confidence``).

    Args:
        run: The run so far; its per-well table gains the two columns.
    """
    run.per_well = run.per_well.assign(
        assigned=run.per_well["argmax"], confidence=run.per_well["argmax_confidence"]
    )


def assign_plates(run: EnsembleState, *, use_groups: bool) -> None:
    """Mask plates to their detected groups (``use_groups``) and solve each assignment.

    Args:
        run: The run so far; its per-well table gains the plate step's columns.
        use_groups: Mask each plate to its detected treatment group.
    """
    c = run.combined
    if use_groups:
        run.groups = treatment_groups(run.packed.metadata)
        run.plates = detect_groups(c.wells, c.log_probs, c.classes, run.groups)
    result = assign(
        c.wells, c.log_probs, c.classes, control_ids(run.packed.metadata), run.groups, run.plates
    )
    run.per_well = run.per_well.assign(
        masked=result.masked,
        assigned=result.labels,
        confidence=result.confidence,
        group=result.group,
    )
    run.step = (
        "group mask + per-plate assignment"
        if run.groups is not None
        else "per-plate assignment (no group mask)"
    )


def write_answers(run: EnsembleState, *, include_controls: bool) -> None:
    """Validate and write ``submission.csv``, then ``wells.parquet``.

    Args:
        run: The run after its plate step (or argmax); ``outputs`` gains both paths.
        include_controls: Put control wells in the submission too.
    """
    wells = run.combined.wells
    submission = make_submission(wells, run.labels, include_controls)
    validate_submission(
        submission,
        expected_ids(wells, include_controls),
        int(run.packed.metadata["sirna"].max()) + 1,
        "the new submission",
    )
    run.outputs["submission"] = str(write_submission(submission, run.out / "submission.csv"))
    atomic_write_parquet(run.per_well, run.out / "wells.parquet")
    run.outputs["wells"] = str(run.out / "wells.parquet")


def step_accuracy(run: EnsembleState, *, plate_step: bool) -> dict[str, Any]:
    """Accuracy of treatment wells at each step (argmax, masked, assigned).

    Args:
        run: The run after its plate step (or argmax).
        plate_step: Whether the plate step ran (else only argmax is scored).
    """
    wells, per_well = run.combined.wells, run.per_well
    scored = wells["well_type"] == "treatment"
    accuracy = {"argmax": accuracy_breakdown(wells[scored], per_well["argmax"][scored])}
    if plate_step:
        if run.groups is not None:
            accuracy["masked"] = accuracy_breakdown(wells[scored], per_well["masked"][scored])
        accuracy["assigned"] = accuracy_breakdown(wells[scored], run.labels[scored.to_numpy()])
    return accuracy


def plot(run: EnsembleState, accuracy: dict[str, Any]) -> None:
    """Accuracy bars and plate maps; ``outputs["plots"]`` lists them (None: not drawn).

    Args:
        run: The run after its plate step (or argmax).
        accuracy: ``_accuracy``'s result.
    """
    out = run.out
    truth = run.combined.wells["sirna"].astype("Int64")  # the answer key: reporting only
    maps = run.per_well.assign(truth=truth.to_numpy())
    run.outputs["plots"] = [
        str(p) if p else None
        for p in (
            reporting.plot_accuracy(
                accuracy, "per_experiment", out / "accuracy_per_experiment.png"
            ),
            reporting.plot_accuracy(accuracy, "per_cell_type", out / "accuracy_per_cell_type.png"),
            reporting.plot_plate_maps(
                maps, run.packed.info.plate_shape[:2], out / "plate_maps.png"
            ),
        )
    ]


def group_summary(
    wells: pd.DataFrame, plates: pd.DataFrame, groups: list[np.ndarray]
) -> dict[str, Any]:
    """The report's ``groups``: each plate's detected and true group, detection accuracy."""
    actual = true_groups(wells, groups)
    rows = []
    for r in plates.to_dict("records"):
        r["true_group"] = int(actual.get((r["experiment"], r["plate"]), -1))
        rows.append(r)
    known = [r for r in rows if r["true_group"] >= 0]
    return {
        "n_groups": len(groups),
        "group_sizes": [len(g) for g in groups],
        "min_margin": float(plates["margin"].min()) if len(plates) else None,
        "detection_accuracy": (
            float(np.mean([r["group"] == r["true_group"] for r in known])) if known else None
        ),
        "plates": rows,
    }
