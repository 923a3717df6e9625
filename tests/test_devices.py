"""The job's own GPUs (workers pinned through the driver's mask) and the precision rule."""

from __future__ import annotations

import sys

import daisy.v2 as daisy
import pytest
import torch

from cellblock.blockwise import driver
from cellblock.blockwise.driver import LaunchOptions
from cellblock.blockwise.launcher import LocalLauncher, WorkerSpec
from cellblock.devices import resolve_precision, visible_mask, worker_gpus
from cellblock.errors import UserError

UUIDS = "GPU-8f3c1a2b-0000-1111-2222-333344445555,GPU-1d2e3f4a-6666-7777-8888-999900001111"
MIGS = "MIG-5b1c2d3e-aaaa-bbbb-cccc-ddddeeeeffff,MIG-GPU-8f3c1a2b-0000-1111-2222-333344445555/1/0"
PRINT_MASK = "import os; print('mask=' + os.environ['CUDA_VISIBLE_DEVICES'] + '=')"


def _worker_mask(tmp_path, gpus: tuple[str, ...], worker_id: int) -> str:
    """Start a real worker process through the local launcher; the mask it saw."""
    spec = WorkerSpec((sys.executable, "-c", PRINT_MASK), str(tmp_path), gpus)
    context = daisy.Context(hostname="127.0.0.1", port=1, task_id="t", worker_id=worker_id)
    LocalLauncher(spec)(context=context)
    return (tmp_path / f"worker_{worker_id}.log").read_text().split("mask=")[1].split("=")[0]


@pytest.mark.parametrize(
    ("mask", "cuda_count", "requested", "expected"),
    [
        ("2,3", 2, ("1",), ("3",)),
        ("2,3", 2, None, ("2", "3")),
        (UUIDS, 2, ("1", "0"), tuple(reversed(UUIDS.split(",")))),
        # CUDA enumerates one MIG instance per process; each worker can still use one
        (MIGS, 1, None, tuple(MIGS.split(","))),
        (None, 2, ("1",), ("1",)),  # no mask: every GPU of the node, ids as they are
    ],
)
def test_workers_get_the_drivers_own_gpus(
    tmp_path, monkeypatch, mask, cuda_count, requested, expected
):
    if mask is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mask)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_count)  # no GPU here
    gpus = driver._gpus(LaunchOptions(gpus=requested))
    assert gpus == expected
    # every worker, a real process started by the launcher, sees exactly its entry
    seen = [_worker_mask(tmp_path / str(i), (gpu,), i) for i, gpu in enumerate(gpus)]
    assert seen == list(expected)


def test_gpu_ids_outside_the_job_are_refused():
    with pytest.raises(
        UserError,
        match=r"--gpus 0,2: GPU\(s\) 2 not among this job's GPUs "
        r"\(2 visible, CUDA_VISIBLE_DEVICES=2,3\)",
    ):
        worker_gpus(("0", "2"), {"CUDA_VISIBLE_DEVICES": "2,3"}, 2)
    with pytest.raises(UserError, match="GPU\\(s\\) x not among"):
        worker_gpus(("x",), {}, 4)
    assert worker_gpus(None, {"CUDA_VISIBLE_DEVICES": ""}, 0) == ()  # a job without GPUs
    # CUDA stops at the first entry it cannot use; so do we
    assert visible_mask({"CUDA_VISIBLE_DEVICES": "1,-1,0"}) == ("1",)
    assert visible_mask({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}) == ()
    assert visible_mask({}) is None


@pytest.mark.parametrize(
    ("requested", "cuda", "capability", "expected"),
    [
        ("auto", True, (9, 0), "bf16"),  # H100
        ("auto", True, (8, 0), "bf16"),  # A100
        ("auto", True, (7, 0), "fp16"),  # V100: no native bf16, fp16 with a GradScaler
        ("auto", True, (7, 5), "fp16"),  # T4
        ("auto", False, None, "fp32"),  # CPU
        ("bf16", False, None, "bf16"),  # asked for: CPU autocast has bf16
        ("fp32", True, (9, 0), "fp32"),
        ("fp16", True, (9, 0), "fp16"),
    ],
)
def test_precision_rule_per_device(requested, cuda, capability, expected):
    assert resolve_precision(requested, cuda, capability) == expected


def test_precision_rule_refuses_what_cannot_run():
    with pytest.raises(UserError, match=r"train\.precision: 'half' is not one of auto, bf16"):
        resolve_precision("half", True, (9, 0))
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        resolve_precision("fp16", False)
