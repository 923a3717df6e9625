#!/usr/bin/env python
"""Training benchmark: is the input pipeline ever the bottleneck?

Side by side in one run, the training step of a setup (normalize and augment on the
device, forward, backward, optimizer step) fed two ways:

  loader   the real path: SiteDataset over packed zarr -> DataLoader (train.workers
           processes) -> uint8 batches -> device -> normalized there, as in train.py
  memory   the same batches, read beforehand and held as tensors

Paired rounds (loader steps, then the same number of in-memory steps); the median over
rounds of loader / memory is the target (DESIGN §5: <= 1.05x). The time the step waited
for its batch is reported beside it.

One row per compute thread count (``--threads``): with as many compute threads as cores,
loader processes and compute share the cores (on a small CPU machine the loader then
takes CPU time from the step, whatever it does); with ``cores - workers`` threads each
loader process has a core of its own, which is the situation the target is about (on a
GPU node the loaders run on otherwise idle cores).

On a CUDA machine, ``--gpu`` adds DenseNet-121 at 512 x 512 x 6 on synthetic tensors:
img/s fp32 vs bf16 autocast vs bf16 + channels_last vs + torch.compile; and the loader
row of rxrx1/densenet121 (bf16, channels_last, 8 loader workers) on the RxRx1-sized
dataset of the IO benchmark (``--gpu-data``).
Writes scripts/bench/results/train.{md,json}.

    python scripts/bench/train.py --data demo/dataset [--setup 02_train/synthetic/tiny]
        [--steps 16] [--rounds 30] [--gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cellblock.cli import parse_overrides, run
from cellblock.cli.values import comma_list
from cellblock.data.augment import BatchAugment
from cellblock.data.normalize import BatchNormalizer
from cellblock.errors import UserError
from cellblock.nets.models import build_net
from cellblock.nets.netconfig import NetConfig
from cellblock.training.inputs import load_run_data, train_loader
from cellblock.training.schedule import make_optimizer
from cellblock.training.setupconfig import SetupConfig, load_setup_config
from cellblock.training.steps import pick_device

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "scripts" / "bench" / "results"
DENSENET = ROOT / "02_train" / "rxrx1" / "densenet121"
FULL_SIZE_SETS = ["data.val_experiments=[]"]  # the IO bench's dataset has no RxRx1 experiments
PREFETCH = 4  # make_loader's prefetch_factor: batches a worker holds ready


class Stepper:
    """One training step of a setup's network, as train.py runs it (bf16 autocast and
    channels-last on CUDA when the setup asks), fed any uint8 batch."""

    def __init__(self, cfg: SetupConfig, normalize: BatchNormalizer, device: torch.device):
        torch.manual_seed(0)
        self.device = device
        cuda = device.type == "cuda"
        self.amp, self.channels_last = cfg.train.amp and cuda, cfg.train.channels_last and cuda
        memory = torch.channels_last if self.channels_last else torch.preserve_format
        self.net = build_net(cfg.net).to(device, memory_format=memory)
        self.optimizer = make_optimizer(self.net.parameters(), cfg.train)
        self.augment = BatchAugment(cfg.data.augment, cfg.data.crop, 0).to(device)
        self.normalize = normalize.to(device)

    def step(self, images: torch.Tensor, labels: np.ndarray, index: np.ndarray) -> None:
        images = self.normalize(images.to(self.device, non_blocking=True), torch.from_numpy(index))
        images = self.augment(images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.from_numpy(labels).to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = self.net.loss(self.net(images), labels)
        loss.backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def time_steps(stepper: Stepper, source, steps: int, warmup: int) -> tuple[float, float]:
    """Median seconds per step, and per wait for its batch, over ``steps`` steps after
    ``warmup`` untimed steps."""
    times, waits = [], []
    for i in range(warmup + steps):
        tick = time.perf_counter()
        images, labels, index = next(source)
        got = time.perf_counter()
        stepper.step(images, labels, index)
        if i >= warmup:
            times.append(time.perf_counter() - tick)
            waits.append(got - tick)
    return statistics.median(times), statistics.median(waits)


def loader_vs_memory(
    setup: Path, data: Path, steps: int, rounds: int, sets: list[str], threads: int
) -> dict:
    """Paired rounds: ``steps`` loader steps, then ``steps`` in-memory steps, ``rounds`` times.

    The ratio is the median over rounds of (loader / memory): a shared machine's speed
    drifts by tens of percent over seconds, and the two halves of a round see the same
    drift. One loader iterator serves every round, as in training; the batches it
    prefetched while the memory half ran are spent untimed (``prefetch_factor`` warm-up
    steps), so the timed loader steps wait on the loader whenever it is the bottleneck.
    """
    torch.set_num_threads(threads)
    resolved = load_setup_config(setup, parse_overrides(sets))
    cfg = SetupConfig.from_resolved(resolved)
    t = cfg.train
    device = pick_device(t.device)
    run_data = load_run_data(cfg, data)
    stepper = Stepper(cfg, run_data.normalize, device)
    loader = train_loader(run_data.train, batch_size=t.batch_size, seed=t.seed, start=0,
                          workers=t.workers, device=device, batch_by=cfg.data.batch_by)  # fmt: skip
    source = iter(loader)
    warmup = PREFETCH * max(t.workers, 1)
    # the memory side replays batches of the same loader, held as tensors
    cached = [next(source) for _ in range(warmup + steps)]
    results: dict[str, list[float]] = {"loader": [], "memory": [], "loader_wait": []}
    for _ in tqdm(range(rounds), desc=f"{threads} thread(s)", unit="round"):
        step_s, wait_s = time_steps(stepper, source, steps, warmup)
        results["loader"].append(step_s)
        results["loader_wait"].append(wait_s)
        results["memory"].append(time_steps(stepper, iter(cached), steps, warmup)[0])
    del source, loader
    ratios = [a / b for a, b in zip(results["loader"], results["memory"], strict=True)]
    loader_s, memory_s = statistics.median(results["loader"]), statistics.median(results["memory"])
    return {
        "setup": str(setup.relative_to(ROOT)) if setup.is_relative_to(ROOT) else str(setup),
        "backbone": cfg.net.backbone,
        "batch_size": t.batch_size,
        "workers": t.workers,
        "input": f"{cfg.net.in_channels} x {cfg.net.input_size} x {cfg.net.input_size}",
        "device": str(device),
        "threads": threads,
        "loader_step_s": loader_s,
        "memory_step_s": memory_s,
        "loader_wait_s": statistics.median(results["loader_wait"]),
        "ratio": statistics.median(ratios),
        "ratio_quartiles": statistics.quantiles(ratios, n=4)[::2] if rounds > 1 else ratios * 2,
        "img_per_s_loader": t.batch_size / loader_s,
        "rounds": results,
    }


def gpu_variants(batch: int, steps: int) -> list[dict]:
    """DenseNet-121 at 512 x 512 x 6: training and inference img/s per precision/layout."""
    device = torch.device("cuda")
    out = []
    variants = [("fp32", False, False, False), ("bf16", True, False, False),
                ("bf16 + channels_last", True, True, False),
                ("bf16 + channels_last + compile", True, True, True)]  # fmt: skip
    x = torch.randn(batch, 6, 512, 512, device=device)
    y = torch.randint(0, 1139, (batch,), device=device)
    for name, amp, nhwc, compiled in variants:
        torch.manual_seed(0)
        net = build_net(NetConfig(backbone="densenet121", num_classes=1139)).to(device)
        fmt = torch.channels_last if nhwc else torch.preserve_format
        net = net.to(memory_format=fmt)
        model = torch.compile(net) if compiled else net
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        xs = x.contiguous(memory_format=fmt)
        row = {"variant": name}
        for mode in ("train", "infer"):
            net.train(mode == "train")
            for i in range(steps + 3):
                if i == 3:
                    torch.cuda.synchronize()
                    tick = time.perf_counter()
                with torch.autocast("cuda", torch.bfloat16, enabled=amp):
                    if mode == "train":
                        opt.zero_grad(set_to_none=True)
                        net.loss(model(xs), y).backward()
                        opt.step()
                    else:
                        with torch.inference_mode():
                            model(xs)
            torch.cuda.synchronize()
            row[f"{mode}_img_per_s"] = batch * steps / (time.perf_counter() - tick)
        out.append(row)
    return out


def environment() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{cpu}, cores {os.cpu_count()}, torch {torch.__version__}, "
            f"python {platform.python_version()}, "
            f"date {date.today()}")  # fmt: skip


def write_results(
    cpus: list[dict], gpu: list[dict] | None, command: str, results: Path = RESULTS
) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    (results / "train.json").write_text(json.dumps({"loader": cpus, "gpu": gpu}, indent=2) + "\n")
    cpu = cpus[0]
    lines = [
        "# Training benchmark: real zarr loader vs in-memory batches",
        "",
        f"`{command}`: {len(cpu['rounds']['loader'])} paired rounds; step times are medians, "
        "the ratio is the median of the rounds' ratios (quartiles beside it).",
        "",
        "| setup | input | batch | loader workers | compute threads | device | loader step | "
        "batch wait | memory step | img/s (loader) | loader / memory | quartiles |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|",
        *[
            f"| {c['setup']} ({c['backbone']}) | {c['input']} | {c['batch_size']} | "
            f"{c['workers']} | {c['threads']} | {c['device']} | "
            f"{c['loader_step_s'] * 1e3:.1f} ms | {c['loader_wait_s'] * 1e3:.2f} ms | "
            f"{c['memory_step_s'] * 1e3:.1f} ms | "
            f"{c['img_per_s_loader']:.0f} | **{c['ratio']:.3f}x** | "
            f"{c['ratio_quartiles'][0]:.3f}-{c['ratio_quartiles'][1]:.3f} |"
            for c in cpus
        ],
        "",
        "Target (DESIGN §5): loader / memory <= 1.05x, with the loader on cores of its own "
        "(compute threads = cores - workers); the shared-core row shows what the loader costs "
        f"when it must take CPU time from the step ({os.cpu_count()} cores here).",
        "",
    ]
    if gpu:
        lines += ["## DenseNet-121, 6 x 512 x 512, 1139 classes (synthetic tensors)", "",
                  "| variant | train img/s | inference img/s |", "|---|---:|---:|"]  # fmt: skip
        lines += [f"| {g['variant']} | {g['train_img_per_s']:.0f} | "
                  f"{g['infer_img_per_s']:.0f} |" for g in gpu]  # fmt: skip
        lines.append("")
    else:
        lines += ["GPU section: not run (no CUDA device on this machine).", ""]
    lines.append(f"Environment: {environment()}.")
    path = results / "train.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument("--data", type=Path, default=ROOT / "demo" / "dataset", help="packed dataset")
    p.add_argument("--setup", type=Path, default=ROOT / "02_train" / "synthetic" / "tiny")
    p.add_argument("--steps", type=int, default=16, help="timed steps per arm and round")
    p.add_argument("--rounds", type=int, default=30, help="paired rounds")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument(
        "--threads",
        default=f"{os.cpu_count()},{max(1, (os.cpu_count() or 2) - 1)}",
        help="compute thread counts to compare, e.g. 2,1 (one row each)",
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of train.{md,json}")
    p.add_argument("--gpu", action="store_true", help="also DenseNet-121 512 px variants (CUDA)")
    p.add_argument("--gpu-batch", type=int, default=64)
    p.add_argument("--gpu-data", type=Path, default=ROOT / "bench_data" / "io" / "dataset",
                   help="RxRx1-sized packed dataset for the 512 px loader row with --gpu "
                        "(scripts/bench/io.py makes it)")  # fmt: skip
    a = p.parse_args()
    if not (a.data / "metadata.parquet").is_file():
        raise UserError(f"--data {a.data}: not a packed dataset (run `make demo` first)")
    threads = comma_list(a.threads, what="--threads", type=int)
    cpus = [loader_vs_memory(a.setup.resolve(), a.data, a.steps, a.rounds, a.set, n)
            for n in dict.fromkeys(threads)]  # fmt: skip
    gpu = None
    if a.gpu and torch.cuda.is_available():
        gpu = gpu_variants(a.gpu_batch, a.steps)
        if (a.gpu_data / "metadata.parquet").is_file():
            # the loader at full size: rxrx1/densenet121's step and loader workers, 512 px
            cpus.append(loader_vs_memory(DENSENET, a.gpu_data, a.steps, a.rounds,
                                         FULL_SIZE_SETS, os.cpu_count() or 1))  # fmt: skip
        else:
            print(f"--gpu-data {a.gpu_data}: no packed dataset; 512 px loader row skipped")
    elif a.gpu:
        print("--gpu: no CUDA device; GPU section skipped")
    command = "python scripts/bench/train.py " + " ".join(
        f"--steps {a.steps} --rounds {a.rounds}".split() + (["--gpu"] if gpu else [])
    )
    path = write_results(cpus, gpu, command, a.results)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    run(main)
