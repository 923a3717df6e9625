#!/usr/bin/env python
"""Fetch benchmark: parallel download of many small objects vs a sequential get_object loop.

Both run side by side in one process against the same local S3 server (SeaweedFS
on 127.0.0.1, started and stopped here), on the same objects, twice: straight to the
server, and through a proxy that delays every request by --latency-ms, the round
trip of a real object store (loopback has none, and on a 2-core machine client and
server then just compete for CPU, which no amount of parallelism fixes):

  sequential  one client, ``get_object`` + read, one object after another
  cellblock   ``download_objects`` (what fetch_data.py runs): N threads, each object
              written to a temp file, checked against its ETag (MD5), renamed

Target (issue 3): cellblock >= 5x sequential on 1,000 small objects. Writes a markdown
table and JSON to scripts/bench/results/.

    python scripts/bench/fetch.py [--objects 1000] [--size 16384] [--workers 16] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

import boto3

from cellblock.devservices import s3
from cellblock.remote.storage import Remote, download_objects, list_objects, make_client

ROOT = Path(__file__).resolve().parents[2]


def _serve_delayed(listen_port: int, target_port: int, delay: float, ready) -> None:
    """A TCP proxy on 127.0.0.1 that holds every client->server chunk for ``delay`` s."""

    async def pipe(reader, writer, wait: float) -> None:
        try:
            while data := await reader.read(65536):
                if wait:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_reader, server_writer, delay),
                             pipe(server_reader, client_writer, 0.0))  # fmt: skip

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(endpoint: str, bucket: str, n: int, workers: int, rounds: int, work: Path) -> dict:
    """Median seconds of the sequential loop and of download_objects, interleaved."""
    remote = Remote(bucket, "bench/", endpoint, anonymous=True)
    client = make_client(remote, max_connections=workers)
    objects = list_objects(client, remote)
    assert len(objects) == n
    times: dict[str, list[float]] = {"sequential": [], "cellblock": []}
    for r in range(rounds):
        start = time.perf_counter()
        for o in objects:
            client.get_object(Bucket=remote.bucket, Key=o.key)["Body"].read()
        times["sequential"].append(time.perf_counter() - start)
        dest = work / f"out{r}"
        start = time.perf_counter()
        download_objects(client, remote, objects, dest, workers=workers, progress=False)
        times["cellblock"].append(time.perf_counter() - start)
        shutil.rmtree(dest)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--objects", type=int, default=1000, help="number of objects")
    p.add_argument("--size", type=int, default=16384, help="bytes per object")
    p.add_argument("--workers", type=int, default=16, help="parallel downloads")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repeats (median kept)")
    p.add_argument("--latency-ms", type=int, default=20, help="added per request (0: skip)")
    p.add_argument("--out", type=Path, default=ROOT / "scripts" / "bench" / "results")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    server = s3.start(work / "s3")
    results = {}
    try:
        admin = s3.client(server)
        payload = os.urandom(args.size + args.objects)
        for i in range(args.objects):
            admin.put_object(Bucket=server.public_bucket, Key=f"bench/obj_{i:05d}.bin",
                             Body=payload[i : i + args.size])  # fmt: skip
        bucket = server.public_bucket
        results[0] = measure(server.endpoint_url, bucket, args.objects, args.workers,
                             args.rounds, work)  # fmt: skip
        if args.latency_ms:
            port, ready = _free_port(), multiprocessing.Event()
            proxy = multiprocessing.Process(
                target=_serve_delayed,
                args=(port, server.port, args.latency_ms / 1000, ready),
                daemon=True,
            )
            proxy.start()
            ready.wait(10)
            try:
                proxied = f"http://127.0.0.1:{port}"
                results[args.latency_ms] = measure(
                    proxied, bucket, args.objects, args.workers, args.rounds, work
                )
            finally:
                proxy.terminate()
    finally:
        s3.stop(work / "s3")
        shutil.rmtree(work, ignore_errors=True)

    env = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "python": platform.python_version(), "boto3": boto3.__version__,
           "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    rows = []
    for latency, med in results.items():
        label = "loopback, no added latency" if latency == 0 else f"{latency} ms per request"
        rows += [
            f"| {label} | sequential get_object loop | {med['sequential']:.2f} "
            f"| {args.objects / med['sequential']:.0f} | 1.0x |",
            f"| {label} | cellblock download_objects ({args.workers} threads) "
            f"| {med['cellblock']:.2f} | {args.objects / med['cellblock']:.0f} "
            f"| **{med['sequential'] / med['cellblock']:.1f}x** |",
        ]
    lines = [
        "# Fetch benchmark: parallel download vs sequential get_object",
        "",
        f"`python scripts/bench/fetch.py --objects {args.objects} --size {args.size} "
        f"--workers {args.workers} --latency-ms {args.latency_ms}`: SeaweedFS on 127.0.0.1, "
        f"median of {args.rounds} interleaved rounds. cellblock also writes each object to a "
        "temp file, checks its MD5 against the ETag and renames it; the loop only reads.",
        "",
        "| server | method | seconds | objects/s | speed-up |",
        "|---|---|---:|---:|---:|",
        *rows,
        "",
        "Target: >= 5x. Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fetch.md").write_text("\n".join(lines) + "\n")
    (args.out / "fetch.json").write_text(
        json.dumps({"environment": env, "seconds": results}, indent=2)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
