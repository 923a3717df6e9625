"""Prediction gives one answer however it runs, estimates each plate's BatchNorm
statistics once per run, keeps nothing non-finite and repairs what went missing.

All with a run trained by plate (``data.batch_by: plate``), whose prediction depends on
per-plate statistics: the case where batch size and workers used to change the answer.
Real daisy workers, real zarr stores, the real ensemble script.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from cellblock.blockwise.cli import scan_main
from cellblock.blockwise.driver import worker_cpus
from cellblock.blockwise.geometry import BlockGrid
from cellblock.blockwise.task import done_count
from cellblock.inference import Predictor
from cellblock.runs import run_checkpoint
from cellblock.store.packed import PackedDataset
from cellblock.training.checkpoint import load_checkpoint
from cellblock.training.cli import train_main
from tests.conftest import ROOT
from tests.test_blockwise import (
    BLOCKWISE,
    _counts,
    _lines,
    _load,
    _run,
    _start,
    _wait_for,
    _worker_pids,
)
from tests.test_inference import SETUP, TRAIN

# 19 classes: the dataset's own, so the ensemble takes these predictions
BY_PLATE = [*TRAIN, "data.batch_by=plate", "net.num_classes=19"]
PLATES = ("HEPG2-02/Plate1", "HEPG2-02/Plate2", "HUVEC-02/Plate1")
ENSEMBLE = ROOT / "04_ensemble" / "ensemble.py"


@pytest.fixture(scope="module")
def plate_run(tiny_packed, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("invariance") / "run"
    sets = [a for s in BY_PLATE for a in ("--set", s)]
    assert train_main(SETUP, ["20", "--data", str(tiny_packed), "--out", str(run), *sets]) == 0
    return run


def _args(run: Path, data: Path, out: Path, batch: int, *extra: str) -> list[str]:
    return [
        "--run",
        str(run),
        "--data",
        str(data),
        "--out",
        str(out),
        "--split",
        "test",
        "--experiments",
        ",".join(PLATES),
        "--tta",
        "flips",
        "--batch-size",
        str(batch),
        *extra,
    ]


def _blockwise(run: Path, data: Path, out: Path, batch: int, *extra: str):
    r = _run([str(BLOCKWISE), *_args(run, data, out, batch, *extra)])
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def reference(plate_run, tiny_packed, tmp_path_factory) -> Path:
    """The in-process scan at batch 64: what every other way of running must equal."""
    out = tmp_path_factory.mktemp("reference") / "pred"
    assert scan_main(_args(plate_run, tiny_packed, out, 64)) == 0
    return out


def _assert_same_answer(got: dict, want: dict, what: str) -> None:
    """Logits within 1e-5 relative (of the plate's scale); float16 embeddings within one
    float16 step of the float32 values' own 1e-5 (of the plate's scale); holes in the same
    places. (Two float32 values 1e-7 apart can round to float16 values several steps
    apart where the values are small, so the step is counted beyond the float32 error.)"""
    assert got.keys() == want.keys(), what
    for key in want:
        (lg, em), (lw, ew) = got[key], want[key]
        assert np.array_equal(np.isnan(lg), np.isnan(lw)), (what, key)
        scale = float(np.nanmax(np.abs(lw)))
        np.testing.assert_allclose(
            lg, lw, rtol=1e-5, atol=1e-5 * scale, equal_nan=True, err_msg=f"{what}: {key} logits"
        )
        a, b = em.astype(np.float32), ew.astype(np.float32)
        step = np.spacing(np.nan_to_num(np.maximum(np.abs(em), np.abs(ew)))).astype(np.float32)
        tolerance = step + 1e-5 * float(np.nanmax(np.abs(b)))
        ok = (np.abs(a - b) <= tolerance) | (np.isnan(a) & np.isnan(b))
        assert ok.all(), f"{what}: {key} embeddings differ by more than a float16 step"


def _estimates(out: Path) -> list[str]:
    """The plates whose statistics a run's workers estimated (one log line each)."""
    text = "".join(p.read_text() for p in (out / "logs").glob("worker_*.log"))
    return re.findall(r"BatchNorm statistics of (\S+): estimated", text)


