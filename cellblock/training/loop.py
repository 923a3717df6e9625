"""``train``: continue a run from its latest checkpoint up to iteration N.

One iteration is one optimizer step over ``grad_accum`` micro-batches. The data order
is a pure function of the iteration (``InfiniteSampler``), and every piece of state
that drives randomness (model, optimizer, scheduler, global RNGs, the augmentation's
generator) is in the checkpoint, so on CPU a killed-and-resumed run reproduces the
loss curve of an uninterrupted one exactly.

Data parallel (``torchrun --nproc_per_node K train.py N``, see ``distributed``): every
rank trains on its share of each global batch, rank 0 writes; each rank's RNG and
augmentation state travel in the checkpoint, so a DDP run resumes exactly too.

Writes to the run folder: ``checkpoints/``, ``config.yaml`` (resolved), ``run.json``
(dataset, code version), ``log.csv``, ``val.csv``, ``tensorboard/``, ``snapshots/``,
``curves.png``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml

from cellblock.atomic import atomic_write_text
from cellblock.config import SetupConfig
from cellblock.data import BatchAugment
from cellblock.data.labels import class_sirnas
from cellblock.errors import UserError
from cellblock.models import Net, build_net
from cellblock.training import checkpoint as ckpt
from cellblock.training.distributed import DistEnv
from cellblock.training.evaluate import flatten_sites, validate
from cellblock.training.inputs import RunData, load_run_data, train_loader, val_loader
from cellblock.training.logs import RunLog, plot_curves
from cellblock.training.schedule import make_optimizer, make_scheduler
from cellblock.training.snapshots import Snapshot, write_snapshot

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


def _rank_state(augment: BatchAugment) -> dict[str, Any]:
    return {"rng": ckpt.get_rng_state(), "augment": augment.state_dict()}


def _restore(state: dict[str, Any], parts: tuple, env: DistEnv, path: Path | None) -> None:
    """Load model/optimizer/scheduler, and this rank's RNG and augmentation state."""
    net, optimizer, scheduler, augment = parts
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ranks = state.get("ranks") or [{"rng": state["rng"], "augment": state["augment"]}]
    if len(ranks) != env.world_size:
        log.warning("%s was written by %d processes, resuming with %d: not bit-exact", path,
                    len(ranks), env.world_size)  # fmt: skip
    mine = ranks[env.rank % len(ranks)]
    augment.load_state_dict(mine["augment"])
    ckpt.set_rng_state(mine["rng"])
    log.info("resumed from %s", path)


def _snapshot(run_dir: Path, done: int, data: RunData, batch: tuple, logits: torch.Tensor,
              resolved: dict[str, Any], classes: tuple[int, ...]) -> None:  # fmt: skip
    images, labels, index = batch
    index = data.train.item_sites(index).ravel()  # unit "well": sites flattened in order
    rows = data.table.loc[index]
    channels = resolved["data"].get("channels") or list(range(1, images.shape[-3] + 1))
    path = write_snapshot(run_dir, Snapshot(
        iteration=done, inputs=images.float().cpu().numpy(), labels=labels.cpu().numpy(),
        logits=logits.detach().float().cpu().numpy(), id_code=tuple(rows["id_code"]),
        site=rows["site"].to_numpy(), channels=tuple(channels), classes=classes,
        setup=run_dir.name,
    ))  # fmt: skip
    log.info("iteration %d: batch snapshot %s", done, path)


