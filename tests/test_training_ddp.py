"""Data-parallel training (2 processes, gloo on CPU, launched by torchrun) and its resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from cellblock.training.checkpoint import latest_checkpoint, load_checkpoint
from cellblock.training.sampler import InfiniteSampler
from tests.test_training import SETUP, args

pytestmark = pytest.mark.slow


def torchrun(n: int, data: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(SETUP / "train.py"), *args(n, data, out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def test_ranks_split_the_global_stream():
    whole = InfiniteSampler(10, seed=3, start=4)
    ranks = [InfiniteSampler(10, seed=3, start=4, rank=r, world_size=2) for r in (0, 1)]
    take = lambda s, k: [i for i, _ in zip(s, range(k), strict=False)]  # noqa: E731
    ref, r0, r1 = take(whole, 12), take(ranks[0], 6), take(ranks[1], 6)
    assert r0 == ref[0::2] and r1 == ref[1::2]
    with pytest.raises(ValueError, match="rank 2"):
        InfiniteSampler(10, 0, rank=2, world_size=2)


def test_two_process_gloo_run_and_its_resume(tiny_packed, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    r = torchrun(6, tiny_packed, whole)
    assert "iteration 6" in r.stdout  # rank 0 reports; rank 1 prints nothing of its own
    state = load_checkpoint(latest_checkpoint(whole))
    assert state["iteration"] == 6 and len(state["ranks"]) == 2
    log = pd.read_csv(whole / "log.csv")
    assert list(log["iteration"]) == list(range(1, 7))
    assert len(list((whole / "tensorboard").glob("events.*"))) == 1  # rank 0 writes alone

    torchrun(3, tiny_packed, resumed)
    torchrun(6, tiny_packed, resumed)
    a, b = load_checkpoint(latest_checkpoint(whole)), load_checkpoint(latest_checkpoint(resumed))
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    la, lb = pd.read_csv(whole / "log.csv"), pd.read_csv(resumed / "log.csv")
    assert list(la["loss"]) == list(lb["loss"])


def test_a_two_rank_checkpoint_resumes_in_one_process(tiny_packed, tmp_path):
    """N ranks -> M processes: rank 0 takes rank 0's states and says what it left."""
    out = tmp_path / "run"
    torchrun(3, tiny_packed, out)
    two = load_checkpoint(latest_checkpoint(out))
    assert two["iteration"] == 3 and len(two["ranks"]) == 2
    cmd = [sys.executable, str(SETUP / "train.py"), *args(6, tiny_packed, out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    said = r.stdout + r.stderr
    assert "written by 2 process(es), resuming with 1: not bit-exact" in said
    assert "ranks 1..1's RNG and augmentation states are not used" in said
    one = load_checkpoint(latest_checkpoint(out))
    assert one["iteration"] == 6 and "ranks" not in one
    assert list(pd.read_csv(out / "log.csv")["iteration"]) == list(range(1, 7))
