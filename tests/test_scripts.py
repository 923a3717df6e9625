"""Every stage script answers --help, and the demo runs end to end."""

import os
import subprocess

import pytest

from cellblock.devservices import s3
from tests.conftest import ROOT, run_script

SCRIPTS = sorted(p for p in ROOT.glob("0[1-4]_*/**/*.py")) + sorted(
    (ROOT / "scripts").glob("**/*.py")
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_help(script, tmp_path):
    result = run_script(script, "--help", cwd=tmp_path)  # runs from any working directory
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    env = {
        **os.environ,
        "DEMO_DIR": str(tmp_path / "demo"),
        "SYNTH_ARGS": "--image-size 32 --experiments-per-cell-type 2 --seed 5",
        "TRAIN_ITERATIONS": "20",
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    result = subprocess.run([str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True,
                            text=True, timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified" in result.stdout
    assert (
        "published" in result.stdout and "fetched s3://cellblock-public/demo/raw/" in result.stdout
    )
    assert "no validation (data.val_experiments is empty)" in result.stdout  # all experiments
    assert "treatment wells): argmax" in result.stdout  # the ensemble scores treatments
    assert (tmp_path / "demo" / "runs" / "synthetic" / "tiny" / "curves.png").is_file()
    assert s3.status(tmp_path / "demo" / "s3") is None, "the demo left its S3 store running"
    summary = result.stdout[result.stdout.index("summary") :]
    assert "plates       32 (96-well)" in summary
    assert (tmp_path / "demo" / "dataset" / "images.zarr" / "zarr.json").is_file()
    demo = tmp_path / "demo"
    assert (demo / "predictions/synthetic/tiny/predictions.zarr/zarr.json").is_file()
    for name in ("plate_montage.png", "plate.png"):
        assert (demo / name).read_bytes()[:4] == b"\x89PNG", name
    assert (demo / "ensemble" / "submission.csv").is_file()
    assert (demo / "ensemble" / "report.json").is_file()
    last = result.stdout.strip().splitlines()[-1]
    assert "assigned" in last, last