def train(
    setup_config: dict[str, Any],
    dataset_path: Path | str,
    run_dir: Path | str,
    iterations: int,
    init_from: Path | str | None = None,
    stop: threading.Event | None = None,
    setup: str | None = None,
    setup_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train up to iteration ``iterations``, resuming from ``run_dir``'s latest checkpoint.

    An unreadable checkpoint (truncated by a full disk or a crash) is renamed to
    ``.corrupt`` and the run resumes from the newest intact one; ``log.csv``, ``val.csv``
    and TensorBoard drop the rows after it, so the curve reads as one uninterrupted run.
    ``train.py`` and ``TrainTask`` hold the run folder's lock around this call
    (``setup_cli.run_lock``): one writer per run folder.

    Args:
        setup_config: The resolved config (``cellblock.config.load_setup_config``).
        dataset_path: The packed dataset.
        run_dir: The run folder (created if needed).
        iterations: Iteration to reach; if the run is already there, nothing happens.
        init_from: A checkpoint or run folder whose weights start a new run; ignored
            (with a message) when ``run_dir`` already has checkpoints.
        stop: When set (e.g. by a preemption signal handler), the loop checkpoints the
            iteration it just finished and returns early; a rerun resumes from there.
        setup: The setup's name (e.g. ``"rxrx1/densenet121"``), recorded in ``run.json``.
        setup_dir: The setup folder, recorded (absolute) in ``run.json`` as
            ``setup_dir``: prediction finds the setup from the run alone.

    Returns:
        ``{"iteration": reached, "trained": iterations run now, "val": last metrics,
        "stopped": True if ``stop`` ended it early}``.
    """
    cfg = SetupConfig.from_resolved(setup_config)
    resolved, t = cfg.to_resolved(), cfg.train
    env = DistEnv.from_env()
    run_dir = Path(run_dir)
    # an unreadable latest checkpoint is set aside (by rank 0) and the run resumes from
    # the one before; a checkpoint of other classes or channels is an error
    latest, state = ckpt.resume_point(run_dir, resolved, rename=env.is_main)
    start = state["iteration"] if state else 0
    if start >= iterations:
        log.info("%s: already at iteration %d (asked for %d); nothing to do", run_dir, start,
                 iterations)  # fmt: skip
        return {"iteration": start, "trained": 0, "val": {}, "stopped": False}
    if state and init_from:
        log.info("--init-from ignored: resuming %s from iteration %d", run_dir, start)
    device = env.start(pick_device(t.device))
    cuda = device.type == "cuda"
    amp, channels_last = t.amp and cuda, t.channels_last and cuda

    _seed_all(t.seed)  # the same initial weights on every rank
    data = load_run_data(cfg, dataset_path)
    net = build_net(cfg.net)
    if state is None and init_from:
        init_weights(net, init_from, resolved)
    memory = torch.channels_last if channels_last else torch.preserve_format
    # torch accepts memory_format (Module.to's typed overloads leave it out)
    net.to(device, memory_format=memory)  # type: ignore[call-overload]
    augment = BatchAugment(cfg.data.augment, cfg.data.crop, t.seed + env.rank).to(device)
    normalize = data.normalize.to(device)
    optimizer = make_optimizer(net.parameters(), t, env.world_size)
    scheduler = make_scheduler(optimizer, t)
    if state is not None:
        _restore(state, (net, optimizer, scheduler, augment), env, latest)
    model: torch.nn.Module = net
    if env.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device] if cuda else None
        )
    if t.compile:
        model = cast(torch.nn.Module, torch.compile(model))  # typed as returning a callable
    classes = tuple(int(c) for c in class_sirnas(cfg.data.label, data.table, cfg.net.num_classes))

    log_ = None
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        info = {"dataset": str(Path(dataset_path).resolve()), "code_version": ckpt.code_version(),
                "processes": env.world_size, "setup": setup,
                "setup_dir": str(Path(setup_dir).resolve()) if setup_dir else None}  # fmt: skip
        atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2) + "\n")
        log_ = RunLog(run_dir, start, t.tensorboard)

    per_step = t.global_batch(env.world_size)
    batches = iter(train_loader(data.train, batch_size=t.batch_size, seed=t.seed,
                                start=start * per_step, workers=t.workers, device=device,
                                batch_by=cfg.data.batch_by, rank=env.rank,
                                world_size=env.world_size))  # fmt: skip
    val_batches = None
    if data.val:
        val_batches = val_loader(data.val, batch_size=t.batch_size, workers=t.workers,
                                 device=device, batch_by=cfg.data.batch_by)  # fmt: skip
    log.info("training %s from iteration %d to %d on %s x %d (%d train items, %d val)", run_dir,
             start, iterations, device, env.world_size, len(data.train),
             len(data.val or []))  # fmt: skip
    net.train()
    augment.train()
    # the log.csv row being accumulated travels in checkpoints: a run stopped between
    # rows resumes the same average
    window = state.get("log_window", {"loss": 0.0, "steps": 0}) if state else {}
    window_loss, window_steps = float(window.get("loss", 0.0)), int(window.get("steps", 0))
    tick, timed = time.perf_counter(), 0  # throughput: steps since tick
    metrics: dict[str, Any] = {}
    stopped = False
    for iteration in range(start, iterations):
        done = iteration + 1
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(t.grad_accum):
            pixels, labels, index = next(batches)  # uint8 pixels; numpy labels and rows
            images = normalize(pixels.to(device, non_blocking=True), torch.from_numpy(index))
            labels = torch.from_numpy(labels).to(device, non_blocking=True)
            images, labels = flatten_sites(images, labels)
            images = augment(images)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(images)
                loss = net.loss(out, labels) / t.grad_accum
            loss.backward()
            step_loss += loss.item()
        if not math.isfinite(step_loss):
            raise UserError(f"loss is {step_loss} at iteration {done}; lower train.lr")
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
        optimizer.step()
        scheduler.step()
        window_loss, window_steps, timed = window_loss + step_loss, window_steps + 1, timed + 1
        last = done == iterations
        if log_ and t.snapshot_every and done % t.snapshot_every == 0:
            _snapshot(run_dir, done, data, (images, labels, index), out.logits, resolved,
                      classes)  # fmt: skip
        if done % t.log_every == 0 or last:
            seconds = max(time.perf_counter() - tick, 1e-9)
            row = {
                "iteration": done,
                "loss": window_loss / window_steps,  # rank 0's share of the global batch
                "lr": lr,
                "img_per_s": round(timed * per_step / seconds, 1),
                "epoch": round(done * per_step / len(data.train), 3),
            }
            if log_:
                log_.log_train(row)
                log.info("it %d  loss %.4f  lr %.2e  %.0f img/s", done, row["loss"], lr,
                         row["img_per_s"])  # fmt: skip
            window_loss, window_steps, tick, timed = 0.0, 0, time.perf_counter(), 0
        if log_ and val_batches is not None and (done % t.validate_every == 0 or last):
            metrics = validate(net, val_batches, normalize=normalize, cell_types=data.cell_types,
                               device=device, autocast=amp, channels_last=channels_last,
                               well_types=data.well_types, bn_groups=data.bn_groups)  # fmt: skip
            log_.log_val({"iteration": done, **metrics})
            log.info("it %d  val loss %.4f  treatments %.3f (top-3 %.3f)  controls %.3f  "
                     "all %.3f", done, metrics["loss"], metrics["treatment_accuracy"],
                     metrics["treatment_top3"], metrics["control_accuracy"],
                     metrics["accuracy"])  # fmt: skip
        stopped = env.any(stop is not None and stop.is_set()) and not last
        if done % t.checkpoint_every == 0 or last or stopped:
            ranks = env.gather(_rank_state(augment))  # a collective: every rank calls it
            if env.is_main:
                extra = {"log_window": {"loss": window_loss, "steps": window_steps}}
                ckpt.save_checkpoint(run_dir, done, net, optimizer, scheduler, augment, resolved,
                                     ranks if env.enabled else None, extra)  # fmt: skip
        if (done % t.validate_every == 0 or done % t.checkpoint_every == 0) and not last:
            tick, timed = time.perf_counter(), 0  # validation and checkpoints: not throughput
        if stopped:
            log.warning("stop requested: checkpointed iteration %d of %d", done, iterations)
            break
    del batches
    if log_:
        log_.close()
        if not stopped:
            plot_curves(run_dir)
    env.barrier()
    env.stop()
    reached = done if stopped else iterations
    return {"iteration": reached, "trained": reached - start, "val": metrics, "stopped": stopped}
