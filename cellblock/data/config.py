"""``DataConfig``: every knob of the training data pipeline, frozen and validated.

A setup's ``config.yaml`` carries a ``data:`` mapping that ``DataConfig.from_dict``
turns into this object; an unknown or misspelt key is a ``ConfigError`` naming it, so a
typo can never silently fall back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from cellblock.errors import ConfigError

__all__ = ["AugmentConfig", "DataConfig"]

UNITS = ("site", "well")
NORMALIZATIONS = ("plate", "experiment", "image", "global")
BATCH_BY = (None, "plate", "experiment")
STATS_FROM = ("all", "negative_control")
LABELS = ("sirna", "control")


def _pair(value: Any, name: str) -> tuple[float, float]:
    """A validated ``(low, high)`` range with ``0 <= low <= high``."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a (low, high) pair, got {value!r}") from None
    if not 0 <= low <= high:
        raise ConfigError(f"{name}: need 0 <= low <= high, got {value!r}")
    return low, high


def _check_keys(cls: type, obj: Any, where: str) -> dict:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(obj).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(obj) - known)
    if unknown:
        names = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise ConfigError(f"unknown data config key(s): {names}; known: {', '.join(sorted(known))}")
    return dict(obj)


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentations (``cellblock.data.augment.BatchAugment``), applied in train mode only.

    Args:
        d4: Random flips and 90-degree rotations, one of the 8 per sample.
        crop_scale: Area fraction range of the random resized crop; ``(1, 1)`` = no crop.
        crop_ratio: Aspect-ratio range (w/h) of the random resized crop.
        erase_p: Probability of erasing one random rectangle per sample.
        erase_scale: Area fraction range of the erased rectangle.
        jitter_scale: Per-channel multiplicative jitter: factor in ``1 +- jitter_scale``.
        jitter_shift: Per-channel additive jitter in normalized units: ``+- jitter_shift``.
    """

    d4: bool = True  # microscopy has no canonical orientation: all 8 symmetries are free data
    crop_scale: tuple[float, float] = (0.6, 1.0)  # keep most of the field: cells are sparse
    crop_ratio: tuple[float, float] = (0.75, 1.333)  # mild anisotropy, as torchvision's default
    erase_p: float = 0.25  # random erasing, which the blog solution found to help
    erase_scale: tuple[float, float] = (0.02, 0.2)
    jitter_scale: float = 0.1  # stain intensity varies plate to plate even after normalization
    jitter_shift: float = 0.1

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio", "erase_scale"):
            object.__setattr__(self, name, _pair(getattr(self, name), f"augment.{name}"))
        if self.crop_scale[1] > 1 or self.crop_scale[0] <= 0:
            raise ConfigError(
                f"augment.crop_scale: need 0 < low <= high <= 1, got {self.crop_scale}"
            )
        if self.crop_ratio[0] <= 0:
            raise ConfigError(f"augment.crop_ratio: must be positive, got {self.crop_ratio}")
        if self.erase_scale[1] > 1:
            raise ConfigError(f"augment.erase_scale: must be <= 1, got {self.erase_scale}")
        if not 0 <= self.erase_p <= 1:
            raise ConfigError(f"augment.erase_p: must be in [0, 1], got {self.erase_p}")
        if not (0 <= self.jitter_scale < 1 and self.jitter_shift >= 0):
            raise ConfigError("augment.jitter_scale must be in [0, 1), jitter_shift >= 0")
        if not isinstance(self.d4, bool):
            raise ConfigError(f"augment.d4: expected true/false, got {self.d4!r}")

    @classmethod
    def from_dict(cls, obj: dict, where: str = "augment") -> AugmentConfig:
        """Build from a mapping; unknown keys raise ``ConfigError`` naming them."""
        return cls(**_check_keys(cls, obj, where))

    @classmethod
    def none(cls) -> AugmentConfig:
        """All augmentations off (the batch passes unchanged, also in train mode)."""
        return cls(False, (1.0, 1.0), (1.0, 1.0), 0.0, (0.0, 0.0), 0.0, 0.0)


@dataclass(frozen=True)
class DataConfig:
    """What a training or prediction run reads, and how it is normalized and labelled.

    Args:
        unit: ``"site"``: one item per imaged site, ``(C, H, W)``. ``"well"``: one item
            per well, its sites stacked as ``(S, C, H, W)``; the model decides how to
            combine them (e.g. folds S into the batch and averages the logits).
        channels: 1-based channel subset, e.g. ``(1, 2, 3, 4, 5)`` to leave channel 6
            out; None = all channels.
        normalization: Per-channel statistics subtracted/divided: ``"plate"``,
            ``"experiment"`` (plates pooled), ``"global"`` (all plates pooled) or
            ``"image"`` (each site's own mean/std).
        stats_from: Pack statistics over ``"all"`` wells or ``"negative_control"`` wells
            (ignored for ``"image"``).
        min_std: Floor on the std divided by, in uint8 grey levels (a blank channel
            would otherwise divide by ~0).
        crop: Training output size (square, px) of the random resized crop; None = the
            image size. Evaluation sees full images.
        label: ``"sirna"``: the sirna id, controls being extra classes (1st place);
            ``"control"``: control wells only, labelled 0..n_controls-1 (stage I).
        use_test_labels: Let labels of test treatment wells (the answer key) reach
            training rows. Off: they are -1 unless a pseudo-label file supplies them.
        n_folds: Folds over the training experiments, grouped by experiment.
        fold: Which fold is validation; None = no fold split (see ``val_experiments``).
        val_experiments: Experiments held out for validation (used when ``fold`` is None).
        split_seed: Seed of the fold assignment.
        controls_only: Only control wells, of train and test (stage I pretraining).
        pseudo_labels: Path of a pseudo-label CSV (``id_code,sirna[,confidence]``)
            labelling test wells for training (stage III).
        min_confidence: Pseudo labels below this confidence are dropped.
        augment: Batch augmentations (``AugmentConfig``).
        batch_by: ``"plate"`` or ``"experiment"``: every training batch holds sites of
            one plate (experiment), so BatchNorm normalizes the features of every layer
            within it, as ``normalization`` does the pixels; prediction and validation
            then re-estimate the BatchNorm statistics on each plate (experiment) they
            score (AdaBN). None: batches mix plates, and the trained statistics are used.
    """

    unit: str = "site"  # sites are independent fields of view: twice the samples per epoch
    channels: tuple[int, ...] | None = None  # None = all; leave-one-out subsets for ensembles
    normalization: str = "plate"  # plate effects dominate RxRx1; per plate removes most
    stats_from: str = "all"  # "negative_control": the untreated reference of each plate
    min_std: float = 1.0  # one grey level
    crop: int | None = None  # None = train at the full image size
    label: str = "sirna"  # all siRNAs + controls as extra classes
    use_test_labels: bool = False  # never train on the answer key unless asked
    n_folds: int = 5  # the 4th-place recipe: 5 folds
    fold: int | None = None  # None = validate on val_experiments instead
    val_experiments: tuple[str, ...] = ()  # () with fold None = no validation rows
    split_seed: int = 0
    controls_only: bool = False  # stage I: control wells of train and test
    pseudo_labels: str | None = None  # stage III: test wells labelled by an earlier model
    min_confidence: float = 0.0  # keep all pseudo labels by default
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    batch_by: str | None = None  # "plate": BatchNorm per plate, for strong batch effects

    def __post_init__(self) -> None:
        for name, allowed in [
            ("unit", UNITS),
            ("normalization", NORMALIZATIONS),
            ("stats_from", STATS_FROM),
            ("label", LABELS),
            ("batch_by", BATCH_BY),
        ]:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {allowed}")
        if self.channels is not None:
            chans = tuple(self.channels)
            if not chans or any(not isinstance(c, int) or c < 1 for c in chans):
                raise ConfigError(f"channels: need 1-based channel numbers, got {self.channels!r}")
            if len(set(chans)) != len(chans):
                raise ConfigError(f"channels: repeated channel in {self.channels!r}")
            object.__setattr__(self, "channels", chans)
        if self.crop is not None and (not isinstance(self.crop, int) or self.crop < 1):
            raise ConfigError(f"crop: need a positive size in px or null, got {self.crop!r}")
        if not isinstance(self.n_folds, int) or self.n_folds < 2:
            raise ConfigError(f"n_folds: need at least 2, got {self.n_folds!r}")
        if self.fold is not None and not 0 <= self.fold < self.n_folds:
            raise ConfigError(f"fold: need 0 <= fold < n_folds={self.n_folds}, got {self.fold}")
        if self.min_std <= 0:
            raise ConfigError(f"min_std: must be positive, got {self.min_std}")
        object.__setattr__(self, "val_experiments", tuple(self.val_experiments))
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig.from_dict(self.augment))
        elif not isinstance(self.augment, AugmentConfig):
            raise ConfigError(f"augment: expected a mapping, got {self.augment!r}")

    @classmethod
    def from_dict(cls, obj: dict | None) -> DataConfig:
        """Build from a mapping (e.g. the ``data:`` section of ``config.yaml``).

        Args:
            obj: Keys as the fields of this class; ``augment`` may be a nested mapping.
                Unknown keys, here or under ``augment``, raise ``ConfigError`` naming them.
        """
        kwargs = _check_keys(cls, obj or {}, "")
        if isinstance(kwargs.get("augment"), dict):
            kwargs["augment"] = AugmentConfig.from_dict(kwargs["augment"])
        for name in ("channels", "val_experiments"):
            if isinstance(kwargs.get(name), list):
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> DataConfig:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)

    def channel_index(self, n_channels: int) -> list[int]:
        """0-based indices of the selected channels in a dataset with ``n_channels``."""
        if self.channels is None:
            return list(range(n_channels))
        bad = [c for c in self.channels if c > n_channels]
        if bad:
            raise ConfigError(f"channels: {bad} not in a {n_channels}-channel dataset")
        return [c - 1 for c in self.channels]
