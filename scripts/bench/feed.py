#!/usr/bin/env python
"""Feed benchmark: does a prediction worker keep a fast device busy, and does a plate's
BatchNorm estimate cost the same whatever the number of workers?

Side by side in one run (RxRx1-sized 6 x 512 x 512 sites, synthesized and packed once
into ``--work``):

  decode only    the worker's reader threads reading every site, nothing else: the most
                 any pipeline on these cores can deliver
  serial         what a worker did before: a block's sites read (4 reader threads), then
                 computed, then written, then the next block; a plate row per block
  pipelined      the worker's loop today (``cellblock.blockwise.worker.serve``): the next
                 block's sites read while this one computes and the last one is written;
                 ``--readers`` threads, blocks of at least one batch

The network is a stand-in that sleeps ``batch / --device-rate`` seconds per batch (2,000
img/s: DenseNet-121 at 512 px on an H100 in bf16), leaving every core to the readers and
the writer, as a GPU does. Target: pipelined >= 0.9 x min(device rate, decode-only rate).
Blocks come from an in-process stand-in for daisy's server (the same three connections
a worker holds), each block handed out ``--passes`` times, so the run is long enough to
time; the predictions are written to a real store.

Statistics: a tiny network trained by plate predicts a small screen with 1 and with 2
daisy workers (real processes); the BatchNorm statistics of every plate are estimated
once per run either way. Its cost is the sum of the estimates' seconds
(``PRED/bnstats/*/*.pt``). Target: 2 workers <= 1.1 x 1 worker (each worker estimated
every plate before, 2x).

Writes scripts/bench/results/feed.md and feed.json.

    python scripts/bench/feed.py [--work .bench-feed] [--readers N] [--passes 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from cellblock.blockwise.output import prepare_output
from cellblock.blockwise.plan import Plan, make_plan
from cellblock.blockwise.worker import Fault, serve
from cellblock.cli import run
from cellblock.cli.values import comma_list
from cellblock.inference import Predictor, cpus_given
from cellblock.nets.models import NetOutput
from cellblock.screen.plates import parse_plate_key
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import write_wells

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "scripts" / "bench" / "results"


def _loops(readers: list[str]) -> list[str]:
    """The measured loops: decode only and pipelined at each reader count, and serial."""
    return [*(f"decode@{n}" for n in readers), "serial", *(f"pipelined@{n}" for n in readers)]


TINY = ROOT / "02_train" / "synthetic" / "tiny"
TRAIN_SETS = [
    "train.batch_size=8",
    "train.workers=0",
    "train.checkpoint_every=2",
    "train.validate_every=1000",
    "train.warmup_iters=1",
    "train.schedule_iters=2",
    "data.val_experiments=[]",
]


class SleepNet(torch.nn.Module):
    """A device that takes ``len(batch) / rate`` seconds per batch and no CPU."""

    def __init__(self, rate: float, n_classes: int, width: int):
        super().__init__()
        self.rate, self.n_classes, self.width = rate, n_classes, width

    def forward(self, x: torch.Tensor) -> NetOutput:
        time.sleep(len(x) / self.rate)
        return NetOutput(
            x.new_zeros((len(x), self.n_classes), dtype=torch.float32),
            x.new_zeros((len(x), self.width), dtype=torch.float32),
        )


class _Blocks:
    """daisy's block queue, in process: every block of the plan's grid ``passes`` times."""

    def __init__(self, plan: Plan, passes: int):
        blocks = [b for b in plan.grid.blocks() if plan.grid.wells_in(*b)[1]]
        self.queue = deque(
            SimpleNamespace(block_id=("predict", i), write_roi=SimpleNamespace(offset=o, shape=s))
            for i, (o, s) in enumerate(blocks * passes)
        )


class _Connection:
    """One of a worker's connections: ``acquire_block`` as daisy's Client has it."""

    def __init__(self, blocks: _Blocks):
        self.blocks = blocks

    @contextlib.contextmanager
    def acquire_block(self) -> Iterator[Any]:
        yield self.blocks.queue.popleft() if self.blocks.queue else None


def _sh(*cmd: str | Path) -> None:
    subprocess.run([sys.executable, *map(str, cmd)], check=True, stdout=subprocess.DEVNULL)


def build_inputs(work: Path, classes: int) -> tuple[Path, Path, Path, Path]:
    """The 512 px dataset, a run trained on it (1 iteration, for its shapes only), and a
    small 64 px screen with a by-plate run (statistics); made once."""
    raw, data, run = work / "raw512", work / "data512", work / "run512"
    if not (data / "metadata.parquet").is_file():
        _sh(
            ROOT / "01_data/make_synthetic.py",
            "--out",
            raw,
            "--preset",
            "demo",
            "--image-size",
            "512",
            "--classes",
            str(classes),
            "--experiments",
            "HEPG2-01",
            "--workers",
            "2",
        )
        _sh(
            ROOT / "01_data/pack_zarr.py",
            "--raw",
            raw,
            "--out",
            data,
            "--zstd-level",
            "9",
            "--workers",
            "2",
        )
    if not (run / "checkpoints").is_dir():
        sets = [*TRAIN_SETS, "net.input_size=512", "data.batch_by=null", "data.crop=null"]
        _sh(
            TINY / "train.py",
            "2",
            "--data",
            data,
            "--out",
            run,
            *[a for s in sets for a in ("--set", s)],
        )
    small_raw, small, by_plate = work / "raw64", work / "data64", work / "run64"
    if not (small / "metadata.parquet").is_file():
        _sh(
            ROOT / "01_data/make_synthetic.py",
            "--out",
            small_raw,
            "--preset",
            "demo",
            "--experiments",
            "HEPG2-01,HUVEC-01",
            "--workers",
            "2",
        )
        _sh(ROOT / "01_data/pack_zarr.py", "--raw", small_raw, "--out", small, "--workers", "2")
    if not (by_plate / "checkpoints").is_dir():
        sets = [*TRAIN_SETS, "data.batch_by=plate"]
        _sh(
            TINY / "train.py",
            "2",
            "--data",
            small,
            "--out",
            by_plate,
            *[a for s in sets for a in ("--set", s)],
        )
    return data, run, small, by_plate


def _predictor(plan: Plan, readers: int, rate: float) -> Predictor:
    predictor = Predictor(
        plan.checkpoint,
        PackedDataset(plan.dataset),
        "none",
        plan.batch_size,
        readers=readers,
        bn_stats="trained",
    )
    # the device's work, not the host's: normalizing on a GPU costs the CPU nothing
    predictor.normalize = lambda x, index: x  # type: ignore[assignment]
    predictor.model = SleepNet(rate, predictor.n_classes, predictor.embedding_dim)
    return predictor


def bench_decode(plan: Plan, readers: int, passes: int) -> dict:
    """Every site of the plan read by ``readers`` threads, nothing else."""
    predictor = _predictor(plan, readers, 1.0)
    rows = predictor.packed.metadata.index
    start, sites = time.perf_counter(), 0
    for _ in range(passes):
        reads = predictor._reads(rows)
        for images, _ in reads.batches(
            [(s, min(s + 64, len(rows))) for s in range(0, len(rows), 64)]
        ):
            sites += len(images)
    predictor.close()
    return {"sites": sites, "seconds": time.perf_counter() - start}


def bench_serial(plan: Plan, readers: int, passes: int, rate: float) -> dict:
    """The worker loop before the pipeline: read, compute, write, one block after another."""
    predictor = _predictor(plan, readers, rate)
    blocks = _Blocks(plan, passes).queue
    start, sites = time.perf_counter(), 0
    for block in blocks:
        key, wells = plan.grid.wells_in(block.write_roi.offset, block.write_roi.shape)
        logits, embeddings = predictor.predict_wells(*parse_plate_key(key), wells)
        write_wells(plan.store, key, wells, logits, embeddings)
        sites += plan.grid.sites_in(block.write_roi.offset, block.write_roi.shape)
    predictor.close()
    return {"sites": sites, "seconds": time.perf_counter() - start}


def bench_pipelined(plan: Plan, readers: int, passes: int, rate: float) -> dict:
    """``serve``: the worker's own loop over three connections."""
    predictor = _predictor(plan, readers, rate)
    blocks = _Blocks(plan, passes)
    sites = sum(plan.grid.sites_in(b.write_roi.offset, b.write_roi.shape) for b in blocks.queue)
    start = time.perf_counter()
    serve([_Connection(blocks) for _ in range(3)], plan, predictor, Fault(), 0)
    seconds = time.perf_counter() - start
    predictor.close()
    return {"sites": sites, "seconds": seconds}


