"""Checkpoints: everything a run needs to continue exactly, written atomically.

``RUN/checkpoints/checkpoint_{iteration:08d}.pt`` holds the model, optimizer and
scheduler states, the iteration, the RNG states of torch, numpy, Python and the batch
augmentation, the resolved config and the code version. Only tensors and plain Python
types are stored, so ``torch.load(weights_only=True)`` reads it (no pickled objects run
code on load); a ``.sha256`` sidecar beside each catches a flipped bit, which
``torch.load`` (it never checks the zip's CRCs) would load silently. A file that cannot
be read (truncated, not a zip, not ours, not matching its sidecar) is an
``UnreadableCheckpointError``, one made for other classes or channels a ``UserError``;
both name the file.

Resuming a run (:func:`resume_point`) sets an unreadable checkpoint (or one with
non-finite weights) aside as ``checkpoint_N.pt.corrupt`` and continues from the newest
intact one: a disk that filled up or a node that lost power while the last checkpoint
was written costs the iterations since the one before, not the run. Prediction keeps
refusing such a file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import pickle
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import torch

import cellblock
from cellblock.atomic import atomic_path
from cellblock.errors import UserError
from cellblock.remote.checksums import sidecar_matches, sidecar_path, write_sidecar
from cellblock.training.rng import get_rng_state

__all__ = [
    "UnreadableCheckpointError",
    "checkpoint_path",
    "checkpoints",
    "code_version",
    "latest_checkpoint",
    "load_checkpoint",
    "nonfinite",
    "resolve_checkpoint",
    "resume_point",
    "save_checkpoint",
    "set_aside",
]

log = logging.getLogger(__name__)
_NAME = re.compile(r"checkpoint_(\d+)\.pt$")
REQUIRED = ("model", "iteration", "config")


class UnreadableCheckpointError(UserError):
    """A checkpoint file that cannot be read: truncated, not a zip, not a cellblock one."""


@functools.cache
def code_version() -> str:
    """``cellblock`` version, plus the git commit (``+dirty`` if modified) when in a checkout.

    The package's own source tree is asked, not the project: the commit is the one the
    package was imported from when that folder is the top of a git checkout; an
    installed wheel (site-packages, even inside some checkout) gives the version alone.
    """
    source = Path(cellblock.__file__).resolve().parents[1]  # the package's, never the project
    version = cellblock.__version__
    try:
        git = ["git", "-C", str(source)]
        top = subprocess.run(
            [*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=10
        )
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != source:
            return version
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            dirty = subprocess.run(
                [*git, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            suffix = "+dirty" if dirty.stdout.strip() else ""
            version += f" ({commit.stdout.strip()}{suffix})"
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def checkpoint_path(run_dir: Path | str, iteration: int) -> Path:
    """Where the checkpoint of ``iteration`` lives in ``run_dir``."""
    return Path(run_dir) / "checkpoints" / f"checkpoint_{iteration:08d}.pt"


def checkpoints(run_dir: Path | str) -> list[Path]:
    """The checkpoints of ``run_dir``, lowest iteration first (``.corrupt`` ones excluded)."""
    found = [
        (int(m.group(1)), p)
        for p in (Path(run_dir) / "checkpoints").glob("checkpoint_*.pt")
        if (m := _NAME.search(p.name))
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The checkpoint with the highest iteration in ``run_dir``, or None."""
    found = checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(source: Path | str) -> Path:
    """A checkpoint file from a file or a run folder (its latest checkpoint).

    Raises:
        UserError: Neither a file nor a run folder with checkpoints.
    """
    source = Path(source)
    if source.is_file():
        return source
    if source.is_dir():
        latest = latest_checkpoint(source)
        if latest is not None:
            return latest
        if (source / "grid.json").is_file():
            runs = sorted(p.parent for p in source.glob("ch*/fold_*/checkpoints"))
            example = f", e.g. {runs[0]}" if runs else ""
            raise UserError(f"{source}: a grid of runs (submit_train.py), not a run: give one "
                            f"of its runs{example}, or --init-from the grid in "
                            f"submit_train.py")  # fmt: skip
        raise UserError(f"{source}: no checkpoints in this run folder")
    raise UserError(f"{source}: no such checkpoint or run folder")


