"""Resume across world sizes: what each rank restores of a checkpoint written by others.

The real 2-rank -> 1-process resume (torchrun, gloo) is in tests/test_training_ddp.py;
here the rank bookkeeping with real modules, in process.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from cellblock.data.augment import BatchAugment
from cellblock.data.config import AugmentConfig
from cellblock.training.distributed import DistEnv
from cellblock.training.rng import get_rng_state, set_rng_state
from cellblock.training.steps import restore


def _state(n_ranks: int) -> dict[str, Any]:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ranks = []
    for r in range(n_ranks):
        torch.manual_seed(100 + r)
        aug = BatchAugment(AugmentConfig(), seed=200 + r)
        aug._rand(5)  # each rank's generator a few draws in
        ranks.append({"rng": get_rng_state(), "augment": aug.state_dict()})
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    return {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "ranks": ranks,
        "iteration": 9,
        "config": {"train": {"seed": 3}},
    }


def _fresh(rank: int) -> SimpleNamespace:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    return SimpleNamespace(
        net=net,
        optimizer=opt,
        augment=BatchAugment(AugmentConfig(), seed=rank),
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0),
        scaler=None,
    )


def _draw(st: SimpleNamespace) -> tuple[list[float], list[float]]:
    return st.augment._rand(3).tolist(), torch.rand(3).tolist()


def test_fewer_ranks_take_their_own_states_and_say_what_is_left():
    state = _state(2)
    st = _fresh(0)
    notes = restore(st, state, DistEnv(0, 1))  # type: ignore[arg-type]
    assert notes == [
        "written by 2 process(es), resuming with 1: not bit-exact (batches are "
        "split over the ranks)",
        "ranks 1..1's RNG and augmentation states are not used",
    ]
    mine = _draw(st)
    ref = _fresh(0)
    ref.augment.load_state_dict(state["ranks"][0]["augment"])
    set_rng_state(state["ranks"][0]["rng"])
    assert mine == _draw(ref)  # rank 0's streams, not rank 1's
    ref.augment.load_state_dict(state["ranks"][1]["augment"])
    set_rng_state(state["ranks"][1]["rng"])
    assert mine != _draw(ref)
    assert restore(_fresh(1), state, DistEnv(1, 2)) == []  # same world size: exact


def test_extra_ranks_are_seeded_afresh_never_a_copy_of_another():
    state = _state(2)
    draws = []
    for rank in range(3):
        st = _fresh(rank)
        notes = restore(st, state, DistEnv(rank, 3))  # type: ignore[arg-type]
        assert ("no RNG or augmentation state of rank 2: seeded afresh" in notes) == (rank == 2)
        draws.append(_draw(st))
    assert draws[2] != draws[0] and draws[2] != draws[1]
    st = _fresh(2)
    restore(st, state, DistEnv(2, 3))  # type: ignore[arg-type]
    assert _draw(st) == draws[2]  # reproducible: from (seed, rank, iteration)


def test_cuda_states_of_another_machine_are_reported_not_forced():
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    state = get_rng_state()
    expected = (torch.rand(2).tolist(), np.random.rand(), random.random())
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 4  # written on a 4-GPU node
    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        return
    assert set_rng_state(state) == ["the CUDA RNG state of 4 GPU(s): no GPU here"]
    assert (torch.rand(2).tolist(), np.random.rand(), random.random()) == expected
