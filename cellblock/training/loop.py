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
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from cellblock.atomic import atomic_write_text
from cellblock.data.labels import class_sirnas
from cellblock.nets.models import build_net
from cellblock.training import checkpoint as ckpt
from cellblock.training.distributed import DistEnv
from cellblock.training.evaluate import validate
from cellblock.training.inputs import RunData, load_run_data, train_loader, val_loader
from cellblock.training.logs import RunLog, plot_curves
from cellblock.training.resume import init_weights
from cellblock.training.setupconfig import SetupConfig
from cellblock.training.snapshots import write_snapshot
from cellblock.training.state import LogWindow, RunContext, TrainState
from cellblock.training.steps import (
    new_state,
    pick_device,
    restore,
    save_state,
    seed_all,
    step_snapshot,
    train_step,
    wrap_model,
)

__all__ = ["train"]

log = logging.getLogger(__name__)


def _prepare(
    cfg: SetupConfig,
    data: RunData,
    env: DistEnv,
    device: torch.device,
    *,
    resume: tuple[Path | None, dict[str, Any] | None],
    init_from: Path | str | None,
) -> TrainState:
    """The network, optimizer and the rest: new, initialized from a run, or resumed.

    Args:
        cfg: The setup.
        data: The run's data (its normalization).
        env: The data-parallel environment.
        device: Where training runs.
        resume: The checkpoint to resume and its state (``ckpt.resume_point``), or
            (None, None) for a new run.
        init_from: A checkpoint or run folder whose weights start a new run.
    """
    latest, state = resume
    net = build_net(cfg.net)
    if state is None and init_from:
        init_weights(net, init_from, cfg.to_resolved())
    st = new_state(net, cfg, data.normalize, env, device)
    if state is not None:
        for note in restore(st, state, env):
            log.warning("rank %d, %s: %s", env.rank, latest, note)
        log.info("resumed from %s", latest)
    st.window = LogWindow.resume(state)
    wrap_model(st, env, compile=cfg.train.compile)
    return st


def _open_run(
    cfg: SetupConfig,
    data: RunData,
    env: DistEnv,
    *,
    run_dir: Path,
    iterations: int,
    start: int,
    info: dict[str, Any],
) -> RunContext:
    """The run's fixed context; rank 0 writes ``config.yaml`` and ``run.json`` and opens
    the metric logs.

    Args:
        cfg: The setup.
        data: The run's data.
        env: The data-parallel environment.
        run_dir: The run folder.
        iterations: The iteration to reach.
        start: The iteration training continues from.
        info: ``run.json``'s ``dataset``, ``setup`` and ``setup_dir`` (the code version
            and the number of processes are added here).
    """
    classes = tuple(int(c) for c in class_sirnas(cfg.data.label, data.table, cfg.net.num_classes))
    run = RunContext(run_dir=run_dir, cfg=cfg, resolved=cfg.to_resolved(), env=env, data=data,
                     classes=classes, log=None, val_batches=None, iterations=iterations,
                     per_step=cfg.train.global_batch(env.world_size))  # fmt: skip
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(run.resolved, sort_keys=False))
        info = {"dataset": info["dataset"], "code_version": ckpt.code_version(),
                "processes": env.world_size, "setup": info["setup"],
                "setup_dir": info["setup_dir"]}  # fmt: skip
        atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2) + "\n")
        run.log = RunLog(run_dir, start, cfg.train.tensorboard)
    return run


def _validate(run: RunContext, st: TrainState, done: int) -> dict[str, Any]:
    """Score the held-out rows; log and record the metrics (rank 0).

    Args:
        run: The run (its validation batches and log).
        st: The training state (network, normalization, device).
        done: The iteration just finished.
    """
    assert run.log is not None and run.val_batches is not None
    metrics = validate(st.net, run.val_batches, normalize=st.normalize,
                       cell_types=run.data.cell_types, device=st.device, autocast=st.dtype,
                       channels_last=st.channels_last, well_types=run.data.well_types,
                       bn_groups=run.data.bn_groups)  # fmt: skip
    run.log.log_val({"iteration": done, **metrics})
    log.info("it %d  val loss %.4f  treatments %.3f (top-3 %.3f)  controls %.3f  "
             "all %.3f", done, metrics["loss"], metrics["treatment_accuracy"],
             metrics["treatment_top3"], metrics["control_accuracy"],
             metrics["accuracy"])  # fmt: skip
    return metrics