def save_checkpoint(
    run_dir: Path | str,
    *,
    iteration: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    augment: torch.nn.Module,
    config: dict[str, Any],
    ranks: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of ``iteration`` atomically (temp file, then rename).

    Args:
        run_dir: The run folder.
        iteration: Optimizer steps completed.
        model: The network (its ``state_dict``).
        optimizer: Its state.
        scheduler: Its state.
        augment: The ``BatchAugment`` (its generator state travels in its state_dict).
        config: The resolved config (a plain dict).
        ranks: Data parallel: every rank's ``{"rng", "augment"}`` state, in rank order.
        extra: More entries (plain types and tensors), e.g. the open log window.
    """
    target = checkpoint_path(run_dir, iteration)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "augment": augment.state_dict(),
        "iteration": iteration,
        "rng": get_rng_state(),
        "config": config,
        "code_version": code_version(),
    }
    if ranks is not None:
        state["ranks"] = ranks
    state.update(extra or {})
    # Serialized in memory first: writing the bytes ourselves makes a full disk a plain
    # OSError (errno ENOSPC), where torch.save to a path raises an opaque RuntimeError;
    # fsync before the rename: a power loss cannot leave a renamed but empty checkpoint.
    # A sidecar sha256 (torch never checks the zip's own CRCs): the old one goes first,
    # so a crash between the two writes leaves an unverified file, never a false alarm.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    sidecar_path(target).unlink(missing_ok=True)
    with atomic_path(target, fsync=True) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    write_sidecar(target, buffer.getbuffer())
    log.info("iteration %d: saved %s", iteration, target)
    return target


def load_checkpoint(path: Path | str, expect: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Args:
        path: The checkpoint file.
        expect: A resolved config; the checkpoint's network shape and the keys of
            :data:`RESUME_KEYS` must equal its own (:func:`check_compatible`).

    Raises:
        UnreadableCheckpointError: Naming ``path``: not a readable checkpoint (corrupt,
            truncated, missing, not ours).
        UserError: Naming ``path``: made for another backbone, classes, channels, head,
            optimizer or schedule.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        if sidecar_matches(path, data) is False:
            raise ValueError(f"bytes differ from {sidecar_path(path).name}")
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnreadableCheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    except zipfile.BadZipFile as e:
        raise UnreadableCheckpointError(f"{path}: not a readable checkpoint ({e})") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        need = ", ".join(REQUIRED)
        raise UnreadableCheckpointError(f"{path}: not a cellblock checkpoint (need keys {need})")
    if expect is not None:
        check_compatible(state["config"], expect, path)
    return state


# A resumed run shares these with its checkpoint too: another head, embedding or pooling
# has other tensors, another optimizer or schedule another state (SGD's has no AdamW
# moments: loading it would fail deep in torch with a bare KeyError).
RESUME_KEYS = ("net.head", "net.embedding_dim", "net.pool", "train.optimizer", "train.schedule")


def nonfinite(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``tensors`` holding NaN or infinity."""
    bad = (k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all())
    return list(bad)


def check_compatible(stored: dict[str, Any], expect: dict[str, Any], path: Path | str) -> None:
    """Raise ``UserError`` naming ``path`` and both values if this run cannot resume it."""
    have, want = stored.get("net", {}), expect["net"]
    shape = {"backbone": "backbone", "num_classes": "classes", "in_channels": "channels"}
    for key, what in shape.items():
        if have.get(key) != want[key]:
            raise UserError(
                f"{path}: checkpoint made for {have.get(key)} {what}, this run has "
                f"{want[key]} (net.{key}); use another run folder (--out)"
            )
    for name in RESUME_KEYS:
        section, key = name.split(".")
        before, now = stored.get(section, {}).get(key), expect[section][key]
        if before is not None and before != now:
            raise UserError(
                f"{path}: checkpoint made with {name}={before}, this run has {name}={now}; "
                f"resume with --set {name}={before}, or start another run folder (--out)"
            )


def set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint to ``<name>.corrupt`` (replacing an older one).

    Args:
        path: The checkpoint file.

    Returns:
        Its new name.
    """
    aside = path.with_name(path.name + ".corrupt")
    with contextlib.suppress(FileNotFoundError):  # already gone: nothing to keep
        os.replace(path, aside)
    sidecar_path(path).unlink(missing_ok=True)  # it vouches for the file set aside
    return aside


def resume_point(
    run_dir: Path | str, expect: dict[str, Any], rename: bool = True
) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest intact checkpoint of ``run_dir`` and its state; (None, None) if none.

    Unreadable checkpoints newer than it, and those with non-finite weights (resumed,
    they would fail again, forever), are set aside (:func:`set_aside`) with a warning
    naming them.

    Args:
        run_dir: The run folder.
        expect: This run's resolved config (see :func:`load_checkpoint`).
        rename: Set unreadable files aside. Data parallel: rank 0 alone renames; the
            other ranks skip the same files (one rank 0 renamed already is missing to
            them, which is unreadable too), so every rank resumes from the same one.

    Raises:
        UserError: The newest readable checkpoint was made for another backbone,
            classes or channels (never set aside: the run folder is the wrong one).
    """
    skipped = False
    for path in reversed(checkpoints(run_dir)):
        try:
            state = load_checkpoint(path, expect=expect)
            if not (bad := nonfinite(state["model"])):
                return path, state
            why = f"{path}: {len(bad)} weight tensor(s) hold NaN or infinity (first: {bad[0]})"
        except UnreadableCheckpointError as e:
            why = str(e)
        skipped = True
        if rename:
            log.warning("%s; set aside as %s", why, set_aside(path).name)
    if skipped:
        log.warning("%s: no intact checkpoint left: training from scratch", run_dir)
    return None, None
