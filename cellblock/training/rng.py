"""The global RNG states of torch, numpy and Python as tensors and plain types.

What a checkpoint keeps of them (``torch.load(weights_only=True)`` reads it back), so
a resumed run draws the same numbers as an uninterrupted one.

CUDA: a process keeps the state of its own GPU only (the current device; a rank's
``local_rank``). A checkpoint therefore resumes on another node shape (4 GPUs per node
to 1, GPU to CPU): what cannot apply here is reported by :func:`set_rng_state`, never
forced onto a device that does not exist. Checkpoints written before kept every
visible GPU's state; the entry of our own device index is restored from them.
"""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state"]


def get_rng_state() -> dict[str, Any]:
    """The global RNG states of torch, numpy and Python, as tensors and plain types."""
    # the legacy tuple (numpy's stubs also allow the dict of get_state(legacy=False))
    kind, keys, pos, has_gauss, gauss = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state()
    )
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(internal), "gauss": py_gauss},
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> list[str]:
    """Restore what :func:`get_rng_state` returned, as far as it applies here.

    Returns:
        What could not be restored (empty: everything), one phrase each.
    """
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    saved = list(state.get("cuda") or [])
    if not saved:
        return []
    if not torch.cuda.is_available():
        return [f"the CUDA RNG state of {len(saved)} GPU(s): no GPU here"]
    own = torch.cuda.current_device()
    # one entry: the writer's own GPU; several (older checkpoints): every GPU it saw
    if len(saved) > 1 and own >= len(saved):
        return [f"the CUDA RNG state of GPU {own}: the writer saw {len(saved)} GPU(s)"]
    torch.cuda.set_rng_state(saved[0] if len(saved) == 1 else saved[own])
    return []
