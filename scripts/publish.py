#!/usr/bin/env python
"""Publish a folder (raw data, a run's checkpoints, predictions) to S3 with a checksum manifest.

Uploads every file under FOLDER to s3://BUCKET/PREFIX/, then PREFIX/manifest.json
(size + SHA-256 of each file), which fetch_data.py / fetch_checkpoint.py verify against.

Example:
    python scripts/publish.py demo/raw --bucket cellblock-public --prefix demo/raw/
"""

import argparse

from cellblock.cli import run
from cellblock.remote.storage import Remote, make_client, upload_folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("folder", help="folder to upload")
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="", help="key prefix (a trailing / is added)")
    p.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    p.add_argument("--profile", help="AWS profile for credentials")
    p.add_argument("--workers", type=int, default=16, help="parallel uploads")
    args = p.parse_args()

    remote = Remote(args.bucket, args.prefix, args.endpoint_url, profile=args.profile)
    client = make_client(remote, max_connections=args.workers)
    s = upload_folder(client, remote, args.folder, workers=args.workers)
    print(f"published {s['files']} file(s), {s['bytes'] / 1e6:.1f} MB to {remote.url} (+ manifest)")


if __name__ == "__main__":
    run(main)