@pytest.mark.slow
def test_the_answer_does_not_depend_on_how_prediction_runs(
    plate_run, tiny_packed, reference, tmp_path
):
    want = _load(reference)
    assert set(want) == set(PLATES)
    # the scan at other batch sizes
    for batch in (1, 7):
        out = tmp_path / f"scan{batch}"
        assert scan_main(_args(plate_run, tiny_packed, out, batch)) == 0
        _assert_same_answer(_load(out), want, f"scan --batch-size {batch}")
    # blockwise: one worker with one-well blocks; two workers with the default blocks
    # (each plate estimated once, counted); two workers, a plate per block, batch 1
    one = tmp_path / "one"
    _blockwise(plate_run, tiny_packed, one, 7, "--workers", "1", "--block-wells", "1")
    _assert_same_answer(_load(one), want, "1 worker, 1-well blocks, batch 7")
    two = tmp_path / "two"
    _blockwise(plate_run, tiny_packed, two, 64, "--workers", "2")
    _assert_same_answer(_load(two), want, "2 workers, default blocks, batch 64")
    assert sorted(_estimates(two)) == sorted(PLATES)  # once per plate, not per worker
    stored = sorted(str(p.relative_to(two / "bnstats"))[:-3] for p in two.glob("bnstats/*/*.pt"))
    assert stored == sorted(PLATES)
    record = torch.load(two / "bnstats" / f"{PLATES[0]}.pt", weights_only=True)
    assert record["source"]["batch"] == 8 and record["source"]["tta"] == "flips"  # train.batch_size
    whole = tmp_path / "whole"
    _blockwise(plate_run, tiny_packed, whole, 1, "--workers", "2", "--block-wells", "1000")
    _assert_same_answer(_load(whole), want, "2 workers, a plate per block, batch 1")
    # a worker killed mid-run: its blocks are retried elsewhere, the answer stays
    killed = tmp_path / "killed"
    args = [
        str(BLOCKWISE),
        *_args(plate_run, tiny_packed, killed, 7, "--workers", "2", "--block-wells", "2"),
    ]
    proc = _start(args, tmp_path / "driver.log", "sleep=0.3")
    try:
        _wait_for(lambda: _lines(killed) >= 2 and len(_worker_pids(killed)) == 2, 180, "workers")
        os.kill(_worker_pids(killed)[0], signal.SIGKILL)
        assert proc.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "1 restart(s)" in (tmp_path / "driver.log").read_text()
    _assert_same_answer(_load(killed), want, "a worker killed mid-run")


@pytest.mark.slow
def test_statistics_made_for_another_checkpoint_are_estimated_again(
    plate_run, tiny_packed, reference, tmp_path
):
    out = tmp_path / "pred"
    assert scan_main(_args(plate_run, tiny_packed, out, 16)) == 0
    stats = out / "bnstats" / f"{PLATES[0]}.pt"
    record = torch.load(stats, weights_only=True)
    record["source"]["sha256"] = "0" * 64  # as if another checkpoint had made them
    for buffers in record["buffers"].values():
        buffers.fill_(0.5)
    torch.save(record, stats)
    (out / "bnstats" / f"{PLATES[1]}.pt").write_bytes(b"not a torch file")  # damaged
    assert scan_main(_args(plate_run, tiny_packed, out, 16)) == 0
    _assert_same_answer(_load(out), _load(reference), "statistics estimated again")
    assert torch.load(stats, weights_only=True)["source"]["sha256"] != "0" * 64


def _checkpoint_copy(run: Path, tmp_path: Path, change) -> Path:
    """A run folder whose only checkpoint is ``run``'s latest with its weights changed."""
    state = load_checkpoint(run_checkpoint(run))
    change(state["model"])
    copy = tmp_path / "changed_run"
    (copy / "checkpoints").mkdir(parents=True)
    (copy / "run.json").write_text((run / "run.json").read_text())
    torch.save(state, copy / "checkpoints" / "checkpoint_00000020.pt")  # (no sha256 sidecar)
    return copy


@pytest.mark.slow
def test_non_finite_checkpoint_refused_before_workers_and_overflowing_blocks_fail(
    plate_run, tiny_packed, tmp_path
):
    def poison(model: dict) -> None:
        next(v for v in model.values() if v.is_floating_point()).view(-1)[0] = float("nan")

    nan_run = _checkpoint_copy(plate_run, tmp_path / "nan", poison)
    out = tmp_path / "nan_pred"
    r = _run([str(BLOCKWISE), *_args(nan_run, tiny_packed, out, 8)])
    assert r.returncode != 0
    assert re.search(r"checkpoint_00000020\.pt: 1 of \d+ weight tensors hold NaN", r.stderr), (
        r.stderr
    )
    assert "Traceback" not in r.stderr and not out.exists()  # before any worker, nothing written

    def overflow(model: dict) -> None:  # finite weights whose embeddings overflow float16
        last_bn = [k for k in model if k.endswith(".weight") and model[k].ndim == 1][-1]
        model[last_bn] *= 1e30

    big_run = _checkpoint_copy(plate_run, tmp_path / "big", overflow)
    out = tmp_path / "big_pred"
    args = [str(BLOCKWISE), *_args(big_run, tiny_packed, out, 8, "--workers", "1")]
    r = _run(args)
    assert r.returncode == 1, r.stdout + r.stderr
    blocks, completed, _, failed, _ = _counts(r.stdout)
    assert completed == 0 and failed == blocks
    assert "NonFiniteOutputError" in r.stdout and "checkpoint_00000020.pt" in r.stdout
    assert not any(done_count(p) for p in (out / "blockwise" / "tracking").glob("*"))
    r = _run(args)  # never marked done: a rerun tries the blocks again
    assert _counts(r.stdout)[3] == blocks


