"""A predictions store's provenance (``PredictionInfo``), kept in its root attrs.

``cellblock.store.predictions`` writes and reads it (and re-exports these names).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cellblock.errors import UserError

__all__ = ["ATTR", "FORMAT_VERSION", "PredictionInfo"]

FORMAT_VERSION = 1
ATTR = "cellblock_predictions"  # the root attribute holding a PredictionInfo


@dataclass(frozen=True)
class PredictionInfo:
    """Provenance of a predictions store, in its root attrs.

    Args:
        setup: Setup name, e.g. ``"synthetic/tiny"``.
        run: The run folder the checkpoint came from.
        iteration: The checkpoint's iteration.
        classes: sirna id of each logit column (``label="control"`` runs: the controls).
        tta: Test-time transforms averaged, e.g. ``"none"``, ``"flips"``, ``"d4"``.
        channels: 1-based channels the model saw.
        embedding_dim: Width of ``embeddings``.
        dataset: The packed dataset predicted.
        code_version: ``cellblock`` version (and git commit) that predicted.
        format_version: Layout version of this store.
    """

    setup: str
    run: str
    iteration: int
    classes: tuple[int, ...]
    tta: str
    channels: tuple[int, ...]
    embedding_dim: int
    dataset: str
    code_version: str
    format_version: int = FORMAT_VERSION

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"], out["channels"] = list(self.classes), list(self.channels)
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str) -> PredictionInfo:
        """Parse and validate; a missing or mistyped field is a UserError naming it."""
        if not isinstance(obj, dict):
            raise UserError(f"{where}: no {ATTR!r} attributes; not a cellblock predictions store")
        kinds = {"setup": str, "run": str, "iteration": int, "classes": list, "tta": str,
                 "channels": list, "embedding_dim": int, "dataset": str, "code_version": str,
                 "format_version": int}  # fmt: skip
        for key, kind in kinds.items():
            if not isinstance(obj.get(key), kind):
                raise UserError(f"{where}: field {key!r} missing or not {kind.__name__}")
        if obj["format_version"] != FORMAT_VERSION:
            raise UserError(
                f"{where}: format_version {obj['format_version']}, this code reads {FORMAT_VERSION}"
            )
        fields = {k: obj[k] for k in kinds}
        fields["classes"] = tuple(int(c) for c in obj["classes"])
        fields["channels"] = tuple(int(c) for c in obj["channels"])
        return cls(**fields)
