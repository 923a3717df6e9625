#!/usr/bin/env python
"""Pack a raw RxRx1 PNG tree (Kaggle or v1.0 layout) into DATASET/images.zarr + metadata.parquet.

Resumable: a rerun skips complete plates. Every chunk carries a crc32c checksum;
--verify re-reads every site (checksums checked) and compares it with its PNGs, and
--verify without --raw checks a copy of a dataset against its checksums alone.

Examples:
    python 01_data/pack_zarr.py --raw demo/raw --out demo/dataset --workers 2 --verify
    python 01_data/pack_zarr.py --out demo/dataset --verify      # a copied dataset
"""

import argparse
import sys

from cellblock.cli import run, writing
from cellblock.pack import pack_dataset, verify_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--raw", help="raw tree (train.csv/test.csv or metadata.csv)")
    p.add_argument("--out", required=True, help="dataset folder to create or complete")
    p.add_argument("--experiments", help="comma-separated subset, e.g. HEPG2-01,HUVEC-02")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.add_argument("--verify", action="store_true",
                   help="check every site's checksum (and, with --raw, its PNGs)")  # fmt: skip
    p.add_argument("--plate-wells", type=int, choices=[96, 384, 1536], help="plate format")
    args = p.parse_args()
    if args.raw is None:
        if not args.verify:
            p.error("--raw is required (or --verify alone, to check a packed dataset)")
        n = verify_dataset(args.out, args.workers)
        print(f"verified {n} sites of {args.out}: every chunk checksum matches")
        return

    experiments = args.experiments.split(",") if args.experiments else None
    # Progress bars only at a terminal: in a job's log they are noise around the result
    # (or the one-line error).
    with writing(args.out):
        s = pack_dataset(args.raw, args.out, experiments, args.workers, args.verify,
                         args.plate_wells, progress=sys.stderr.isatty())  # fmt: skip
    verified = f", verified {s['sites_verified']} sites" if args.verify else ""
    print(
        f"packed {s['plates_packed']} plate(s) ({s['plates_skipped']} already complete, "
        f"{s['sites']} sites, {s['plate_wells']}-well, {s['layout']} layout) into {args.out}: "
        f"{s['bytes'] / 1e6:.1f} MB in {s['seconds']:.1f} s{verified}"
    )


if __name__ == "__main__":
    run(main)
