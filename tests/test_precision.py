"""Precision: margin heads in fp32 under autocast, the finite-weights guard, the lr cap."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cellblock.data.augment import BatchAugment
from cellblock.data.config import AugmentConfig
from cellblock.errors import ConfigError, UserError
from cellblock.nets.heads import make_head
from cellblock.training.checkpoint import (
    checkpoint_path,
    checkpoints,
    resume_point,
    save_checkpoint,
)
from cellblock.training.config import TrainConfig
from cellblock.training.distributed import DistEnv
from cellblock.training.state import LogWindow
from cellblock.training.steps import save_state

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


def _tiny_state() -> SimpleNamespace:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    return SimpleNamespace(
        net=net,
        optimizer=opt,
        augment=BatchAugment(AugmentConfig()),
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0),
        window=LogWindow(),
        scaler=None,
        dtype=None,
    )


def test_non_finite_weights_are_never_saved(tmp_path):
    st = _tiny_state()
    save_state(st, DistEnv(), run_dir=tmp_path, done=4, resolved={"net": {}})  # type: ignore[arg-type]
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint_00000004.pt"]
    with torch.no_grad():
        st.net.bias[1] = float("nan")
    with pytest.raises(
        UserError,
        match=r"iteration 5: 1 weight tensor\(s\) hold NaN or infinity "
        r"\(first: bias\); not saved\. Likely cause: a learning rate too high "
        r"for this run \(now 0\.5\)",
    ):
        save_state(st, DistEnv(), run_dir=tmp_path, done=5, resolved={"net": {}})  # type: ignore[arg-type]
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint_00000004.pt"]


def test_resume_sets_a_non_finite_checkpoint_aside(tmp_path, caplog):
    # a whole resolved config's worth of what resuming compares
    net = {"backbone": "tiny", "num_classes": 2, "in_channels": 3, "head": "softmax"}
    config = {
        "net": {**net, "embedding_dim": 0, "pool": "avg"},
        "train": {"optimizer": "sgd", "schedule": "constant"},
    }
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    parts = dict(
        model=net,
        optimizer=opt,
        augment=BatchAugment(AugmentConfig()),
        config=config,
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0),
    )
    save_checkpoint(tmp_path, iteration=3, **parts)
    with torch.no_grad():
        net.weight[0, 0] = float("inf")
    bad = save_checkpoint(tmp_path, iteration=6, **parts)  # as written before this guard
    path, state = resume_point(tmp_path, config)
    assert path == checkpoint_path(tmp_path, 3) and state["iteration"] == 3
    assert not bad.exists() and bad.with_name(bad.name + ".corrupt").exists()
    assert "weight tensor(s) hold NaN or infinity (first: weight); set aside as" in caplog.text


def test_the_lr_cap_applies_to_the_effective_rate():
    base = {"lr": 10, "lr_reference_batch": 32, "batch_size": 256}
    with pytest.raises(
        ConfigError,
        match=r"effective lr 10 x global batch 256 / "
        r"lr_reference_batch 32 = 80 must be <= 10",
    ):
        TrainConfig.from_dict(base)
    cfg = TrainConfig.from_dict({**base, "lr": 1.0})  # 8: fine in one process
    assert cfg.peak_lr(1) == 8.0
    with pytest.raises(ConfigError, match="= 16 must be <= 10"):
        cfg.peak_lr(2)  # the processes of a data-parallel run scale it too
    assert TrainConfig.from_dict({"lr": 10}).peak_lr(64) == 10  # no scaling: lr as given
