#!/usr/bin/env python
"""Pseudo labels (id_code,sirna,confidence) from an ensemble's assigned predictions (--help)."""

import argparse

from cellblock.cli import run, writing
from cellblock.ensemble import pseudo_labels, write_pseudo_labels
from cellblock.store.packed import PackedDataset


def main() -> None:
    p = argparse.ArgumentParser(
        description="Write the pseudo-label CSV of the training's pseudo-label setup "
        "(data.pseudo_labels) from 04_ensemble/ensemble.py's output folder: the assigned "
        "label of every test treatment well with its confidence.",
    )
    p.add_argument("ensemble_out", metavar="OUT", help="the ensemble's output folder")
    p.add_argument("--data", required=True, help="the packed dataset the ensemble ran on")
    p.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        help="keep wells whose assigned label is at least this likely (0..1)",
    )
    p.add_argument("--out", required=True, help="the CSV to write, e.g. pseudo.csv")
    args = p.parse_args()
    packed = PackedDataset(args.data)
    labels = pseudo_labels(args.ensemble_out, packed, args.min_confidence)
    with writing(args.out):
        path = write_pseudo_labels(labels, args.out, packed.metadata)
    print(f"wrote {len(labels)} pseudo labels to {path}")


if __name__ == "__main__":
    run(main)
