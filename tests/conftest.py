"""Shared fixtures: small synthetic screens generated and packed once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cellblock.store.pack import pack_dataset
from cellblock.synth import preset, write_dataset

pytest_plugins = ["tests.fixtures_s3", "tests.fixtures_slurm"]

ROOT = Path(__file__).resolve().parents[1]

# A tiny screen: 4 cell types x 2 experiments x 4 plates, 16 treatments (4 per plate)
# + 2 positive controls + 1 negative, 2 sites, 6 x 32 x 32. About 2 s to generate.
TINY = preset("demo").replace(
    n_treatments=16,
    n_positive_controls=2,
    experiments_per_cell_type=2,
    test_fraction=0.5,
    image_size=32,
)


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "raw"
    write_dataset(TINY, out, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_packed(tiny_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_packed") / "dataset"
    pack_dataset(tiny_raw, out, workers=2, progress=False)
    return out


def run_script(*args: str | Path, cwd: Path | None = None, timeout: float = 300):
    """Run a project script with this interpreter; return the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
