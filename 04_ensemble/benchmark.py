#!/usr/bin/env python
"""Compare models' well profiles side by side: copairs mAP, probes, batch, rotation (--help)."""

import argparse

from cellblock.cli import run, writing
from cellblock.cli.values import comma_list
from cellblock.errors import UserError
from cellblock.profiling.align import ALIGNMENTS, DEFAULT_ALIGN
from cellblock.profiling.benchmark import run_benchmark
from cellblock.profiling.benchreport import headline
from cellblock.screen.sites import SPLITS


def main() -> None:
    p = argparse.ArgumentParser(
        description="Score the well profiles of one or more models (predictions stores or "
        "ensemble outputs) side by side on one split: copairs mAP for phenotypic activity and "
        "consistency across experiments, a linear siRNA probe on held-out experiments, the "
        "residual batch effect, rotation invariance, intrinsic dimension and known-"
        "relationship recall. Writes BENCH/benchmark.json, benchmark.md and benchmark.png.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="PRED_OR_OUT",
        help="prediction folder / predictions.zarr, or an ensemble output folder",
    )
    p.add_argument("--data", required=True, help="the packed dataset predicted (answer key)")
    p.add_argument("--out", required=True, help="output folder BENCH")
    p.add_argument("--names", help="comma-separated model names (default: folder names)")
    p.add_argument("--split", default="test", choices=SPLITS, help="wells scored")
    p.add_argument(
        "--align",
        default=DEFAULT_ALIGN,
        choices=ALIGNMENTS,
        help="alignment of a store's profiles, fitted on controls (default standardize)",
    )
    p.add_argument(
        "--relationships",
        metavar="CSV",
        help="known pairs: sirna_a,sirna_b[,relationship] (e.g. the synthetic "
        "screen's relationships.csv)",
    )
    p.add_argument("--profile-dim", type=int, default=512, help="widest profile (default 512)")
    p.add_argument("--null-size", type=int, default=10000, help="copairs null size (10000)")
    p.add_argument(
        "--rotation-sites",
        type=int,
        default=64,
        help="sites embedded under each D4 view (0: skip; default 64)",
    )
    p.add_argument("--device", default="auto", help="model device for the rotation metric")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()  # fmt: skip
    if args.profile_dim < 1 or args.null_size < 1:
        raise UserError("--profile-dim and --null-size must be positive")
    names = comma_list(args.names, what="--names") or None
    with writing(args.out):
        bench = run_benchmark(args.inputs, args.data, args.out, names=names, split=args.split,
                              align=args.align, relationships=args.relationships,
                              profile_dim=args.profile_dim, null_size=args.null_size,
                              rotation_sites=args.rotation_sites, seed=args.seed,
                              device=args.device)  # fmt: skip
    with open(bench["outputs"]["markdown"]) as f:
        print(f.read().split("\n![")[0].rstrip())
    for model in bench["models"]:
        print(f"{model['name']}: {headline(model)}")


if __name__ == "__main__":
    run(main)
