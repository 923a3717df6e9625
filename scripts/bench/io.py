#!/usr/bin/env python
"""IO benchmark: read a site from packed zarr vs decode its 6 PNGs vs the raw codec.

Side by side in one run, on the same random sites of an RxRx1-sized synthetic
experiment (512 x 512 x 6, 384-well plates):

  png     decode the site's 6 PNG files with Pillow (what the Kaggle layout costs)
  packed  PackedDataset.read_site, the loaders' path (cellblock.shardread: pread + decode)
  zarr    zarr-python's own read of the same chunk (arr[row, col, site]), for reference
  codec   the codec alone (numcodecs Blosc) on the same compressed bytes, in memory

and, apart, the crc32c check alone on the same chunks (what the checksum costs).

each in one process and in N DataLoader-style worker processes (each opens its
own reader once, then reads its share of the sites). Writes a markdown table and
JSON to scripts/bench/results/. Targets (DESIGN §5): packed >= 5x png per site,
and packed >= 0.8x codec (packed verifies every chunk's crc32c; codec does not).

    python scripts/bench/io.py [--sites 200] [--workers 2] [--data bench_data/io]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import google_crc32c
import numcodecs
import numpy as np
import PIL
import zarr

from cellblock.dataset import PackedDataset
from cellblock.pack import COMPRESSOR, pack_dataset
from cellblock.plates import site_path
from cellblock.rawtree import read_png
from cellblock.shardread import _CRC32C_RESIDUE, ShardReader
from cellblock.synth import preset, write_dataset

ROOT = Path(__file__).resolve().parents[2]
# RxRx1 geometry (512 px, 6 channels, 384-well plates); fewer treatments per plate
# so one experiment generates in about a minute.
CONFIG = preset("rxrx1").replace(n_treatments=160, experiments_per_cell_type=1, test_fraction=0)
EXPERIMENT = "HEPG2-01"


def prepare(data: Path, workers: int) -> tuple[Path, Path]:
    raw, packed = data / "raw", data / "dataset"
    if not (raw / "train.csv").is_file():
        write_dataset(CONFIG, raw, experiments=[EXPERIMENT], workers=workers)
    reader = ShardReader.open(packed / "images.zarr" / EXPERIMENT / "Plate1")
    if reader is not None and not reader.checksummed:  # packed before chunk checksums
        shutil.rmtree(packed)
    pack_dataset(raw, packed, workers=workers)  # skips complete plates
    return raw, packed


def chunk_bytes(
    packed: Path, exp: str, plate: int, row: int, col: int, site: int, n_cols: int, n_sites: int
) -> bytes:
    """The stored bytes of one site's chunk (Blosc frame + crc32c), via the shard index."""
    shard = (
        packed
        / "images.zarr"
        / exp
        / f"Plate{plate}"
        / "c"
        / str(row)
        / "0"
        / "0"
        / "0"
        / "0"
        / "0"
    ).read_bytes()
    n = n_cols * n_sites  # chunks per shard; index = n x (offset, nbytes) uint64 + crc32c
    index = np.frombuffer(shard[-(16 * n + 4) : -4], dtype="<u8").reshape(n, 2)
    offset, nbytes = index[col * n_sites + (site - 1)]
    return shard[offset : offset + nbytes]


# --- readers, one site each; module level so worker processes can run them ---------------
_state: dict = {}


def _init(raw: str, packed: str, blobs: list[bytes] | None) -> None:
    _state.update(
        raw=Path(raw),
        ds=PackedDataset(packed),
        blobs=blobs,
        codec=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE),
    )


class Site(NamedTuple):
    index: int  # position in the sample (and in the list of compressed chunks)
    experiment: str
    plate: int
    split: str
    well: str
    row: int
    col: int
    site: int


def _read_png(s: Site) -> int:
    image = np.stack(
        [
            read_png(
                _state["raw"]
                / site_path("kaggle", s.split, s.experiment, s.plate, s.well, s.site, c)
            )
            for c in range(1, 7)
        ]
    )
    return int(image[0, 0, 0])


def _read_packed(s: Site) -> int:
    return int(_state["ds"].read_site(s.experiment, s.plate, s.row, s.col, s.site)[0, 0, 0])


def _read_zarr(s: Site) -> int:
    return int(_state["ds"].plate(s.experiment, s.plate)[s.row, s.col, s.site - 1][0, 0, 0])


def _read_codec(s: Site) -> int:
    raw = _state["codec"].decode(memoryview(_state["blobs"][s.index])[:-4])
    return int(np.frombuffer(raw, np.uint8)[0])


READERS = {"png": _read_png, "packed": _read_packed, "zarr": _read_zarr, "codec": _read_codec}


