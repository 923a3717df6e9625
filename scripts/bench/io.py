#!/usr/bin/env python
"""IO benchmark: read a site from the packed OME-Zarr plates vs decode its 6 PNGs vs the codec.

Side by side in one run, on the same random sites of an RxRx1-sized synthetic
experiment (512 x 512 x 6, 384-well plates):

  png         decode the site's 6 PNG files with Pillow (what the Kaggle layout costs)
  packed      PackedDataset.read_site on folder plates, the loaders' path
              (cellblock.store.fieldread: read the chunk file, crc32c, decode)
  packed-zip  the same on zipped plates (one .ozx per plate: one pread per site)
  zarr        zarr-python's own read of the same field array (open + [:]), for reference
  codec       the codec alone (numcodecs Zstd) on the same compressed bytes, in memory

and, apart, the crc32c check alone on the same chunks (what the checksum costs),

each in one process and in N DataLoader-style worker processes, rounds interleaved
(this shared machine's speed drifts). Then the storage: bytes against the PNGs, files
per plate, and the lossless codecs zarr v3 readers (zarr-python, tensorstore,
neuroglancer) all decode, side by side on the same sites (size with the pyramid,
encode and decode time). Writes a markdown table and JSON to scripts/bench/results/.
Targets (DESIGN §5): packed >= 5x png per site, packed >= 0.8x codec, and the
dataset no larger than its PNGs.

    python scripts/bench/io.py [--sites 200] [--workers 2] [--rounds 5] [--data bench_data/io]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import google_crc32c
import numcodecs
import numpy as np
import PIL
import zarr

from cellblock.screen.plates import site_path
from cellblock.store.chunkcodec import CRC32C_RESIDUE
from cellblock.store.omezarr import LEVELS, chunk_name, downsample, field_name
from cellblock.store.pack import CODEC, pack_dataset
from cellblock.store.packed import PackedDataset
from cellblock.store.platestore import ZipWriter, open_plate
from cellblock.store.rawtree import read_png
from cellblock.synth import preset, write_dataset

ROOT = Path(__file__).resolve().parents[2]
# RxRx1 geometry (512 px, 6 channels, 384-well plates); fewer treatments per plate
# so one experiment generates in about a minute.
CONFIG = preset("rxrx1").replace(n_treatments=160, experiments_per_cell_type=1, test_fraction=0)
EXPERIMENT = "HEPG2-01"
# (name, numcodecs codec, zarr v3 codec chain) compared on the same sites
CODECS = [
    ("blosc zstd-3 bitshuffle (previous layout)", numcodecs.Blosc("zstd", 3, 2), "blosc"),
    ("blosc zstd-5 noshuffle", numcodecs.Blosc("zstd", 5, 0), "blosc"),
    ("blosc lz4hc-9 bitshuffle", numcodecs.Blosc("lz4hc", 9, 2), "blosc"),
    ("gzip-6", numcodecs.GZip(6), "gzip"),
    ("zstd-3", numcodecs.Zstd(3), "zstd"),
    ("zstd-9", numcodecs.Zstd(9), "zstd"),
    ("zstd-16 (packed)", numcodecs.Zstd(16), "zstd"),
    ("zstd-19", numcodecs.Zstd(19), "zstd"),
]


def prepare(data: Path, workers: int) -> tuple[Path, Path, Path, float]:
    """Raw tree, folder-plate dataset, zip-plate dataset, and pack seconds per site."""
    raw, packed, zipped = data / "raw", data / "dataset", data / "dataset-zip"
    if not (raw / "train.csv").is_file():
        write_dataset(CONFIG, raw, experiments=[EXPERIMENT], workers=workers)
    try:
        PackedDataset(packed)
    except ValueError:  # an older layout, or nothing yet
        shutil.rmtree(packed, ignore_errors=True)
        shutil.rmtree(zipped, ignore_errors=True)
    summary = pack_dataset(raw, packed, workers=workers)  # skips complete plates
    timing = data / "pack_time.json"  # the packing cost, kept from the run that packed
    if summary["plates_packed"] == 4:
        per_site = summary["seconds"] * workers / summary["sites"]
        timing.write_text(json.dumps({"cpu_s_per_site": per_site, "workers": workers}))
    per_site = json.loads(timing.read_text())["cpu_s_per_site"] if timing.is_file() else 0
    if not zipped.exists():  # the same bytes in one zip per plate (what --store zip writes)
        shutil.copytree(packed, zipped, ignore=shutil.ignore_patterns("Plate*"))
        info = json.loads((zipped / "images.zarr" / "zarr.json").read_text())
        info["attributes"]["cellblock"]["store"] = "zip"
        (zipped / "images.zarr" / "zarr.json").write_text(json.dumps(info, indent=2))
        for plate in sorted((packed / "images.zarr" / EXPERIMENT).glob("Plate*")):
            writer = ZipWriter(zipped / "images.zarr" / EXPERIMENT / f"{plate.name}.ozx")
            files = open_plate(plate)
            for name in files.names():
                if name != "zarr.json":
                    writer.write(name, files.read(name))
            writer.commit(files.read("zarr.json"))
    return raw, packed, zipped, per_site


class Site(NamedTuple):
    index: int  # position in the sample (and in the list of compressed chunks)
    experiment: str
    plate: int
    split: str
    well: str
    row: int
    col: int
    site: int
    field: str  # e.g. "B/02/0"


# --- readers, one site each; module level so worker processes can run them ---------------
_state: dict = {}


def _init(raw: str, packed: str, zipped: str, blobs: list[bytes] | None) -> None:
    _state.update(
        raw=Path(raw),
        ds=PackedDataset(packed),
        zds=PackedDataset(zipped),
        blobs=blobs,
        codec=numcodecs.Zstd(CODEC.level),
    )


def _read_png(s: Site) -> int:
    image = np.stack(
        [
            read_png(
                _state["raw"]
                / site_path("kaggle", s.split, s.experiment, s.plate, s.well, s.site, channel=c)
            )
            for c in range(1, 7)
        ]
    )
    return int(image[0, 0, 0])


def _read_packed(s: Site) -> int:
    return int(_state["ds"].read_site(s.experiment, s.plate, s.row, s.col, s.site)[0, 0, 0])


def _read_zip(s: Site) -> int:
    return int(_state["zds"].read_site(s.experiment, s.plate, s.row, s.col, s.site)[0, 0, 0])


def _read_zarr(s: Site) -> int:
    path = _state["ds"].plate_path(s.experiment, s.plate) / s.field / "0"
    return int(zarr.open_array(path, mode="r")[:][0, 0, 0])


def _read_codec(s: Site) -> int:
    raw = _state["codec"].decode(memoryview(_state["blobs"][s.index])[:-4])
    return int(np.frombuffer(raw, np.uint8)[0])


READERS = {
    "png": _read_png,
    "packed": _read_packed,
    "packed-zip": _read_zip,
    "zarr": _read_zarr,
    "codec": _read_codec,
}


def crc_ms(blobs: list[bytes], passes: int = 5) -> float:
    """Milliseconds per site of the crc32c check as read_site does it (best of ``passes``)."""
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for blob in blobs:
            if google_crc32c.value(blob) != CRC32C_RESIDUE:
                raise AssertionError("crc32c mismatch")
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / len(blobs)


def interleaved(sites: list) -> dict[str, float]:
    """Seconds each reader spends on ``sites``, the readers taking turns site by site in
    a fresh random order each time, so that all see the same moments of a machine whose
    speed drifts, and none always follows the same other one (what the reader before
    leaves in the caches and the allocator shows up in the next one's time)."""
    names, spent = list(READERS), dict.fromkeys(READERS, 0.0)
    rng = np.random.default_rng(len(sites))
    for s in sites:
        for name in rng.permutation(names):
            start = time.perf_counter()
            READERS[name](s)
            spent[name] += time.perf_counter() - start
    return spent


def measure(sites: list, workers: int, pools: dict) -> dict[str, float]:
    """Sites per second of every reader on ``sites`` in ``workers`` processes (each
    worker interleaves the readers over its share; their rates add up)."""
    if workers <= 1:
        return {name: len(sites) / t for name, t in interleaved(sites).items()}
    shares = [sites[w::workers] for w in range(workers)]
    spent = pools[workers].map(interleaved, shares)
    return {
        name: sum(len(sh) / t[name] for sh, t in zip(shares, spent, strict=True))
        for name in READERS
    }


def compare_codecs(raw: Path, sites: list[Site], rounds: int) -> list[dict]:
    """Every candidate codec on the same sites: bytes (pyramid included), encode, decode."""
    images = [
        np.stack(
            [
                read_png(
                    raw
                    / site_path("kaggle", s.split, s.experiment, s.plate, s.well, s.site, channel=c)
                )
                for c in range(1, 7)
            ]
        )
        for s in sites
    ]
    png = sum(
        (raw / site_path("kaggle", s.split, s.experiment, s.plate, s.well, s.site, channel=c))
        .stat()
        .st_size
        for s in sites
        for c in range(1, 7)
    )
    encoded, encode_s = [], []
    for _, codec, _ in CODECS:
        start = time.perf_counter()
        encoded.append([codec.encode(im) for im in images])
        encode_s.append((time.perf_counter() - start) / len(images))
    decode_s: list[list[float]] = [[] for _ in CODECS]
    for _ in range(rounds):  # codecs take turns, as the readers do
        for i, (_, codec, _) in enumerate(CODECS):
            start = time.perf_counter()
            for blob in encoded[i]:
                codec.decode(blob)
            decode_s[i].append((time.perf_counter() - start) / len(images))
    rows = []
    for i, (name, codec, chain) in enumerate(CODECS):
        pyramid = sum(len(codec.encode(downsample(im, f))) for im in images for f in LEVELS[1:])
        size = sum(map(len, encoded[i]))
        rows.append(
            {
                "codec": name,
                "chain": chain,
                "ratio": images[0].nbytes * len(images) / size,
                "vs_png": (size + pyramid) / png,
                "encode_ms": 1e3 * encode_s[i],
                "decode_ms": 1e3 * statistics.median(decode_s[i]),
            }
        )
    return rows


def storage(raw: Path, packed: Path, zipped: Path) -> dict:
    """Bytes and files of the packed dataset against its PNGs."""
    pngs = list(raw.rglob("*.png"))
    plates = sorted((packed / "images.zarr" / EXPERIMENT).glob("Plate*"))
    files = [sum(1 for p in plate.rglob("*") if p.is_file()) for plate in plates]
    meta = PackedDataset(packed).metadata
    wells = meta.groupby(["plate", "row", "col"]).ngroups / len(plates)
    rows = meta.groupby(["plate", "row"]).ngroups / len(plates)
    return {
        "png_bytes": sum(p.stat().st_size for p in pngs),
        "png_files": len(pngs),
        "packed_bytes": sum(
            p.stat().st_size for p in (packed / "images.zarr").rglob("*") if p.is_file()
        ),
        "zip_bytes": sum(p.stat().st_size for p in (zipped / "images.zarr").rglob("*.ozx")),
        "files_per_plate": statistics.mean(files),
        "sites_per_plate": len(meta) / len(plates),
        "wells_per_plate": wells,
        "rows_per_plate": rows,
    }


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
        "load": os.getloadavg()[0],
        "python": platform.python_version(),
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "codec": CODEC.codecs(),
        "site": "6 x 512 x 512 uint8, 384-well plates",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "bench_data" / "io", help="work folder")
    p.add_argument("--sites", type=int, default=200, help="random sites read per method")
    p.add_argument("--workers", type=int, default=2, help="DataLoader-style worker processes")
    p.add_argument("--rounds", type=int, default=5, help="interleaved repeats (median kept)")
    p.add_argument("--codec-sites", type=int, default=24, help="sites in the codec comparison")
    p.add_argument("--out", type=Path, default=ROOT / "scripts" / "bench" / "results")
    p.add_argument(
        "--in-memory",
        default="/dev/shm",
        metavar="DIR",
        help="read the trees from copies in this tmpfs (default %(default)s; '' to "
        "read them in place): on a shared machine other jobs' IO evicts the page "
        "cache mid-run, and the bench is of decoding, not of the disk",
    )
    args = p.parse_args()

    raw, packed, zipped, pack_s = prepare(args.data, args.workers)
    store = storage(raw, packed, zipped)
    scratch = None
    if args.in_memory:
        scratch = Path(tempfile.mkdtemp(prefix="cellblock-bench-io-", dir=args.in_memory))
        for tree in (raw, packed, zipped):
            shutil.copytree(tree, scratch / tree.name, ignore=shutil.ignore_patterns("*.lock"))
        raw, packed, zipped = (scratch / t.name for t in (raw, packed, zipped))
    try:
        run(args, raw, packed, zipped, pack_s, store)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch)


