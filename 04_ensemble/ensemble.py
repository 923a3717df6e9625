#!/usr/bin/env python
"""Combine predictions, solve the per-plate assignment, write submission and report (--help)."""

import argparse
import logging

from cellblock.cli import run, writing
from cellblock.cli.values import comma_list
from cellblock.ensemble import COMBINE_MODES, run_ensemble
from cellblock.ensemble.report import accuracy_line, map_line
from cellblock.errors import UserError
from cellblock.profiling.align import ALIGNMENTS, DEFAULT_ALIGN
from cellblock.screen.sites import SPLITS

log = logging.getLogger("cellblock")


def _floats(text: str) -> list[float]:
    try:
        return comma_list(text, what="--weights", type=float)
    except UserError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,0.5,2, got {text!r}") from None


def main() -> None:
    p = argparse.ArgumentParser(
        description="Combine predictions stores (models / folds / channel subsets), merge the "
        "two sites of each well, mask each plate to its treatment group and solve the per-plate "
        "assignment; write OUT/submission.csv (Kaggle id_code,sirna), report.json, report.md, "
        "plots, wells.parquet and profiles.parquet.",
    )
    p.add_argument("preds", nargs="+", metavar="PRED", help="prediction folder or predictions.zarr")
    p.add_argument("--data", required=True, help="the packed dataset that was predicted")
    p.add_argument("--split", default="test", choices=SPLITS, help="wells to ensemble")
    p.add_argument(
        "--experiments", help="comma-separated experiments or EXP/PlateN plates of the split"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", type=_floats, help="one weight per PRED, e.g. 2,1 (default equal)")
    p.add_argument("--combine", default="mean-logits", choices=COMBINE_MODES)
    p.add_argument("--no-assign", action="store_true", help="plain argmax, no plate step")
    p.add_argument("--no-groups", action="store_true",
                   help="assign per plate without the treatment-group mask")  # fmt: skip
    p.add_argument("--include-controls", action="store_true",
                   help="control wells in the submission too (Kaggle: treatments)")  # fmt: skip
    p.add_argument("--profile-dim", type=int, default=512,
                   help="widest per-well profile; wider embeddings keep their leading "
                   "principal components (default 512)")  # fmt: skip
    p.add_argument("--align", default=DEFAULT_ALIGN, choices=ALIGNMENTS,
                   help="alignment of profiles.parquet, fitted on control wells "
                   "(default standardize)")  # fmt: skip
    p.add_argument("--null-size", type=int, default=10000,
                   help="copairs null size of the summary's mAP (default 10000)")  # fmt: skip
    args = p.parse_args()
    if args.null_size < 1:
        raise UserError(f"--null-size {args.null_size}: need a positive size")
    if args.profile_dim < 1:
        raise UserError(f"--profile-dim {args.profile_dim}: need a positive width")
    if args.no_assign and args.no_groups:
        raise UserError("--no-groups only applies with the assignment (drop --no-assign)")
    experiments = comma_list(args.experiments, what="--experiments") or None
    with writing(args.out):
        report = run_ensemble(args.preds, args.data, args.out, split=args.split,
                              experiments=experiments, weights=args.weights,
                              mode=args.combine, plate_step=not args.no_assign,
                              use_groups=not args.no_groups,
                              include_controls=args.include_controls,
                              profile_dim=args.profile_dim, align=args.align,
                              null_size=args.null_size)  # fmt: skip
    log.info("wrote %s, report.json, report.md and plots in %s", report["outputs"]["submission"],
             args.out)  # fmt: skip
    print(map_line(report))
    print(accuracy_line(report, args.split))


if __name__ == "__main__":
    run(main)
