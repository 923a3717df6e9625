#!/usr/bin/env python
"""Write benchmark: storing predicted wells, zarr-python vs cellblock's chunk writer.

A prediction worker writes each well it predicts (its sites' logits and embeddings, a
chunk each) before it releases the block. Side by side in one run, on RxRx1 widths
(1,139 classes, 512-wide embeddings, 2 sites, a 384-well plate):

  zarr     zarr-python 3 setitem per well (array[row, col] = values), arrays opened once
  writer   cellblock.store.chunkwrite.ChunkWriter (what write_wells uses): the same bytes
           (zstd + crc32c), encoded with numcodecs and renamed into place

Interleaved rounds, a fresh store each; median ms per well. An H100 predicting
1,500 sites/s needs a well stored in well under 1.3 ms (750 wells/s).
Writes scripts/bench/results/write.{md,json}.

    python scripts/bench/write.py [--wells 96] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import zarr

from cellblock.cli import run
from cellblock.store.chunkwrite import ChunkWriter
from cellblock.store.predictions import CHUNK_CODECS

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "scripts" / "bench" / "results"
ROWS, COLS, SITES, CLASSES, EMBEDDING = 16, 24, 2, 1139, 512
WIDTHS = {"logits": (CLASSES, "float32"), "embeddings": (EMBEDDING, "float16")}


def new_plate(folder: Path) -> dict[str, zarr.Array]:
    """One plate's two arrays, as ``cellblock.store.predictions.create_store`` lays them out."""
    return {
        name: zarr.create_array(folder / name, shape=(ROWS, COLS, SITES, width),
                                chunks=(1, 1, SITES, width), dtype=dtype, fill_value=np.nan,
                                compressors=CHUNK_CODECS)
        for name, (width, dtype) in WIDTHS.items()
    }  # fmt: skip


def time_zarr(folder: Path, wells, values) -> float:
    arrays = new_plate(folder)
    tick = time.perf_counter()
    for name, array in arrays.items():
        for i, (row, col) in enumerate(wells):
            array[row, col] = values[name][i]
    return time.perf_counter() - tick


def time_writer(folder: Path, wells, values) -> float:
    new_plate(folder)
    tick = time.perf_counter()
    for name in WIDTHS:
        writer = ChunkWriter.open(folder / name)
        for i, (row, col) in enumerate(wells):
            writer.write_chunk((row, col, 0, 0), values[name][i][None, None])
    return time.perf_counter() - tick


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument("--wells", type=int, default=96, help="wells written per round and method")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of write.{md,json}")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    wells = [divmod(i, COLS) for i in range(min(a.wells, ROWS * COLS))]
    values = {name: rng.normal(size=(len(wells), SITES, w)).astype(np.float32)
              for name, (w, _) in WIDTHS.items()}  # fmt: skip
    times: dict[str, list[float]] = {"zarr": [], "writer": []}
    with tempfile.TemporaryDirectory(prefix="bench_write_") as tmp:
        for r in range(a.rounds):
            for method, timer in (("zarr", time_zarr), ("writer", time_writer)):
                times[method].append(timer(Path(tmp, f"{method}_{r}"), wells, values) / len(wells))
    ms = {m: statistics.median(t) * 1e3 for m, t in times.items()}
    env = (f"{platform.machine()}, cores {os.cpu_count()}, zarr {zarr.__version__}, "
           f"python {platform.python_version()}, date {date.today()}")  # fmt: skip
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / "write.json").write_text(json.dumps({"ms_per_well": ms, "rounds": times}) + "\n")
    lines = [
        "# Write benchmark: predicted wells into the predictions store", "",
        f"`python scripts/bench/write.py --wells {len(wells)} --rounds {a.rounds}` "
        f"(median of {a.rounds} interleaved rounds; {SITES} sites x ({CLASSES} float32 logits + "
        f"{EMBEDDING} float16 embeddings) per well, a chunk file each, local disk)", "",
        "| method | ms per well | wells/s | speed-up |", "|---|---:|---:|---:|",
        f"| zarr-python setitem | {ms['zarr']:.2f} | {1e3 / ms['zarr']:.0f} | 1.0x |",
        f"| ChunkWriter (write_wells) | {ms['writer']:.2f} | {1e3 / ms['writer']:.0f} | "
        f"**{ms['zarr'] / ms['writer']:.1f}x** |", "",
        f"Environment: {env}.",
    ]  # fmt: skip
    (a.results / "write.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    run(main)
