#!/usr/bin/env python
"""Pack a raw RxRx1 PNG tree (Kaggle or v1.0 layout) into DATASET/images.zarr + metadata.parquet.

Resumable: a rerun skips complete plates. --verify re-reads every site and compares it
with its PNGs.

Example:
    python 01_data/pack_zarr.py --raw demo/raw --out demo/dataset --workers 2 --verify
"""

import argparse

from cellblock.cli import run
from cellblock.pack import pack_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--raw", required=True, help="raw tree (train.csv/test.csv or metadata.csv)")
    p.add_argument("--out", required=True, help="dataset folder to create or complete")
    p.add_argument("--experiments", help="comma-separated subset, e.g. HEPG2-01,HUVEC-02")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.add_argument("--verify", action="store_true", help="compare packed pixels with the PNGs")
    p.add_argument("--plate-wells", type=int, choices=[96, 384, 1536], help="plate format")
    args = p.parse_args()

    experiments = args.experiments.split(",") if args.experiments else None
    s = pack_dataset(args.raw, args.out, experiments, args.workers, args.verify, args.plate_wells)
    verified = f", verified {s['sites_verified']} sites" if args.verify else ""
    print(
        f"packed {s['plates_packed']} plate(s) ({s['plates_skipped']} already complete, "
        f"{s['sites']} sites, {s['plate_wells']}-well, {s['layout']} layout) into {args.out}: "
        f"{s['bytes'] / 1e6:.1f} MB in {s['seconds']:.1f} s{verified}"
    )


if __name__ == "__main__":
    run(main)
