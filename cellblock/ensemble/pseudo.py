"""Pseudo labels from an ensemble's assigned predictions (input of pseudo-label training).

Reads ``OUT/wells.parquet`` and ``OUT/report.json`` of ``04_ensemble/ensemble.py`` and
writes the CSV ``cellblock.data.labels.read_pseudo_labels`` reads:
``id_code,sirna,confidence``, one row per test treatment well whose assigned label is
at least ``min_confidence`` likely (its probability among the plate group's classes).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from cellblock.atomic import atomic_path
from cellblock.data.labels import read_pseudo_labels
from cellblock.errors import UserError
from cellblock.finished import require_finished
from cellblock.store.packed import PackedDataset

__all__ = ["pseudo_labels", "write_pseudo_labels"]

log = logging.getLogger(__name__)


def _read_outputs(out: Path) -> tuple[dict, pd.DataFrame]:
    require_finished(out, "ensemble")  # not a stopped, running or mixed run's files
    report_path, wells_path = out / "report.json", out / "wells.parquet"
    if not report_path.is_file() or not wells_path.is_file():
        raise UserError(f"{out}: no report.json/wells.parquet; run 04_ensemble/ensemble.py first")
    try:
        report = json.loads(report_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{report_path}: not valid JSON ({e})") from None
    wells = pd.read_parquet(wells_path)
    missing = [
        c
        for c in ("id_code", "split", "well_type", "assigned", "confidence")
        if c not in wells.columns
    ]
    if missing:
        raise UserError(f"{wells_path}: missing column(s) {missing}")
    return report, wells


def pseudo_labels(
    out: Path | str, packed: PackedDataset | Path | str, min_confidence: float = 0.0
) -> pd.DataFrame:
    """``id_code,sirna,confidence`` of the ensemble's confident test treatment wells.

    Args:
        out: The ensemble's output folder.
        packed: The packed dataset the ensemble ran on (checked against its report).
        min_confidence: Keep wells whose assigned label has at least this probability.

    Raises:
        UserError: Missing outputs, another dataset, no test treatment wells, a bad
            ``min_confidence``.
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise UserError(f"--min-confidence {min_confidence}: expected a number in [0, 1]")
    out = Path(out)
    if not isinstance(packed, PackedDataset):
        packed = PackedDataset(packed)
    report, wells = _read_outputs(out)
    if Path(report.get("dataset", "")).resolve() != packed.path.resolve():
        raise UserError(
            f"{out}: the ensemble ran on {report.get('dataset')!r}, not on {packed.path}"
        )
    if report.get("plate_step", "").startswith("none"):
        log.warning("%s: no plate assignment was made (--no-assign); using argmax labels", out)
    test = wells[(wells["split"] == "test") & (wells["well_type"] == "treatment")]
    if test.empty:
        raise UserError(f"{out}: no test treatment wells (ensemble --split test to label them)")
    keep = test[test["confidence"] >= min_confidence]
    log.info(
        "pseudo labels: %d of %d test treatment wells at confidence >= %.3f",
        len(keep),
        len(test),
        min_confidence,
    )
    return pd.DataFrame(
        {
            "id_code": keep["id_code"].to_numpy(),
            "sirna": keep["assigned"].to_numpy().astype("int64"),
            "confidence": keep["confidence"].to_numpy().clip(0.0, 1.0),
        }
    )


def write_pseudo_labels(labels: pd.DataFrame, path: Path | str, table: pd.DataFrame) -> Path:
    """Write the CSV atomically, after reading it back with the training's own reader.

    Args:
        labels: ``pseudo_labels`` output.
        path: The CSV to write.
        table: The dataset's full site table (``read_pseudo_labels`` checks against it).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        labels.to_csv(tmp, index=False, float_format="%.6f")
        read_pseudo_labels(tmp, table)  # what training will read, checked before it lands
    return path
