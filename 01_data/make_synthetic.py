#!/usr/bin/env python
"""Generate a synthetic RxRx1-style screen in the Kaggle layout (PNG tree + tables).

Example:
    python 01_data/make_synthetic.py --out demo/raw --preset demo --workers 2
"""

import argparse
import time

from cellblock.cli import parse_overrides, run, writing
from cellblock.cli.values import comma_list
from cellblock.synth import PRESETS, preset, write_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (the raw tree)")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="base settings")
    p.add_argument("--seed", type=int, help="random seed (same seed -> same bytes)")
    p.add_argument("--classes", type=int, dest="n_treatments", help="siRNA treatments (x4)")
    p.add_argument("--positive-controls", type=int, dest="n_positive_controls")
    p.add_argument("--experiments-per-cell-type", type=int)
    p.add_argument("--test-fraction", type=float, help="held-out share of experiments")
    p.add_argument("--image-size", type=int, help="pixels per side")
    p.add_argument("--sites", type=int, dest="n_sites", help="sites per well")
    p.add_argument("--plate-wells", type=int, choices=[96, 384, 1536])
    p.add_argument("--effect-size", type=float, help="siRNA phenotype strength")
    p.add_argument("--batch-strength", type=float, help="experiment/plate effect strength")
    p.add_argument(
        "--sirnas-per-gene",
        type=int,
        help="siRNAs sharing a target gene (writes relationships.csv; default 1)",
    )
    p.add_argument(
        "--genes-per-pathway",
        type=int,
        help="genes sharing a pathway (writes relationships.csv; default 1)",
    )
    p.add_argument(
        "--negative-controls",
        type=int,
        help="negative-control wells per plate (RxRx1 and default: 1)",
    )
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other settings")
    p.add_argument("--experiments", help="comma-separated subset, e.g. HEPG2-01,U2OS-02")
    p.add_argument("--layout", default="kaggle", choices=["kaggle", "v1"])
    p.add_argument("--workers", type=int, default=1, help="processes")
    args = p.parse_args()

    flags = (
        "seed",
        "n_treatments",
        "n_positive_controls",
        "experiments_per_cell_type",
        "test_fraction",
        "image_size",
        "n_sites",
        "plate_wells",
        "effect_size",
        "batch_strength",
        "sirnas_per_gene",
        "genes_per_pathway",
        "negative_controls",
    )
    changes = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    config = preset(args.preset).replace(**changes, **parse_overrides(args.set))
    experiments = comma_list(args.experiments, what="--experiments") or None
    start = time.perf_counter()
    with writing(args.out):
        summary = write_dataset(config, args.out, args.layout, experiments, args.workers)
    print(
        f"wrote {summary['files']} PNGs ({summary['plates']} plates of {summary['plate_wells']} "
        f"wells, {summary['sites']} sites, {summary['classes']} classes) to {args.out} "
        f"in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    run(main)
