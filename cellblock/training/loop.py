"""``train``: continue a run from its latest checkpoint up to iteration N.

One iteration is one optimizer step over ``grad_accum`` micro-batches. The data order
is a pure function of the iteration (``InfiniteSampler``), and every piece of state
that drives randomness (model, optimizer, scheduler, global RNGs, the augmentation's
generator) is in the checkpoint, so on CPU a killed-and-resumed run reproduces the
loss curve of an uninterrupted one exactly.

Writes to the run folder: ``checkpoints/``, ``config.yaml`` (resolved), ``run.json``
(dataset, code version), ``log.csv``, ``val.csv``, ``curves.png``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cellblock.atomic import atomic_write_text
from cellblock.config import SetupConfig
from cellblock.data import BatchAugment
from cellblock.errors import UserError
from cellblock.models import Net, build_net
from cellblock.training import checkpoint as ckpt
from cellblock.training.evaluate import validate
from cellblock.training.inputs import load_run_data, train_loader, val_loader
from cellblock.training.logs import CsvLog, plot_curves
from cellblock.training.schedule import make_optimizer, make_scheduler

__all__ = ["init_weights", "pick_device", "train"]

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """``"auto"``: CUDA if available, else CPU; ``"cuda"`` without a GPU is a UserError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is cuda but no CUDA device is available")
    return torch.device(name)


