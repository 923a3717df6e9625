#!/usr/bin/env python
"""Accuracy of a submission against the dataset's answer key (--help)."""

import argparse
import json
from pathlib import Path

from cellblock.atomic import atomic_write_text
from cellblock.cli import run, writing
from cellblock.cli.values import comma_list
from cellblock.ensemble import expected_ids, read_submission, validate_submission
from cellblock.errors import UserError
from cellblock.finished import require_finished
from cellblock.metrics import accuracy_breakdown, format_breakdown
from cellblock.screen.sites import SPLITS, select_sites, well_table
from cellblock.store.packed import PackedDataset


def main() -> None:
    p = argparse.ArgumentParser(
        description="Validate a Kaggle-format submission (id_code,sirna) against a packed "
        "dataset's split and print its accuracy overall, per cell type and per experiment.",
    )
    p.add_argument("submission", metavar="SUBMISSION", help="submission CSV")
    p.add_argument("--data", required=True, help="packed dataset with the answer key")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument(
        "--experiments",
        help="comma-separated experiments or EXP/PlateN plates the submission covers",
    )
    p.add_argument(
        "--include-controls", action="store_true", help="the submission also has the control wells"
    )
    p.add_argument("--json", help="also write the numbers to this JSON file")
    args = p.parse_args()
    packed = PackedDataset(args.data)
    experiments = comma_list(args.experiments, what="--experiments") or None
    wells, _ = well_table(select_sites(packed.metadata, args.split, experiments))
    # an ensemble's submission.csv: only a finished run's, not a stopped or mixed one's
    require_finished(Path(args.submission).parent, "ensemble")
    frame = read_submission(args.submission)
    validate_submission(
        frame,
        expected_ids(wells, args.include_controls),
        int(packed.metadata["sirna"].max()) + 1,
        args.submission,
    )
    scored = wells.set_index("id_code").loc[frame["id_code"]].reset_index()
    result = accuracy_breakdown(scored, frame["sirna"].to_numpy())
    if result is None:
        raise UserError(f"{args.data}: no answer key for split {args.split!r}; cannot score")
    print(format_breakdown({"accuracy": result}))
    if args.json:
        with writing(args.json):
            atomic_write_text(Path(args.json), json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    run(main)
