#!/usr/bin/env python
"""Fetch a published checkpoint of a setup into a run folder, ready for predict/--init-from.

The registry 01_data/checkpoints.json maps a setup (02_train/<dataset>/<setup>) to where
its runs are published (scripts/publish.py). Files are checked against the publisher's
manifest; nothing needs editing by hand afterwards.

Example:
    python 01_data/fetch_checkpoint.py --setup 02_train/synthetic/tiny --out runs/tiny_fetched
"""

import argparse

from cellblock.cli import run, writing
from cellblock.paths import Project, add_project_argument
from cellblock.remote.catalog import checkpoint_entry, remote_of, select_checkpoint
from cellblock.remote.storage import Remote, download_objects, list_objects, make_client


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", required=True, help="02_train/<dataset>/<setup>")
    p.add_argument("--iteration", type=int, help="checkpoint iteration (default: the latest)")
    p.add_argument("--out", required=True, help="run folder to create or complete")
    p.add_argument("--endpoint-url", help="override the registry's endpoint")
    p.add_argument("--workers", type=int, default=8, help="parallel downloads")
    add_project_argument(p)
    args = p.parse_args()

    registry = Project.locate(args.project, start=__file__).checkpoints
    remote = remote_of(checkpoint_entry(args.setup, registry))
    if args.endpoint_url:
        remote = Remote(**{**remote.__dict__, "endpoint_url": args.endpoint_url})
    client = make_client(remote, max_connections=args.workers)
    iteration, objects = select_checkpoint(list_objects(client, remote), remote.prefix,
                                           args.iteration)  # fmt: skip
    with writing(args.out):
        s = download_objects(client, remote, objects, args.out, workers=args.workers)
    print(
        f"checkpoint iteration {iteration} of {args.setup} from {remote.url} in {args.out}: "
        f"{s['downloaded']} file(s) fetched, {s['skipped']} already present"
    )


if __name__ == "__main__":
    run(main)