def init_weights(net: Net, source: Path | str, resolved: dict[str, Any]) -> None:
    """Load another run's weights into ``net`` (weights only: no optimizer, no iteration).

    The head is taken only if its shape matches (stage I -> II changes the classes);
    backbone and embedding must match exactly.

    Args:
        net: The freshly built network.
        source: A checkpoint file, or a run folder (its latest checkpoint).
        resolved: This run's resolved config.

    Raises:
        UserError: Naming the file: another backbone, other channels, mismatched weights.
    """
    path = ckpt.resolve_checkpoint(source)
    state = ckpt.load_checkpoint(path)
    have = state["config"].get("net", {})
    for key in ("backbone", "in_channels", "embedding_dim", "pool"):
        if have.get(key) != resolved["net"][key]:
            raise UserError(
                f"--init-from {path}: made with net.{key}={have.get(key)!r}, this setup has "
                f"{resolved['net'][key]!r}"
            )
    own = net.state_dict()
    weights, skipped = {}, []
    for key, value in state["model"].items():
        if key.startswith("head.") and (key not in own or own[key].shape != value.shape):
            skipped.append(key)
        elif key not in own or own[key].shape != value.shape:
            raise UserError(f"--init-from {path}: weight {key} does not fit this network")
        else:
            weights[key] = value
    missing = [k for k in own if k not in weights and not k.startswith("head.")]
    if missing:
        raise UserError(f"--init-from {path}: {len(missing)} weights missing, e.g. {missing[0]}")
    net.load_state_dict(weights, strict=False)
    note = f"; head not loaded ({len(skipped)} tensors of another shape)" if skipped else ""
    log.info("initialized from %s (iteration %d)%s", path, state["iteration"], note)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def train(
    setup_config: dict[str, Any],
    dataset_path: Path | str,
    run_dir: Path | str,
    iterations: int,
    init_from: Path | str | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Train up to iteration ``iterations``, resuming from ``run_dir``'s latest checkpoint.

    Args:
        setup_config: The resolved config (``cellblock.config.load_setup_config``).
        dataset_path: The packed dataset.
        run_dir: The run folder (created if needed).
        iterations: Iteration to reach; if the run is already there, nothing happens.
        init_from: A checkpoint or run folder whose weights start a new run; ignored
            (with a message) when ``run_dir`` already has checkpoints.
        stop: When set (e.g. by a preemption signal handler), the loop checkpoints the
            iteration it just finished and returns early; a rerun resumes from there.

    Returns:
        ``{"iteration": reached, "trained": iterations run now, "val": last metrics,
        "stopped": True if ``stop`` ended it early}``.
    """
    cfg = SetupConfig.from_resolved(setup_config)
    resolved, t = cfg.to_resolved(), cfg.train
    run_dir = Path(run_dir)
    latest = ckpt.latest_checkpoint(run_dir)
    state = ckpt.load_checkpoint(latest, expect=resolved) if latest else None
    start = state["iteration"] if state else 0
    if start >= iterations:
        log.info("%s: already at iteration %d (asked for %d); nothing to do", run_dir, start,
                 iterations)  # fmt: skip
        return {"iteration": start, "trained": 0, "val": {}, "stopped": False}
    if state and init_from:
        log.info("--init-from ignored: resuming %s from iteration %d", run_dir, start)
    device = pick_device(t.device)
    cuda = device.type == "cuda"
    amp, channels_last = t.amp and cuda, t.channels_last and cuda

    _seed_all(t.seed)
    data = load_run_data(cfg, dataset_path)
    net = build_net(cfg.net)
    if state is None and init_from:
        init_weights(net, init_from, resolved)
    net.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    augment = BatchAugment(cfg.data.augment, cfg.data.crop, t.seed).to(device)
    optimizer = make_optimizer(net.parameters(), t)
    scheduler = make_scheduler(optimizer, t)
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        augment.load_state_dict(state["augment"])
        ckpt.set_rng_state(state["rng"])
        log.info("resumed from %s", latest)

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    info = {"dataset": str(Path(dataset_path).resolve()), "code_version": ckpt.code_version()}
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2) + "\n")
    train_log = CsvLog(run_dir / "log.csv", start)
    val_log = CsvLog(run_dir / "val.csv", start)

    per_step = t.global_batch
    batches = iter(train_loader(data.train, t.batch_size, t.seed, start * per_step, t.workers,
                                device))  # fmt: skip
    val_batches = val_loader(data.val, t.batch_size, t.workers, device) if data.val else None
    log.info("training %s from iteration %d to %d on %s (%d train items, %d val)", run_dir,
             start, iterations, device, len(data.train), len(data.val or []))  # fmt: skip
    net.train()
    augment.train()
    window_loss, window_steps, tick = 0.0, 0, time.perf_counter()
    metrics: dict[str, Any] = {}
    for iteration in range(start, iterations):
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(t.grad_accum):
            images, labels, _ = next(batches)
            images = augment(images.to(device, non_blocking=True))
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = net.loss(net(images), labels) / t.grad_accum
            loss.backward()
            step_loss += loss.item()
        if not math.isfinite(step_loss):
            raise UserError(f"loss is {step_loss} at iteration {iteration + 1}; lower train.lr")
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
        optimizer.step()
        scheduler.step()
        done = iteration + 1
        window_loss, window_steps = window_loss + step_loss, window_steps + 1
        last = done == iterations
        if done % t.log_every == 0 or last:
            seconds = time.perf_counter() - tick
            row = {
                "iteration": done,
                "loss": window_loss / window_steps,
                "lr": lr,
                "img_per_s": round(window_steps * per_step / seconds, 1),
                "epoch": round(done * per_step / len(data.train), 3),
            }
            train_log.write(row)
            log.info("it %d  loss %.4f  lr %.2e  %.0f img/s", done, row["loss"], lr,
                     row["img_per_s"])  # fmt: skip
            window_loss, window_steps, tick = 0.0, 0, time.perf_counter()
        if val_batches is not None and (done % t.validate_every == 0 or last):
            metrics = validate(net, val_batches, data.cell_types, device, amp, channels_last)
            val_log.write({"iteration": done, **metrics})
            log.info("it %d  val loss %.4f  accuracy %.3f  top-3 %.3f", done, metrics["loss"],
                     metrics["accuracy"], metrics["top3"])  # fmt: skip
            tick = time.perf_counter()  # validation time is not training throughput
        stopping = stop is not None and stop.is_set()
        if done % t.checkpoint_every == 0 or last or stopping:
            ckpt.save_checkpoint(run_dir, done, net, optimizer, scheduler, augment, resolved)
            tick = time.perf_counter()
        if stopping and not last:
            log.warning("stop requested: checkpointed iteration %d of %d", done, iterations)
            return {"iteration": done, "trained": done - start, "val": metrics, "stopped": True}
    del batches
    plot_curves(run_dir)
    return {"iteration": iterations, "trained": iterations - start, "val": metrics,
            "stopped": False}  # fmt: skip