def bench_statistics(small: Path, by_plate: Path, work: Path, rounds: int) -> list[dict]:
    """Real blockwise runs with 1 and 2 workers, alternating ``rounds`` times: estimates
    made, and their seconds and CPU seconds (medians over the rounds)."""
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(rounds):
        for workers in (1, 2):
            pred = work / f"stats_pred{workers}"
            _sh(
                ROOT / "03_predict/predict_blockwise.py",
                "--run",
                by_plate,
                "--data",
                small,
                "--out",
                pred,
                "--split",
                "all",
                "--workers",
                str(workers),
                "--block-wells",
                "8",
                "--tta",
                "flips",
                "--overwrite",
            )
            files = sorted(pred.glob("bnstats/*/*.pt"))
            records = [torch.load(p, weights_only=True) for p in files]
            logs = "".join(p.read_text() for p in (pred / "logs").glob("worker_*.log"))
            runs[workers].append(
                {
                    "workers": workers,
                    "plates": len(records),
                    "estimates": logs.count("BatchNorm statistics of "),
                    "seconds": sum(r["seconds"] for r in records),
                    "cpu_seconds": sum(r["cpu_seconds"] for r in records),
                }
            )
    return [
        {
            **runs[w][0],
            "estimates": max(r["estimates"] for r in runs[w]),
            "seconds": statistics.median(r["seconds"] for r in runs[w]),
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs[w]),
        }
        for w in (1, 2)
    ]