def crc_ms(blobs: list[bytes], passes: int = 5) -> float:
    """Milliseconds per site of the crc32c check as read_site does it (best of ``passes``)."""
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for blob in blobs:
            if google_crc32c.value(blob) != _CRC32C_RESIDUE:
                raise AssertionError("crc32c mismatch")
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / len(blobs)


def _worker_run(args) -> int:
    name, sites = args
    return sum(READERS[name](s) for s in sites)


def measure(name: str, sites: list, workers: int, pools: dict) -> float:
    """Sites per second reading ``sites`` with reader ``name`` in ``workers`` processes."""
    start = time.perf_counter()
    if workers <= 1:
        for s in sites:
            READERS[name](s)
    else:
        shares = [(name, sites[w::workers]) for w in range(workers)]
        pools[workers].map(_worker_run, shares)
    return len(sites) / (time.perf_counter() - start)


def environment() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "load average (1 min, at the end)": round(os.getloadavg()[0], 1),  # a busy machine?
        "codec": COMPRESSOR.to_dict(),
        "site": "6 x 512 x 512 uint8, 384-well plates",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "bench_data" / "io", help="work folder")
    p.add_argument("--sites", type=int, default=200, help="random sites read per method")
    p.add_argument("--workers", type=int, default=2, help="DataLoader-style worker processes")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repeats (median kept)")
    p.add_argument("--out", type=Path, default=ROOT / "scripts" / "bench" / "results")
    args = p.parse_args()

    raw, packed = prepare(args.data, args.workers)
    ds = PackedDataset(packed)
    meta = ds.metadata
    rng = np.random.default_rng(0)
    pick = meta.iloc[rng.choice(len(meta), size=min(args.sites, len(meta)), replace=False)]
    sites = [
        Site(i, r.experiment, int(r.plate), r.split, r.well, int(r.row), int(r.col), int(r.site))
        for i, r in enumerate(pick.itertuples())
    ]
    n_cols, n_sites = ds.info.plate_shape[1], ds.info.n_sites
    blobs = [
        chunk_bytes(packed, s.experiment, s.plate, s.row, s.col, s.site, n_cols, n_sites)
        for s in sites
    ]
    _init(str(raw), str(packed), blobs)
    for s, blob in zip(sites[:5], blobs[:5], strict=True):  # the codec path decodes zarr's bytes
        decoded = np.frombuffer(_state["codec"].decode(blob[:-4]), np.uint8).reshape(6, 512, 512)
        assert np.array_equal(decoded, ds.read_site(s.experiment, s.plate, s.row, s.col, s.site))

    ctx = get_context("fork")
    pools = {args.workers: ctx.Pool(args.workers, _init, (str(raw), str(packed), blobs))}
    rates: dict[tuple[str, int], list[float]] = {}
    for name in READERS:  # warm the page cache and the readers once
        measure(name, sites[:20], 1, pools)
    for _ in range(args.rounds):
        for workers in (1, args.workers):
            for name in READERS:
                rates.setdefault((name, workers), []).append(measure(name, sites, workers, pools))
    pools[args.workers].close()

    med = {k: statistics.median(v) for k, v in rates.items()}
    mb = 6 * 512 * 512 / 1e6
    rows = []
    for workers in (1, args.workers):
        png, packed, zr, codec = (med[(n, workers)] for n in READERS)
        rows.append((workers, png, packed, zr, codec, packed / png, packed / codec))
    check_ms = crc_ms(blobs)
    env = environment()
    lines = [
        "# IO benchmark: packed zarr vs PNG decode vs raw codec",
        "",
        f"`python scripts/bench/io.py --sites {args.sites} --workers {args.workers}` "
        f"(sites/s, median of {args.rounds} interleaved rounds, warm page cache).",
        "",
        "| processes | PNG | packed (read_site) | zarr-python | codec only "
        "| packed / PNG | packed / codec |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {w} | {p:.1f} | {k:.1f} | {z:.1f} | {c:.1f} | **{kp:.1f}x** | **{kc:.2f}** |"
            for w, p, k, z, c, kp, kc in rows
        ],
        "",
        f"Targets: packed / PNG >= 5x, packed / codec >= 0.80. One site = {mb:.2f} MB "
        f"(packed, 1 process: {rows[0][2] * mb:.0f} MB/s). packed and zarr-python verify "
        f"each chunk's crc32c; the check alone takes {check_ms:.3f} ms per site, "
        f"{100 * check_ms * rows[0][2] / 1e3:.1f}% of a packed read (1 process).",
        "",
        "Environment: "
        + ", ".join(f"{k} {v}" for k, v in env.items() if k != "codec")
        + f"; codec {json.dumps(env['codec'])}.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "io.md").write_text("\n".join(lines) + "\n")
    (args.out / "io.json").write_text(
        json.dumps(
            {"environment": env, "rates": {f"{n}@{w}": v for (n, w), v in rates.items()}}, indent=2
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
