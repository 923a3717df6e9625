"""The parts of a training run that ``loop.train`` strings together.

:func:`new_state` makes a :class:`~cellblock.training.state.TrainState`, :func:`restore`
loads a checkpoint into it, :func:`wrap_model` wraps its network (DDP, ``torch.compile``),
:func:`train_step` runs one optimizer step, :func:`step_snapshot` makes its batch
snapshot and :func:`save_state` writes a checkpoint.
Nothing here logs: the loop's lines stay the loop's (``cellblock.training.loop``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from cellblock.data.augment import BatchAugment
from cellblock.data.normalize import BatchNormalizer
from cellblock.errors import UserError
from cellblock.nets.models import Net
from cellblock.precision import autocast, autocast_dtype, device_precision
from cellblock.training import checkpoint as ckpt
from cellblock.training.distributed import DistEnv
from cellblock.training.evaluate import flatten_sites
from cellblock.training.rng import get_rng_state, set_rng_state
from cellblock.training.schedule import make_optimizer, make_scheduler
from cellblock.training.setupconfig import SetupConfig
from cellblock.training.snapshots import Snapshot
from cellblock.training.state import RunContext, Step, TrainState

__all__ = [
    "new_state",
    "pick_device",
    "restore",
    "save_state",
    "seed_all",
    "step_snapshot",
    "train_step",
    "wrap_model",
]


def pick_device(name: str) -> torch.device:
    """``"auto"``: CUDA if available, else CPU; ``"cuda"`` without a GPU is a UserError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is cuda but no CUDA device is available")
    return torch.device(name)


