"""Where a run starts: another run's weights (:func:`init_weights`).

A run continues from its own newest intact checkpoint (``checkpoint.resume_point``);
a new run may start from the weights of another (``--init-from``: stage I -> II).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cellblock.errors import UserError
from cellblock.nets.models import Net
from cellblock.training import checkpoint as ckpt

__all__ = ["init_weights"]

log = logging.getLogger(__name__)


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