def _iterate(
    run: RunContext, st: TrainState, batches: Iterator, *, start: int, stop: threading.Event | None
) -> tuple[int, dict[str, Any], bool]:
    """Iterations ``start + 1`` .. ``run.iterations``: step, log, validate, checkpoint.

    Args:
        run: The run.
        st: The training state (stepped in place).
        batches: The training batches from iteration ``start`` on.
        start: The iteration reached before.
        stop: When set, checkpoint the iteration just finished and return.

    Returns:
        (the last iteration finished, the last validation metrics, whether ``stop``
        ended it early).
    """
    t, env = run.cfg.train, run.env
    metrics: dict[str, Any] = {}
    done, stopped = start, False
    for iteration in range(start, run.iterations):
        done = iteration + 1
        step = train_step(st, batches, grad_accum=t.grad_accum, grad_clip=t.grad_clip, done=done)
        last = done == run.iterations
        if run.log and t.snapshot_every and done % t.snapshot_every == 0:
            path = write_snapshot(run.run_dir, step_snapshot(run, step, done=done))
            log.info("iteration %d: batch snapshot %s", done, path)
        if done % t.log_every == 0 or last:
            row = st.window.take_row(done=done, lr=step.lr, per_step=run.per_step,
                                     items=len(run.data.train))  # fmt: skip
            if run.log:
                run.log.log_train(row)
                log.info("it %d  loss %.4f  lr %.2e  %.0f img/s", done, row["loss"], step.lr,
                         row["img_per_s"])  # fmt: skip
        if run.log and run.val_batches is not None and (done % t.validate_every == 0 or last):
            metrics = _validate(run, st, done)
        stopped = env.any(stop is not None and stop.is_set()) and not last
        if done % t.checkpoint_every == 0 or last or stopped:
            save_state(st, env, run_dir=run.run_dir, done=done, resolved=run.resolved)
        if (done % t.validate_every == 0 or done % t.checkpoint_every == 0) and not last:
            st.window.restart_clock()  # validation and checkpoints: not throughput
        if stopped:
            log.warning("stop requested: checkpointed iteration %d of %d", done, run.iterations)
            break
    return done, metrics, stopped


def _run(
    run: RunContext, st: TrainState, *, start: int, stop: threading.Event | None
) -> tuple[int, dict[str, Any], bool]:
    """Train from iteration ``start`` (see :func:`_iterate`), then close the metric logs
    (``curves.png`` unless stopped early) and leave the process group.

    Args:
        run: The run.
        st: The training state.
        start: The iteration reached before.
        stop: See :func:`train`.
    """
    t, env, data, device, per_step = run.cfg.train, run.env, run.data, st.device, run.per_step
    by = run.cfg.data.batch_by
    batches = iter(train_loader(data.train, batch_size=t.batch_size, seed=t.seed,
                                start=start * per_step, workers=t.workers, device=device,
                                batch_by=by, rank=env.rank, world_size=env.world_size))  # fmt: skip
    run.val_batches = None
    if data.val:
        run.val_batches = val_loader(data.val, batch_size=t.batch_size, workers=t.workers,
                                     device=device, batch_by=by)  # fmt: skip
    log.info("training %s from iteration %d to %d on %s x %d (%d train items, %d val)",
             run.run_dir, start, run.iterations, device, env.world_size, len(data.train),
             len(data.val or []))  # fmt: skip
    st.net.train()
    st.augment.train()
    st.window.restart_clock()  # throughput: steps since the clock started
    done, metrics, stopped = _iterate(run, st, batches, start=start, stop=stop)
    del batches
    if run.log:
        run.log.close()
        if not stopped:
            plot_curves(run.run_dir)
    env.barrier()
    env.stop()
    return done, metrics, stopped


def train(
    setup_config: dict[str, Any],
    dataset_path: Path | str,
    run_dir: Path | str,
    iterations: int,
    *,
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
    (``training.cli.run_lock``): one writer per run folder.

    Args:
        setup_config: The resolved config (``cellblock.training.setupconfig.load_setup_config``).
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
    cfg, env, run_dir = SetupConfig.from_resolved(setup_config), DistEnv.from_env(), Path(run_dir)
    # an unreadable latest checkpoint is set aside (by rank 0) and the run resumes from
    # the one before; a checkpoint of other classes or channels is an error
    latest, state = ckpt.resume_point(run_dir, cfg.to_resolved(), rename=env.is_main)
    start = state["iteration"] if state else 0
    if start >= iterations:
        log.info("%s: already at iteration %d (asked for %d); nothing to do", run_dir, start,
                 iterations)  # fmt: skip
        return {"iteration": start, "trained": 0, "val": {}, "stopped": False}
    if state and init_from:
        log.info("--init-from ignored: resuming %s from iteration %d", run_dir, start)
    device = env.start(pick_device(cfg.train.device))
    seed_all(cfg.train.seed)  # the same initial weights on every rank
    data = load_run_data(cfg, dataset_path)
    st = _prepare(cfg, data, env, device, resume=(latest, state), init_from=init_from)
    info = {"dataset": str(Path(dataset_path).resolve()), "setup": setup,
            "setup_dir": str(Path(setup_dir).resolve()) if setup_dir else None}  # fmt: skip
    run = _open_run(cfg, data, env, run_dir=run_dir, iterations=iterations, start=start,
                    info=info)  # fmt: skip
    done, metrics, stopped = _run(run, st, start=start, stop=stop)
    reached = done if stopped else iterations
    return {"iteration": reached, "trained": reached - start, "val": metrics, "stopped": stopped}
