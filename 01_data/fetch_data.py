#!/usr/bin/env python
"""Fetch a raw dataset from object storage (S3 or any S3-compatible endpoint) or HTTPS.

Resumable: files already present and intact (size + checksum) are skipped; partial or
damaged ones are fetched again. Keys that would land outside --out are refused.

Examples:
    python 01_data/fetch_data.py --dataset demo --out demo/raw
    python 01_data/fetch_data.py --bucket my-lab --prefix screens/rxrx1/ --out raw \\
        --endpoint-url https://s3.example.org --experiments HEPG2-01,U2OS-02/Plate1
"""

import argparse
import time

from cellblock.cli import run, writing
from cellblock.cli.values import comma_list
from cellblock.errors import UserError
from cellblock.paths import Project, add_project_argument
from cellblock.remote.catalog import entry_of, remote_of, select_experiments
from cellblock.remote.httpfetch import fetch_archives
from cellblock.remote.storage import Remote, download_objects, list_objects, make_client


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a name from 01_data/datasets.json")
    src.add_argument("--bucket", help="bucket to fetch from")
    p.add_argument("--prefix", default="", help="key prefix within the bucket")
    p.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    p.add_argument("--anonymous", action="store_true", help="unsigned requests (public buckets)")
    p.add_argument("--profile", help="AWS profile for credentials")
    p.add_argument("--catalog", help="dataset catalog JSON (default: the project's "
                   "01_data/datasets.json)")  # fmt: skip
    add_project_argument(p)
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument("--experiments", help="subset: EXP or EXP/PlateN, comma-separated")
    p.add_argument("--workers", type=int, default=16, help="parallel downloads")
    p.add_argument("--retries", type=int, default=8, help="tries per file (backoff to 8 s)")
    args = p.parse_args()
    with writing(args.out):
        fetch(args)


def fetch(args: argparse.Namespace) -> None:
    """Fetch what ``args`` name into ``args.out`` and print a summary.

    Args:
        args: The parsed command line.
    """
    wanted = comma_list(args.experiments, what="--experiments") or None
    start = time.perf_counter()
    if args.dataset:
        catalog = args.catalog or Project.locate(args.project, start=__file__).catalog
        entry = entry_of(args.dataset, catalog)
        if entry["kind"] == "https":
            summary = fetch_archives(entry["files"], args.out, wanted)
            print(f"fetched {args.dataset} ({entry['license']}) into {args.out}: {summary}")
            return
        remote = remote_of(entry)
        if args.endpoint_url:
            remote = Remote(**{**remote.__dict__, "endpoint_url": args.endpoint_url})
    else:
        remote = Remote(args.bucket, args.prefix, args.endpoint_url, args.anonymous, args.profile)
    client = make_client(remote, max_connections=args.workers)
    objects = select_experiments(list_objects(client, remote), remote.prefix, wanted)
    if not objects:
        raise UserError(f"{remote.url}: nothing to fetch")
    s = download_objects(client, remote, objects, args.out, workers=args.workers,
                         attempts=args.retries)  # fmt: skip
    print(
        f"fetched {remote.url} into {args.out}: {s['downloaded']} file(s), "
        f"{s['bytes'] / 1e6:.1f} MB downloaded, {s['skipped']} already present, "
        f"{time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    run(main)
