"""The benchmark scripts run end to end (tiny sizes; the numbers are not checked here)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, run_script

BENCH = ROOT / "scripts" / "bench"


def test_train_bench_pairs_loader_and_memory_rounds(tiny_packed, tmp_path):
    sets = ["net.input_size=32", "data.val_experiments=[HEPG2-01]", "train.batch_size=4",
            "train.workers=1"]  # fmt: skip
    overrides = [a for s in sets for a in ("--set", s)]
    r = run_script(BENCH / "train.py", "--data", tiny_packed, "--steps", "2", "--rounds", "3",
                   "--threads", "1", "--results", tmp_path, *overrides)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = json.loads((tmp_path / "train.json").read_text())["loader"]
    assert row["threads"] == 1 and row["workers"] == 1 and row["batch_size"] == 4
    assert all(len(row["rounds"][k]) == 3 for k in ("loader", "memory", "loader_wait"))
    low, high = row["ratio_quartiles"]
    assert 0 < low <= row["ratio"] <= high
    assert 0 <= row["loader_wait_s"] < row["loader_step_s"]
    assert (
        "| 02_train/synthetic/tiny (test_resnet) | 6 x 32 x 32 | 4 | 1 | 1 |"
        in (tmp_path / "train.md").read_text()
    )


def test_write_bench_compares_zarr_and_chunk_writer(tmp_path):
    r = run_script(BENCH / "write.py", "--wells", "4", "--rounds", "1", "--results", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads((tmp_path / "write.json").read_text())
    assert set(result["ms_per_well"]) == {"zarr", "writer"}
    assert all(v > 0 for v in result["ms_per_well"].values())
    assert "ChunkWriter (write_wells)" in (tmp_path / "write.md").read_text()


@pytest.mark.slow
def test_science_sweep_scores_recipes_beside_the_probes(tmp_path):
    r = run_script(BENCH / "science.py", "--effects", "2.5", "--batches", "1", "--recipes",
                   "default", "--iterations", "4", "--image-size", "32", "--experiments", "2",
                   "--results", tmp_path, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = json.loads((tmp_path / "science.json").read_text())["rows"]
    assert set(row["models"]) == {"default", "image probe", "oracle probe"}
    for model in row["models"].values():
        assert set(model["accuracy"]) == {"argmax", "masked", "assigned"}
        assert all(0 <= v <= 1 for v in model["accuracy"].values())
    assert row["models"]["oracle probe"]["accuracy"]["assigned"] > 0.5  # the ceiling is real
    assert row["models"]["default"]["train_seconds"] > 0
    assert (tmp_path / "science.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 2.5 / 1.0 |" in (tmp_path / "science.md").read_text()