def environment() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"cpu {platform.machine()}, {cpus_given()} cores (shared; load average at start "
        f"{load}), GPU none, python {platform.python_version()}, torch {torch.__version__}, "
        f"date {time.strftime('%Y-%m-%d')}"
    )


def report(args: argparse.Namespace, feed: dict, stats: list[dict], n_sites: int) -> list[str]:
    lines = [
        "# Feed benchmark: keeping a fast device busy, and per-plate statistics once per run",
        "",
        f"`python scripts/bench/feed.py --readers {args.readers} --passes {args.passes} "
        f"--rounds {args.rounds}` (medians of round-robin rounds in alternating order): "
        f"{n_sites} sites of 6 x 512 x 512 (zstd-9) x {args.passes} passes, batch "
        f"{args.batch_size}, a stand-in device at {args.device_rate:.0f} img/s (it sleeps).",
        "",
        "| loop | readers | block | img/s | vs min(device, decode only with its readers) |",
        "|---|---:|---|---:|---:|",
    ]
    readers = comma_list(args.readers, what="--readers")
    for name in _loops(readers):
        kind, _, n = name.partition("@")
        decode = feed[f"decode@{n or readers[0]}"]["rate"]
        ceiling = min(args.device_rate, decode)
        label, block = {
            "decode": ("decode only", "-"),
            "serial": ("serial (before)", "a plate row"),
            "pipelined": ("pipelined (now)", "default (>= one batch)"),
        }[kind]
        rate = feed[name]["rate"]
        lines.append(f"| {label} | {n or 4} | {block} | {rate:.0f} | **{rate / ceiling:.2f}x** |")
    lines += [
        "",
        "Target: pipelined >= 0.9x min(device, decode only with the same readers); serial "
        f"is read against decode only with {readers[0]} reader(s). A GPU worker's default "
        f"here is {readers[0]} reader(s): the CPUs it was given less two, for its main "
        "thread (batches, the device) and the chunk writer.",
    ]
    one, two = stats
    lines += [
        "",
        "| BatchNorm statistics | plates | estimates made | seconds estimating | CPU seconds "
        "estimating | vs 1 worker (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in stats:
        lines.append(
            f"| {r['workers']} worker(s) | {r['plates']} | {r['estimates']} | "
            f"{r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
            f"**{r['cpu_seconds'] / one['cpu_seconds']:.2f}x** |"
        )
    lines += [
        "",
        "Target: 2 workers <= 1.1x 1 worker (before: every worker estimated every plate, "
        f"{two['plates']} plates x 2 workers).",
        "",
        f"Environment: {environment()}.",
    ]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(ROOT / ".bench-feed"), help="inputs, made once")
    p.add_argument(
        "--readers",
        default=f"{max(1, cpus_given() - 2)},{cpus_given()}",
        help="reader thread counts to compare (default: a GPU worker's default, every core)",
    )
    p.add_argument("--passes", type=int, default=4, help="times each block is predicted")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device-rate", type=float, default=2000.0, help="stand-in img/s")
    p.add_argument("--classes", type=int, default=64, help="siRNAs of the 512 px screen")
    p.add_argument("--rounds", type=int, default=3, help="round-robin repetitions (medians)")
    args = p.parse_args()
    work = Path(args.work)
    data, run_dir, small, by_plate = build_inputs(work, args.classes)
    readers = comma_list(args.readers, what="--readers")
    loops = _loops(readers)
    plans = {}
    for name in ("decode", "serial", "pipelined"):
        pred = work / f"feed_{name}"
        plan = make_plan(run_dir, data, pred, split="all", batch_size=args.batch_size)
        if name == "serial":  # the default block before: one plate row
            row = plan.grid.extent[2]
            plan = make_plan(
                run_dir, data, pred, split="all", batch_size=args.batch_size, block_wells=row
            )
        prepare_output(plan, overwrite=True)
        plans[name] = plan
    bench_decode(plans["decode"], int(readers[0]), 1)  # warm the page cache: no cold first loop
    measured: dict[str, list[float]] = {name: [] for name in loops}
    for i in range(args.rounds):
        for name in loops if i % 2 == 0 else loops[::-1]:  # alternate the order
            kind, _, n = name.partition("@")
            if kind == "decode":
                r = bench_decode(plans[kind], int(n), args.passes)
            elif kind == "serial":
                r = bench_serial(plans[kind], 4, args.passes, args.device_rate)
            else:
                r = bench_pipelined(plans[kind], int(n), args.passes, args.device_rate)
            measured[name].append(r["sites"] / r["seconds"])
            print(f"round {i + 1} {name}: {measured[name][-1]:.0f} img/s", flush=True)
    feed = {
        name: {"rate": statistics.median(rates), "rates": rates} for name, rates in measured.items()
    }
    stats = bench_statistics(small, by_plate, work, args.rounds)
    n_sites = len(PackedDataset(data).metadata)
    lines = report(args, feed, stats, n_sites)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feed.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "feed.json").write_text(
        json.dumps({"feed": feed, "statistics": stats, "args": vars(args)}, indent=1) + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    run(main)
