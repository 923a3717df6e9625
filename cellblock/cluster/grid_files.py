"""A grid folder as it lies on disk: its manifest (``grid.json``) and each run's progress.

The reading half of ``grid`` that ``grid_init`` needs too, below both of them (no
cellblock import but ``errors``), so neither imports the other to read a folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cellblock.errors import UserError

__all__ = ["MANIFEST", "latest_iteration", "load_manifest"]

MANIFEST = "grid.json"
_CKPT = re.compile(r"checkpoint_(\d+)\.pt$")


def latest_iteration(run_dir: Path) -> int:
    """Iteration of the latest checkpoint in ``run_dir`` (0 if none), from file names."""
    found = [int(m.group(1)) for p in (Path(run_dir) / "checkpoints").glob("checkpoint_*.pt")
             if (m := _CKPT.search(p.name))]  # fmt: skip
    return max(found, default=0)


def load_manifest(out: Path) -> dict[str, Any]:
    """``out/grid.json`` (raises ``UserError`` if the folder has none)."""
    path = Path(out) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such grid (submit one first)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable grid manifest ({e})") from None
    if not isinstance(data, dict) or "runs" not in data:
        raise UserError(f"{path}: not a grid manifest (no 'runs')")
    return data