@pytest.mark.slow
def test_a_rerun_repairs_deleted_chunks_and_the_ensemble_names_holes(
    plate_run, tiny_packed, reference, tmp_path
):
    out = tmp_path / "pred"
    _blockwise(plate_run, tiny_packed, out, 8, "--workers", "1", "--block-wells", "2")
    want = _load(out)
    fmt = PackedDataset(tiny_packed).info.plate_format
    plate = out / "predictions.zarr" / PLATES[0]
    logits_chunk = next(plate.glob("logits/c/*/*/0/0"))
    embeddings_chunk = sorted(plate.glob("embeddings/c/*/*/0/0"))[-1]
    row, col = (int(x) for x in embeddings_chunk.parts[-4:-2])
    embeddings_chunk.unlink()
    # the ensemble names the hole in the embeddings: plate, well and site
    e = _run(
        [
            str(ENSEMBLE),
            str(out),
            "--data",
            str(tiny_packed),
            "--out",
            str(tmp_path / "ens"),
            "--experiments",
            PLATES[0],
        ]
    )
    assert e.returncode != 0
    well = fmt.well_name(row, col)
    assert f"plate {PLATES[0]} have no embeddings (first: well {well} site 1)" in e.stderr
    assert "Traceback" not in e.stderr
    logits_chunk.unlink()
    # a plain rerun finds both, predicts their blocks again, and equals the original
    r = _blockwise(plate_run, tiny_packed, out, 8, "--workers", "1", "--block-wells", "2")
    blocks, completed, skipped, failed, _ = _counts(r.stdout)
    assert completed == 2 and skipped == blocks - 2 and failed == 0
    assert "2 repaired" in r.stdout
    assert "done block(s) have missing or damaged chunks" in r.stdout + r.stderr
    _assert_same_answer(_load(out), want, "repaired")


@pytest.mark.slow
def test_compiled_network_pads_the_last_batch_and_equals_eager(plate_run, tiny_packed):
    packed = PackedDataset(tiny_packed)
    checkpoint = run_checkpoint(plate_run)
    table = packed.metadata
    rows = table.index[(table["experiment"] == "HEPG2-02") & (table["plate"] <= 2)]
    assert len(rows) % 8  # a last, short batch: padded to the compiled shape
    eager = Predictor(checkpoint, packed, "flips", batch_size=8)
    compiled = Predictor(checkpoint, packed, "flips", batch_size=8, compile=True)
    assert compiled.model is not compiled.net
    want, got = eager.predict_rows(rows), compiled.predict_rows(rows)  # two plates' statistics
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_slurm_gpu_workers_ask_for_cpus_to_match_their_readers():
    assert worker_cpus({"gpus": "1"}, None) == {"gpus": "1", "cpus": "10"}  # 8 readers + 2
    assert worker_cpus({"gpus": "1"}, 4)["cpus"] == "6"
    assert worker_cpus({"gpus": "1", "cpus": "3"}, 4)["cpus"] == "3"  # the user's wins
    assert "cpus" not in worker_cpus({"partition": "cpu"}, 4)  # a CPU worker: SLURM's default


def test_default_blocks_hold_at_least_one_batch(tiny_packed):
    table = PackedDataset(tiny_packed).metadata
    row_wells = BlockGrid.from_table(table, None, batch_sites=1).block
    assert row_wells[1] == 1  # a batch of one site: one plate row
    grid = BlockGrid.from_table(table, None, batch_sites=64)
    fullest = int(table.groupby(["experiment", "plate", "row", "col"]).size().max())
    rows = min(-(-64 // (grid.extent[2] * fullest)), grid.extent[1])
    assert grid.block == (1, rows, grid.extent[2]) and rows > 1  # whole rows, a batch's worth
    assert BlockGrid.from_table(table, 3, batch_sites=64).block == (1, 1, 3)  # asked: kept