def seed_all(seed: int) -> None:
    """Seed the global RNGs of torch, numpy and Python with ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def new_state(
    net: Net, cfg: SetupConfig, normalize: BatchNormalizer, env: DistEnv, device: torch.device
) -> TrainState:
    """Move ``net`` to ``device`` and make its optimizer, schedule and augmentation.

    Args:
        net: The network (built, perhaps initialized from another run).
        cfg: The setup (its ``train`` and ``data.augment`` sections).
        normalize: The run's batch normalization (moved to ``device`` here).
        env: The data-parallel environment (the rank seeds the augmentation).
        device: Where training runs.
    """
    t, cuda = cfg.train, device.type == "cuda"
    dtype = autocast_dtype(device_precision(t.precision if t.amp else "fp32", device))
    channels_last = t.channels_last and cuda
    memory = torch.channels_last if channels_last else torch.preserve_format
    # torch accepts memory_format (Module.to's typed overloads leave it out)
    net.to(device, memory_format=memory)  # type: ignore[call-overload]
    augment = BatchAugment(cfg.data.augment, cfg.data.crop, t.seed + env.rank).to(device)
    normalize = normalize.to(device)
    optimizer = make_optimizer(net.parameters(), t, env.world_size)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return TrainState(
        net=net, model=net, optimizer=optimizer, scheduler=make_scheduler(optimizer, t),
        augment=augment, normalize=normalize, device=device, dtype=dtype,
        channels_last=channels_last, scaler=scaler,
    )  # fmt: skip


def restore(st: TrainState, state: dict[str, Any], env: DistEnv) -> list[str]:
    """Load a checkpoint's model, optimizer, scheduler, and this rank's RNG and augmentation.

    A checkpoint of N ranks resumed by M processes: rank r < N takes rank r's RNG and
    augmentation states; a rank r >= N has none of its own and is seeded afresh from
    (seed, rank, iteration), so no two ranks draw the same numbers.

    Args:
        st: The state to load into (before :func:`wrap_model`).
        state: The checkpoint's state.
        env: The data-parallel environment (this rank takes its own share).

    Returns:
        What this rank could not restore exactly (empty: a bit-exact resume).
    """
    st.net.load_state_dict(state["model"])
    st.optimizer.load_state_dict(state["optimizer"])
    st.scheduler.load_state_dict(state["scheduler"])
    if st.scaler is not None and "grad_scaler" in state:
        st.scaler.load_state_dict(state["grad_scaler"])
    ranks = state.get("ranks") or [{"rng": state["rng"], "augment": state["augment"]}]
    notes = []
    if len(ranks) != env.world_size:
        notes.append(
            f"written by {len(ranks)} process(es), resuming with {env.world_size}: "
            f"not bit-exact (batches are split over the ranks)"
        )
        if env.is_main and len(ranks) > env.world_size:
            notes.append(
                f"ranks {env.world_size}..{len(ranks) - 1}'s RNG and augmentation "
                f"states are not used"
            )
    if env.rank >= len(ranks):
        seed = int(state["config"].get("train", {}).get("seed", 0))
        fresh = seed + env.rank + 1_000_003 * int(state["iteration"])
        seed_all(fresh)
        st.augment.generator.manual_seed(fresh)
        return [*notes, f"no RNG or augmentation state of rank {env.rank}: seeded afresh"]
    mine = ranks[env.rank]
    st.augment.load_state_dict(mine["augment"])
    return notes + set_rng_state(mine["rng"])


def wrap_model(st: TrainState, env: DistEnv, *, compile: bool) -> None:
    """Set ``st.model``: the network in DDP when data parallel, compiled if asked.

    Args:
        st: The state (its network restored already: DDP copies rank 0's weights).
        env: The data-parallel environment.
        compile: Wrap in ``torch.compile``.
    """
    model: torch.nn.Module = st.net
    if env.enabled:
        cuda = st.device.type == "cuda"
        model = torch.nn.parallel.DistributedDataParallel(
            st.net, device_ids=[st.device] if cuda else None
        )
    if compile:
        model = cast(torch.nn.Module, torch.compile(model))  # typed as returning a callable
    st.model = model


def train_step(
    st: TrainState, batches: Iterator, *, grad_accum: int, grad_clip: float, done: int
) -> Step:
    """One optimizer step over ``grad_accum`` micro-batches; adds its loss to the window.

    Args:
        st: The state (stepped in place).
        batches: The training loader's batches (uint8 pixels, numpy labels and rows).
        grad_accum: Micro-batches per step.
        grad_clip: Clip the gradient norm to this (0: no clipping).
        done: The iteration this step completes (for the error message).

    Raises:
        UserError: The loss is not finite.
    """
    lr = st.optimizer.param_groups[0]["lr"]
    st.optimizer.zero_grad(set_to_none=True)
    step_loss = 0.0
    for _ in range(grad_accum):
        pixels, labels, index = next(batches)  # uint8 pixels; numpy labels and rows
        images = st.normalize(pixels.to(st.device, non_blocking=True), torch.from_numpy(index))
        labels = torch.from_numpy(labels).to(st.device, non_blocking=True)
        images, labels = flatten_sites(images, labels)
        images = st.augment(images)
        if st.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(st.device, st.dtype):
            out = st.model(images)
            loss = st.net.loss(out, labels) / grad_accum
        (loss if st.scaler is None else st.scaler.scale(loss)).backward()
        step_loss += loss.item()
    if not math.isfinite(step_loss):
        raise UserError(f"loss is {step_loss} at iteration {done}; lower train.lr")
    if st.scaler is not None:
        st.scaler.unscale_(st.optimizer)  # clip the true gradients
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(st.net.parameters(), grad_clip)
    if st.scaler is None:
        st.optimizer.step()
    else:  # skips the step where fp16 gradients overflowed, and lowers the scale
        st.scaler.step(st.optimizer)
        st.scaler.update()
    st.scheduler.step()
    st.window.add(step_loss)
    return Step(loss=step_loss, lr=lr, batch=(images, labels, index), logits=out.logits)


def check_finite(st: TrainState, done: int) -> None:
    """Raise ``UserError`` if a weight of ``st.net`` holds NaN or infinity at ``done``."""
    bad = ckpt.nonfinite(st.net.state_dict())
    if not bad:
        return
    lr = st.optimizer.param_groups[0]["lr"]
    cause = "fp16 overflow or " if st.dtype == torch.float16 else ""
    raise UserError(
        f"iteration {done}: {len(bad)} weight tensor(s) hold NaN or infinity (first: "
        f"{bad[0]}); not saved. Likely cause: {cause}a learning rate too high for this run "
        f"(now {lr:g}): lower train.lr and rerun (it resumes from the last finite checkpoint)"
    )


def save_state(
    st: TrainState, env: DistEnv, *, run_dir: Path, done: int, resolved: dict[str, Any]
) -> None:
    """Checkpoint iteration ``done`` (a collective: every rank calls it; rank 0 writes).

    Args:
        st: The state.
        env: The data-parallel environment (every rank's RNG and augmentation state
            is gathered into the checkpoint).
        run_dir: The run folder.
        done: The iteration just finished.
        resolved: The resolved config, stored in the checkpoint.

    Raises:
        UserError: Weights that are not finite (every rank: they hold the same weights),
            naming the iteration and the likely cause; nothing is saved.
    """
    check_finite(st, done)
    mine = {"rng": get_rng_state(), "augment": st.augment.state_dict()}
    ranks = env.gather(mine)
    if env.is_main:
        extra = {"log_window": st.window.saved()}
        if st.scaler is not None:
            extra["grad_scaler"] = st.scaler.state_dict()
        ckpt.save_checkpoint(
            run_dir, iteration=done, model=st.net, optimizer=st.optimizer,
            scheduler=st.scheduler, augment=st.augment, config=resolved,
            ranks=ranks if env.enabled else None, extra=extra,
        )  # fmt: skip


def step_snapshot(run: RunContext, step: Step, *, done: int) -> Snapshot:
    """The snapshot of a step's last micro-batch: what the network saw, labels, logits.

    Args:
        run: The run (its tables, config, classes; the setup is named by its folder).
        step: The step just taken.
        done: The iteration it completed.
    """
    images, labels, index = step.batch
    index = run.data.train.item_sites(index).ravel()  # unit "well": sites flattened in order
    rows = run.data.table.loc[index]
    channels = run.resolved["data"].get("channels") or list(range(1, images.shape[-3] + 1))
    return Snapshot(
        iteration=done, inputs=images.float().cpu().numpy(), labels=labels.cpu().numpy(),
        logits=step.logits.detach().float().cpu().numpy(), id_code=tuple(rows["id_code"]),
        site=rows["site"].to_numpy(), channels=tuple(channels), classes=run.classes,
        setup=run.run_dir.name,
    )  # fmt: skip
