"""Kaggle submissions: ``id_code,sirna``, one row per scored well, validated both ways.

RxRx1 scored the treatment wells of ``test.csv``; control wells (``test_controls.csv``)
were not part of a submission. ``expected_ids`` follows that by default, and takes the
control wells too when asked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cellblock.atomic import atomic_write_csv
from cellblock.errors import UserError

__all__ = [
    "SUBMISSION_COLUMNS",
    "expected_ids",
    "make_submission",
    "read_submission",
    "validate_submission",
    "write_submission",
]

SUBMISSION_COLUMNS = ["id_code", "sirna"]


def expected_ids(wells: pd.DataFrame, include_controls: bool = False) -> pd.Index:
    """The id_codes a submission for ``wells`` must hold, each exactly once.

    Args:
        wells: One row per well (``id_code``, ``well_type``).
        include_controls: Also the control wells (not scored by Kaggle).
    """
    keep = wells if include_controls else wells[wells["well_type"] == "treatment"]
    return pd.Index(keep["id_code"].drop_duplicates(), name="id_code")


def make_submission(
    wells: pd.DataFrame, labels: np.ndarray, include_controls: bool = False
) -> pd.DataFrame:
    """The submission table of ``labels`` (one per row of ``wells``).

    Args:
        wells: One row per well.
        labels: sirna id per row of ``wells``.
        include_controls: Keep the control wells' rows.
    """
    frame = pd.DataFrame({"id_code": wells["id_code"].to_numpy(), "sirna": np.asarray(labels)})
    if not include_controls:
        frame = frame[(wells["well_type"] == "treatment").to_numpy()]
    return frame.reset_index(drop=True).astype({"sirna": np.int64})


def validate_submission(
    frame: pd.DataFrame, expected: pd.Index, n_classes: int, where: str = "submission"
) -> None:
    """Raise UserError unless ``frame`` has every expected id once and labels in range.

    Args:
        frame: ``id_code,sirna`` rows.
        expected: ``expected_ids`` output.
        n_classes: Labels must be integers in ``0..n_classes - 1``.
        where: Names the submission in errors (e.g. its path).
    """
    if list(frame.columns) != SUBMISSION_COLUMNS:
        raise UserError(f"{where}: columns {list(frame.columns)}, expected {SUBMISSION_COLUMNS}")
    dupes = frame["id_code"][frame["id_code"].duplicated()]
    if len(dupes):
        raise UserError(f"{where}: id_code {dupes.iloc[0]!r} appears more than once")
    ids = pd.Index(frame["id_code"])
    missing = expected.difference(ids)
    if len(missing):
        raise UserError(
            f"{where}: {len(missing)} id_code(s) of the split missing, e.g. {list(missing[:3])}"
        )
    extra = ids.difference(expected)
    if len(extra):
        raise UserError(
            f"{where}: {len(extra)} id_code(s) not in the split, e.g. {list(extra[:3])}"
        )
    sirna = pd.to_numeric(frame["sirna"], errors="coerce")
    bad = sirna.isna() | (sirna % 1 != 0) | (sirna < 0) | (sirna >= n_classes)
    if bad.any():
        row = frame[bad.to_numpy()].iloc[0]
        raise UserError(
            f"{where}: sirna {row['sirna']!r} of {row['id_code']} is not a class "
            f"(0..{n_classes - 1})"
        )


def write_submission(frame: pd.DataFrame, path: Path | str) -> Path:
    """Write ``frame`` atomically as CSV (no index) and return the path."""
    path = Path(path)
    atomic_write_csv(frame[SUBMISSION_COLUMNS], path)
    return path


def read_submission(path: Path | str) -> pd.DataFrame:
    """Read a submission CSV (ids as strings); a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: submission file not found")
    try:
        return pd.read_csv(path, dtype={"id_code": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV ({e})") from None