def run(args, raw: Path, packed: Path, zipped: Path, pack_s: float, store: dict) -> None:
    """Measure, and write the tables (``main``'s second half)."""
    ds = PackedDataset(packed)
    meta, fmt = ds.metadata, ds.info.plate_format
    rng = np.random.default_rng(0)
    pick = meta.iloc[rng.choice(len(meta), size=min(args.sites, len(meta)), replace=False)]
    sites = [
        Site(
            i,
            r.experiment,
            int(r.plate),
            r.split,
            r.well,
            int(r.row),
            int(r.col),
            int(r.site),
            field_name(fmt, int(r.row), int(r.col), int(r.site)),
        )
        for i, r in enumerate(pick.itertuples())
    ]
    blobs = [
        open_plate(ds.plate_path(s.experiment, s.plate)).read(chunk_name(s.field)) for s in sites
    ]
    _init(str(raw), str(packed), str(zipped), blobs)
    for s, blob in zip(sites[:5], blobs[:5], strict=True):  # the codec path decodes our bytes
        decoded = np.frombuffer(_state["codec"].decode(blob[:-4]), np.uint8).reshape(6, 512, 512)
        assert np.array_equal(decoded, ds.read_site(s.experiment, s.plate, s.row, s.col, s.site))
        assert np.array_equal(
            decoded, _state["zds"].read_site(s.experiment, s.plate, s.row, s.col, s.site)
        )

    pools = {
        args.workers: get_context("fork").Pool(
            args.workers, _init, (str(raw), str(packed), str(zipped), blobs)
        )
    }
    rates: dict[tuple[str, int], list[float]] = {}
    measure(sites, 1, pools)  # warm the page cache (every site, every store) and the readers
    for _ in range(args.rounds):
        for workers in (1, args.workers):
            for name, rate in measure(sites, workers, pools).items():
                rates.setdefault((name, workers), []).append(rate)
    pools[args.workers].close()
    codecs = compare_codecs(raw, sites[: args.codec_sites], args.rounds)

    med = {k: statistics.median(v) for k, v in rates.items()}

    def ratio(a: str, b: str, w: int) -> tuple[float, float, float]:
        """Median and range over rounds of rate a / rate b (paired: the same round)."""
        r = sorted(x / y for x, y in zip(rates[(a, w)], rates[(b, w)], strict=True))
        return statistics.median(r), r[0], r[-1]

    mb = 6 * 512 * 512 / 1e6
    table = []
    for w in (1, args.workers):
        png, dirs, zips, zr, codec = (med[(n, w)] for n in READERS)
        cells = []
        for a, b in (("packed", "png"), ("packed-zip", "png")):
            m, lo, hi = ratio(a, b, w)
            cells.append(f"**{m:.1f}x** ({lo:.1f}-{hi:.1f})")
        for a, b in (("packed", "codec"), ("packed-zip", "codec")):
            m, lo, hi = ratio(a, b, w)
            cells.append(f"**{m:.2f}** ({lo:.2f}-{hi:.2f})")
        table.append(
            f"| {w} | {png:.1f} | {dirs:.1f} | {zips:.1f} | {zr:.1f} | {codec:.1f} "
            f"| {' / '.join(cells[:2])} | {' / '.join(cells[2:])} |"
        )
    one = {n: med[(n, 1)] for n in READERS}
    check_ms = crc_ms(blobs)
    env = environment()
    s = store
    rx_files = 1 + 14 + 308 + 616 * (1 + 2 * len(LEVELS))  # 308 wells x 2 sites, rows B-O
    lines = [
        "# IO benchmark: packed OME-Zarr plates vs PNG decode vs the codec",
        "",
        f"`python scripts/bench/io.py --sites {args.sites} --workers {args.workers} --rounds "
        f"{args.rounds}` (sites/s, median of {args.rounds} rounds, the readers taking turns site "
        "by site in random order within each; "
        + (f"the trees copied to {args.in_memory} (tmpfs) first; " if args.in_memory else "")
        + "warm page cache; "
        f"ratios: median of the rounds' own ratios, range in brackets; load average "
        f"{env['load']:.1f} on {env['cores']} cores when it started: a shared, busy machine).",
        "",
        "| processes | PNG | packed (read_site) | packed, zip store | zarr-python | codec only "
        "| packed / PNG (folder / zip) | packed / codec (folder / zip) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *table,
        "",
        f"Targets: packed / PNG >= 5x, packed / codec >= 0.80. One site = {mb:.2f} MB "
        f"(packed, 1 process: {one['packed'] * mb:.0f} MB/s). packed and zarr-python verify "
        f"each chunk's crc32c; the check alone takes {check_ms:.3f} ms per site, "
        f"{100 * check_ms * one['packed'] / 1e3:.1f}% of a packed read (1 process).",
        "",
        "## Storage",
        "",
        f"One experiment, {s['sites_per_plate'] * 4:.0f} sites: PNGs {s['png_bytes'] / 1e6:.1f} MB"
        f" in {s['png_files']} files; packed (zstd-{CODEC.level}, pyramid 1, 1/4, 1/16 included) "
        f"{s['packed_bytes'] / 1e6:.1f} MB = **{s['packed_bytes'] / s['png_bytes']:.3f}x the "
        f"PNGs**; zipped plates {s['zip_bytes'] / 1e6:.1f} MB. Files per plate: folder "
        f"{s['files_per_plate']:.0f} ({s['wells_per_plate']:.0f} wells, "
        f"{s['sites_per_plate']:.0f} sites: 1 + rows + wells + 7 per site), zip 1. An "
        f"RxRx1-sized plate (308 wells x 2 sites): {rx_files} files as a folder, 1 as a zip "
        f"(the previous layout: 15). Packing costs ~{pack_s:.2f} s of CPU per site at "
        f"zstd-{CODEC.level} (run with --workers)."
        if pack_s
        else f"One experiment: PNGs {s['png_bytes'] / 1e6:.1f} MB; packed "
        f"{s['packed_bytes'] / 1e6:.1f} MB = **{s['packed_bytes'] / s['png_bytes']:.3f}x the "
        f"PNGs**; zipped {s['zip_bytes'] / 1e6:.1f} MB; files per plate "
        f"{s['files_per_plate']:.0f} (folder) / 1 (zip); RxRx1-sized plate {rx_files} / 1.",
        "",
        f"Lossless codecs every zarr v3 reader decodes, on {len(codecs)} x the same "
        f"{min(args.codec_sites, len(sites))} sites (size with the 1/4 and 1/16 levels against "
        "their PNGs; one process):",
        "",
        "| codec | zarr v3 chain | ratio (full res) | size / PNG (with pyramid) | encode ms/site "
        "| decode ms/site |",
        "|---|---|---:|---:|---:|---:|",
        *[
            f"| {c['codec']} | bytes, {c['chain']}, crc32c | {c['ratio']:.2f} | {c['vs_png']:.3f} "
            f"| {c['encode_ms']:.0f} | {c['decode_ms']:.2f} |"
            for c in codecs
        ],
        "",
        "Environment: "
        + ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("codec", "load"))
        + f"; codecs {json.dumps(env['codec'])}.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "io.md").write_text("\n".join(lines) + "\n")
    (args.out / "io.json").write_text(
        json.dumps(
            {
                "environment": env,
                "rates": {f"{n}@{w}": v for (n, w), v in rates.items()},
                "codecs": codecs,
                "storage": store,
                "pack_cpu_s_per_site": pack_s,
                "crc_ms": check_ms,
            },
            indent=2,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
