"""Precision: margin heads in fp32 under autocast, the finite-weights guard, the lr cap."""

from __future__ import annotations

import pytest
import torch

from cellblock.nets.heads import make_head

MARGIN_HEADS = ("arcface", "ce+arcface", "cosface")


def _near_target(head_name: str, cos: float) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A head and features whose cosine to their target class weight is ``cos``."""
    torch.manual_seed(0)
    head = make_head(head_name, 64, 5)
    weight = head.arcface.weight if head_name == "ce+arcface" else head.weight
    labels = torch.tensor([0, 1, 2, 3])
    w = torch.nn.functional.normalize(weight.detach()[labels])
    noise = torch.randn_like(w)
    noise = torch.nn.functional.normalize(noise - (noise * w).sum(1, keepdim=True) * w)
    feats = (cos * w + (1 - cos**2) ** 0.5 * noise) * 7.0
    return head, feats.requires_grad_(True), labels


@pytest.mark.parametrize("name", MARGIN_HEADS)
def test_margin_heads_give_finite_gradients_under_bf16_autocast(name):
    # a target cosine of 0.999 rounds to 1.0 in bf16, where d sqrt(1 - cos^2) is infinite
    head, feats, labels = _near_target(name, 0.999)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(feats)
        loss = head.loss(feats, logits, labels)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(feats.grad).all(), "non-finite feature gradients"
    for p in head.parameters():
        assert torch.isfinite(p.grad).all(), "non-finite weight gradients"


def test_margin_head_gradients_stay_finite_at_a_perfect_match():
    head, feats, labels = _near_target("arcface", 1.0)  # cos == 1 even in fp32
    head.loss(feats, head(feats), labels).backward()
    assert torch.isfinite(feats.grad).all() and torch.isfinite(head.weight.grad).all()
