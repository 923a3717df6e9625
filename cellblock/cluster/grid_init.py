"""Where a grid's new runs take their weights from (``submit_train.py --init-from``).

The RxRx1 stages chain grids: stage II starts from stage I (control pretraining), stage
III (pseudo-labels) from stage II. ``--init-from`` takes a checkpoint file, a run folder
(its latest checkpoint; every run of the grid starts from it) or another grid folder,
where each run starts from that grid's run of the same channel subset, of the same fold
if that grid has it, else of the subset's only fold::

    stage I grid (one fold)             stage II grid (5 folds)
    ch1-2-3-4-5/fold_0   ---------->    ch1-2-3-4-5/fold_0, fold_1, ... fold_4
    ch2-3-4-5-6/fold_0   ---------->    ch2-3-4-5-6/fold_0, fold_1, ... fold_4

Everything is settled when the grid is submitted, before a job is queued: a source
grid's run must have reached that grid's iterations (a half-trained stage I is not a
start), its network must fit the run's (backbone, channels, embedding, pooling), and
each run records the checkpoint file it starts from in ``grid.json``, so a requeued or
resubmitted run starts from the same weights even after the source trains on. Runs
that already have checkpoints resume and keep the source they were submitted with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cellblock.cluster.grid_axes import GridRun, channels_name
from cellblock.cluster.grid_files import MANIFEST, latest_iteration, load_manifest
from cellblock.errors import UserError

__all__ = ["init_checkpoints", "source_checkpoint"]

# What must agree between a source run and the run it starts (as in training.resume.init_weights).
_SAME_NET = ("backbone", "in_channels", "embedding_dim", "pool")


def source_checkpoint(source: Path, channels: tuple[int, ...], fold: int) -> Path:
    """The checkpoint file a run of ``channels`` and ``fold`` starts from.

    Args:
        source: A checkpoint file, a run folder or a grid folder (module docstring).
        channels: The run's 1-based channel subset.
        fold: The run's validation fold.

    Raises:
        UserError: No such file or run; no run of the subset (and fold) in a source
            grid; a source grid's run short of that grid's iterations.
    """
    from cellblock.training.checkpoint import resolve_checkpoint  # torch: only when used

    source = Path(source)
    if (source / MANIFEST).is_file():
        subset = source / channels_name(channels)
        started = sorted(p for p in subset.glob("fold_*") if latest_iteration(p) > 0)
        same = subset / f"fold_{fold}"
        if same in started or len(started) == 1:
            run_dir = same if same in started else started[0]
        else:
            have = ", ".join(p.name for p in started) or "none"
            raise UserError(f"--init-from {source}: no run of channels {channels_name(channels)}"
                            f" fold {fold} to start from (folds there: {have})")  # fmt: skip
        target = int(load_manifest(source).get("iterations", 0))
        reached = latest_iteration(run_dir)
        if reached < target:
            raise UserError(
                f"--init-from {run_dir}: at iteration {reached} of {target}; let that grid "
                f"finish first (submit_train.py status --out {source})"
            )
        source = run_dir
    try:
        return resolve_checkpoint(source)
    except UserError as e:
        raise UserError(f"--init-from: {e}") from None


def _check_fits(checkpoint: Path, net: dict[str, Any]) -> None:
    """``checkpoint``'s run made the same network as ``net`` (from its net_config.json;
    a checkpoint outside a run folder is checked when the run loads it)."""
    made = checkpoint.parent.parent / "net_config.json"
    if not made.is_file():
        return
    have = json.loads(made.read_text())
    for key in _SAME_NET:
        if have.get(key) != net[key]:
            raise UserError(f"--init-from {checkpoint}: made with net.{key}={have.get(key)!r}, "
                            f"this grid's run needs {net[key]!r}")  # fmt: skip


def init_checkpoints(
    *,
    source: Path | None,
    out: Path,
    runs: list[GridRun],
    net_of: Callable[[GridRun], dict[str, Any]],
    previous: dict[str, Any],
) -> dict[int, str]:
    """Run index -> the checkpoint file it starts from (see the module docstring).

    Args:
        source: The grid's ``--init-from`` (None: an empty mapping).
        out: The grid folder.
        runs: The grid's runs.
        net_of: A run's resolved ``net`` config (checked against the source's network).
        previous: The grid's ``grid.json`` so far (``{}`` for a new grid).

    Raises:
        UserError: A source that cannot start a run; another ``--init-from`` than the
            one runs of this grid already started from.
    """
    if source is None:
        return {}
    before = previous.get("init_from")
    started = [r for r in runs if latest_iteration(r.run_dir) > 0]
    if before and Path(before) != source and started:
        raise UserError(f"--init-from {source}: runs of {out} already started from "
                        f"{before}; use another --out for another source")  # fmt: skip
    recorded = {r["run_dir"]: r.get("init_checkpoint") for r in previous.get("runs", [])}
    starts: dict[int, str] = {}
    for run in runs:
        if run in started:  # resumes: keeps what it started from
            if recorded.get(str(run.run_dir.relative_to(out))):
                starts[run.index] = recorded[str(run.run_dir.relative_to(out))]
            continue
        checkpoint = source_checkpoint(source, run.channels, run.fold)
        _check_fits(checkpoint, net_of(run))
        starts[run.index] = str(checkpoint)
    return starts
