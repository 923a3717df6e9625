"""Classification heads: softmax, CosFace, ArcFace, and the mixed CE + ArcFace head.

Every head maps features ``(B, D)`` to prediction logits ``(B, C)`` and computes its own
training loss. Margin heads (CosFace, ArcFace) apply the margin only in the loss: their
prediction logits are ``scale * cos(theta)``, so evaluation and ensembling never see it.

Margin heads and every loss run in fp32 even inside autocast: in bf16 a cosine of 0.999
rounds to 1.0, where ArcFace's ``sqrt(1 - cos^2)`` has an infinite derivative; the loss
stays finite while the gradients (and after clipping, the weights) turn to NaN.

    softmax     Linear(D, C); cross-entropy with label smoothing
    cosface     normalized weights; CE on s * (cos - m) at the target (Wang et al. 2018)
    arcface     normalized weights; CE on s * cos(theta + m) at the target (Deng et al. 2019)
    ce+arcface  a Linear classifier (CE) and an ArcFace layer on the same features;
                loss = (1 - w) CE + w ArcFace (the 1st-place RxRx1 recipe, w = 0.2);
                prediction logits come from the Linear classifier
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as nnf

__all__ = ["HEADS", "ArcFace", "CosFace", "Head", "MixedHead", "SoftmaxHead", "make_head"]

SIN2_FLOOR = 1e-6  # sin(theta)^2 at least this: theta >= 0.001 rad as far as gradients go


class Head(nn.Module):
    """Base: ``forward(features) -> logits``; ``loss(features, logits, labels) -> scalar``.

    Args:
        label_smoothing: Label smoothing of the cross-entropy, in [0, 1).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def loss(self, features: Tensor, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of ``logits`` (this head's own forward of ``features``), in fp32."""
        with fp32(logits):
            return nnf.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)


def fp32(like: Tensor) -> torch.autocast:
    """Autocast off on ``like``'s device: what runs inside computes in the inputs' dtype."""
    return torch.autocast(like.device.type, enabled=False)


class SoftmaxHead(Head):
    """A Linear classifier trained with (label-smoothed) cross-entropy.

    Args:
        in_features: Feature width D.
        num_classes: Number of classes C.
        label_smoothing: Label smoothing of the cross-entropy.
    """

    def __init__(self, in_features: int, num_classes: int, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features)


class _CosineHead(Head, abc.ABC):
    """Cosine classifier: logits ``scale * cos(features, W_c)`` with L2-normalized rows.

    Args:
        in_features: Feature width D.
        num_classes: Number of classes C.
        scale: Logit scale s applied to the cosines.
        margin: Margin m, applied to the target class in the loss only.
        label_smoothing: Label smoothing of the cross-entropy.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float,
        margin: float,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(label_smoothing)
        self.scale = scale
        self.margin = margin
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, features: Tensor) -> Tensor:
        """``cos(theta)`` between each feature vector and each class weight, ``(B, C)``, fp32."""
        with fp32(features):  # autocast would run linear in bf16 despite the .float()
            return nnf.linear(nnf.normalize(features.float()), nnf.normalize(self.weight.float()))

    def forward(self, features: Tensor) -> Tensor:
        return self.scale * self.cosine(features)

    @abc.abstractmethod
    def target_logit(self, cos: Tensor) -> Tensor:
        """The margin-penalized cosine of the target class (``cos`` of the targets)."""

    def loss(self, features: Tensor, logits: Tensor, labels: Tensor) -> Tensor:
        with fp32(logits):
            cos = logits.float() / self.scale  # exact: logits are scale * cos
            target = cos.gather(1, labels[:, None])
            margined = cos.scatter(1, labels[:, None], self.target_logit(target))
            return nnf.cross_entropy(
                self.scale * margined, labels, label_smoothing=self.label_smoothing
            )


class CosFace(_CosineHead):
    """Large-margin cosine loss: the target logit is ``s * (cos - m)``."""

    def target_logit(self, cos: Tensor) -> Tensor:
        return cos - self.margin


class ArcFace(_CosineHead):
    """Additive angular margin: the target logit is ``s * cos(theta + m)``.

    Where ``theta + m`` would pass pi (``cos < cos(pi - m)``) ``cos(theta + m)`` is no
    longer decreasing in theta; like the common implementations the target then gets
    ``cos - m * sin(m)`` (CosFace-like), or with ``easy_margin`` the margin only where
    ``cos > 0``.

    Args:
        in_features: Feature width D.
        num_classes: Number of classes C.
        scale: Logit scale s.
        margin: Angular margin m in radians.
        label_smoothing: Label smoothing of the cross-entropy.
        easy_margin: Apply the margin only where ``cos > 0``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float,
        margin: float,
        *,
        label_smoothing: float = 0.0,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(in_features, num_classes, scale, margin, label_smoothing)
        self.easy_margin = easy_margin
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def target_logit(self, cos: Tensor) -> Tensor:
        # floor above 0: at cos == +-1 (a perfect match, or rounding) sqrt's slope is infinite
        sin = torch.sqrt((1.0 - cos * cos).clamp(SIN2_FLOOR, 1.0))
        phi = cos * self.cos_m - sin * self.sin_m
        if self.easy_margin:
            return torch.where(cos > 0, phi, cos)
        return torch.where(cos > self.th, phi, cos - self.mm)


class MixedHead(Head):
    """CE on a Linear classifier plus ArcFace on the same features.

    Args:
        in_features: Feature width D.
        num_classes: Number of classes C.
        scale: ArcFace logit scale.
        margin: ArcFace angular margin (radians).
        arcface_weight: w in ``(1 - w) CE + w ArcFace``.
        label_smoothing: Label smoothing of both cross-entropies.
        easy_margin: ArcFace's easy-margin variant.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float,
        margin: float,
        *,
        arcface_weight: float = 0.2,
        label_smoothing: float = 0.0,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(label_smoothing)
        self.arcface_weight = arcface_weight
        self.fc = nn.Linear(in_features, num_classes)
        self.arcface = ArcFace(
            in_features,
            num_classes,
            scale,
            margin,
            label_smoothing=label_smoothing,
            easy_margin=easy_margin,
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features)

    def loss(self, features: Tensor, logits: Tensor, labels: Tensor) -> Tensor:
        ce = super().loss(features, logits, labels)
        arc = self.arcface.loss(features, self.arcface(features), labels)
        return (1.0 - self.arcface_weight) * ce + self.arcface_weight * arc


# name -> (class, default margin); the margin default follows the papers' usual values.
HEADS: dict[str, tuple[type[Head], float]] = {
    "softmax": (SoftmaxHead, 0.0),
    "cosface": (CosFace, 0.35),
    "arcface": (ArcFace, 0.5),
    "ce+arcface": (MixedHead, 0.5),
}


def make_head(
    name: str,
    in_features: int,
    num_classes: int,
    *,
    scale: float = 30.0,
    margin: float | None = None,
    arcface_weight: float = 0.2,
    label_smoothing: float = 0.0,
    easy_margin: bool = False,
) -> Head:
    """Build a head by name (a key of :data:`HEADS`).

    Args:
        name: "softmax", "cosface", "arcface" or "ce+arcface".
        in_features: Feature width D.
        num_classes: Number of classes C.
        scale: Logit scale of the cosine heads (ignored by softmax).
        margin: Margin of the cosine heads; None: the head's default (HEADS).
        arcface_weight: ArcFace share of the mixed head's loss.
        label_smoothing: Label smoothing of every cross-entropy.
        easy_margin: ArcFace's easy-margin variant.
    """
    cls, default_margin = HEADS[name]
    m = default_margin if margin is None else margin
    if cls is SoftmaxHead:
        return SoftmaxHead(in_features, num_classes, label_smoothing)
    if cls is CosFace:
        return CosFace(in_features, num_classes, scale, m, label_smoothing)
    if cls is ArcFace:
        return ArcFace(in_features, num_classes, scale, m, label_smoothing=label_smoothing,
                       easy_margin=easy_margin)  # fmt: skip
    return MixedHead(in_features, num_classes, scale, m, arcface_weight=arcface_weight,
                     label_smoothing=label_smoothing, easy_margin=easy_margin)  # fmt: skip
