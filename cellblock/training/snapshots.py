"""Training batch snapshots: ``RUN/snapshots/batch_{N}.hdf``, what the network saw at N.

As in the LSD experiments, every ``train.snapshot_every`` iterations the batch of that
step is written to HDF5 so it can be looked at later (``view_batch.py``)::

    batch_{N}.hdf
      inputs    float32 (B, C, H, W)   the augmented, normalized images fed to the net
      labels    int64   (B,)           class index (-1: unlabelled)
      logits    float32 (B, n_classes) the network's output on them
      id_code   str     (B,)           the well of each item
      site      int64   (B,)           its site (1-based)
      attrs: iteration, channels (1-based), classes (sirna id per class), setup

Written to a temporary name and renamed, so a snapshot is whole or absent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cellblock.errors import UserError

__all__ = ["Snapshot", "read_snapshot", "snapshot_path", "write_snapshot"]

DATASETS = ("inputs", "labels", "logits", "id_code", "site")


@dataclass(frozen=True)
class Snapshot:
    """One batch snapshot (see the module docstring for the fields)."""

    iteration: int
    inputs: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    id_code: tuple[str, ...]
    site: np.ndarray
    channels: tuple[int, ...]
    classes: tuple[int, ...]
    setup: str

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class index per item."""
        return self.logits.argmax(axis=1)


def snapshot_path(run_dir: Path | str, iteration: int) -> Path:
    """``RUN/snapshots/batch_{iteration}.hdf``."""
    return Path(run_dir) / "snapshots" / f"batch_{iteration}.hdf"


def write_snapshot(run_dir: Path | str, snapshot: Snapshot) -> Path:
    """Write ``snapshot`` atomically; returns its path."""
    path = snapshot_path(run_dir, snapshot.iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("inputs", data=snapshot.inputs.astype(np.float32), compression="gzip")
        f.create_dataset("labels", data=snapshot.labels.astype(np.int64))
        f.create_dataset("logits", data=snapshot.logits.astype(np.float32))
        f.create_dataset("id_code", data=np.array(snapshot.id_code, dtype=object),
                         dtype=h5py.string_dtype())  # fmt: skip
        f.create_dataset("site", data=snapshot.site.astype(np.int64))
        f.attrs["iteration"] = snapshot.iteration
        f.attrs["channels"] = list(snapshot.channels)
        f.attrs["classes"] = list(snapshot.classes)
        f.attrs["setup"] = snapshot.setup
    os.replace(tmp, path)
    return path


def read_snapshot(path: Path | str) -> Snapshot:
    """Read a snapshot; a missing file or dataset is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such snapshot")
    try:
        with h5py.File(path, "r") as f:
            for name in DATASETS:
                if name not in f:
                    raise UserError(f"{path}: dataset {name!r} missing; not a batch snapshot")
            return Snapshot(
                iteration=int(f.attrs["iteration"]),
                inputs=f["inputs"][:],
                labels=f["labels"][:],
                logits=f["logits"][:],
                id_code=tuple(s.decode() if isinstance(s, bytes) else s for s in f["id_code"][:]),
                site=f["site"][:],
                channels=tuple(int(c) for c in f.attrs["channels"]),
                classes=tuple(int(c) for c in f.attrs["classes"]),
                setup=str(f.attrs["setup"]),
            )
    except OSError as err:
        raise UserError(f"{path}: not a readable HDF5 file ({err})") from None
    except KeyError as err:
        raise UserError(f"{path}: attribute {err} missing; not a batch snapshot") from None
