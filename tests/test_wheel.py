"""cellblock installed as a wheel, outside the checkout, with a setup folder copied elsewhere.

The library must not depend on where it sits (issue 18): a wheel is built from a copy of
the package's sources, installed (not editable) into a fresh venv in a temporary folder,
and ``train.py N`` of a copy of ``02_train/synthetic/tiny``, ``predict_blockwise.py``
and ``ensemble.py`` run with that venv's interpreter from a working directory outside
the checkout. Their results equal the same commands run from the checkout.

The fresh venv gets the heavy dependencies (torch, zarr, daisy...) without downloading
them: a ``.pth`` line puts this interpreter's site-packages on its path. A plain path in
a ``.pth`` file does not process that folder's own ``.pth`` files, so the checkout's
editable install of cellblock there stays inert, and the venv's own site-packages (the
wheel) comes first; the test checks which ``cellblock`` the venv imports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from tests.conftest import ROOT

SETUP = ROOT / "02_train" / "synthetic" / "tiny"
BLOCKWISE = ROOT / "03_predict" / "predict_blockwise.py"
ENSEMBLE = ROOT / "04_ensemble" / "ensemble.py"
# tiny_packed: 32 px, 19 classes; HEPG2-01 held out for validation
TRAIN = ["net.input_size=32", "net.num_classes=19", "data.val_experiments=[HEPG2-01]",
         "train.batch_size=8", "train.workers=0", "train.log_every=2", "train.checkpoint_every=6",
         "train.validate_every=6", "train.warmup_iters=2", "train.schedule_iters=6",
         "train.snapshot_every=0"]  # fmt: skip
ITERATIONS = "6"


def _env(outside: bool = True) -> dict[str, str]:
    """This environment; ``outside``: without what points Python at the checkout."""
    drop = {"CELLBLOCK_PROJECT", "CELLBLOCK_SIF"} | ({"PYTHONPATH"} if outside else set())
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "PYTHONUNBUFFERED": "1"}


def _run(python: str | Path, *args: str | Path, cwd: Path, env: dict[str, str]) -> str:
    r = subprocess.run([str(python), *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, env=env, timeout=600)  # fmt: skip
    assert r.returncode == 0, f"{args[:2]}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _wheel_venv(work: Path) -> Path:
    """A fresh venv under ``work`` with cellblock installed from a wheel; its python."""
    src = work / "src"  # a copy: building writes build/ and egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "cellblock", src / "cellblock",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    wheels = work / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", wheels, src, cwd=work, env=_env())  # fmt: skip
    (wheel,) = wheels.glob("cellblock-*.whl")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work, env=_env())
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=work, env=_env()).strip())  # fmt: skip
    (site / "heavy_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
         "-q", wheel, cwd=work, env=_env())  # fmt: skip
    return python


def _logits(pred: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(pred / "predictions.zarr", mode="r")
    return {f"{e}/{p}/{a}": root[e][p][a][:] for e in root.group_keys()
            for p in root[e].group_keys() for a in ("logits", "embeddings")}  # fmt: skip


def _numbers(value: object, at: str = "") -> dict[str, float]:
    """Every number in a JSON value, by its path (strings: paths and names, differ)."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return {at: float(value)} if isinstance(value, bool | int | float) else {}
    return {k: v for key, item in items for k, v in _numbers(item, f"{at}/{key}").items()}


def _pipeline(python: str | Path, setup: Path, cwd: Path, data: Path, out: Path | None,
              env: dict[str, str]) -> tuple[Path, Path, Path]:  # fmt: skip
    """train.py, predict_blockwise.py, ensemble.py; the run, PRED and ensemble folders."""
    sets = [a for s in TRAIN for a in ("--set", s)]
    where = ["--out", out / "run"] if out else []  # None: the run folder's default
    stdout = _run(python, setup / "train.py", ITERATIONS, "--data", data, *where, *sets,
                  cwd=cwd, env=env)  # fmt: skip
    run = Path(stdout.strip().splitlines()[-1].split(":")[0])
    base = out or cwd
    pred, ens = base / "pred", base / "ensemble"
    _run(python, BLOCKWISE, "--run", run, "--data", data, "--out", pred, "--split", "test",
         "--tta", "flips", "--batch-size", "8", "--workers", "1", cwd=cwd, env=env)  # fmt: skip
    _run(python, ENSEMBLE, pred, "--data", data, "--out", ens, cwd=cwd, env=env)
    return run, pred, ens


@pytest.mark.slow
def test_wheel_outside_the_checkout_gives_the_checkouts_results(tiny_packed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    python = _wheel_venv(work)
    where = _run(python, "-c", "import cellblock; print(cellblock.__file__)", cwd=work, env=_env())
    assert Path(where.strip()).is_relative_to(work / "venv"), where  # the wheel, not the checkout
    setup = work / "setups" / "tiny"
    shutil.copytree(SETUP, setup, ignore=shutil.ignore_patterns("__pycache__"))

    # from the copy: no --out, so the run goes to runs/<setup folder> in the project,
    # here the working directory (no checkout above it, no $CELLBLOCK_PROJECT)
    run, pred, ens = _pipeline(python, setup, work, tiny_packed, None, _env())
    assert run == work / "runs" / "tiny"
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["setup"] == "tiny" and recorded["setup_dir"] == str(setup)
    assert "(" not in recorded["code_version"]  # a wheel has no git commit to name
    logs = "".join(p.read_text() for p in (pred / "logs").glob("worker_*.log"))
    assert str(setup) in logs  # the worker got the copied setup folder (--setup)

    # from the checkout, as before
    ref_run, ref_pred, ref_ens = _pipeline(sys.executable, SETUP, ROOT, tiny_packed,
                                           tmp_path / "checkout", _env(outside=False))  # fmt: skip
    assert json.loads((ref_run / "run.json").read_text())["setup"] == "synthetic/tiny"

    curve = ["iteration", "loss", "lr", "epoch"]  # not img/s
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "log.csv")[curve],
        pd.read_csv(ref_run / "log.csv")[curve],
        check_exact=True,
    )
    pd.testing.assert_frame_equal(pd.read_csv(run / "val.csv"), pd.read_csv(ref_run / "val.csv"),
                                  check_exact=True)  # fmt: skip
    got, want = _logits(pred), _logits(ref_pred)
    assert got.keys() == want.keys() and got
    for key, value in want.items():
        assert np.array_equal(got[key], value, equal_nan=True), key
    assert (ens / "submission.csv").read_text() == (ref_ens / "submission.csv").read_text()
    report, ref_report = (json.loads((d / "report.json").read_text()) for d in (ens, ref_ens))
    numbers = json.dumps(_numbers(report), sort_keys=True)  # NaN reads as NaN: equal
    assert numbers == json.dumps(_numbers(ref_report), sort_keys=True) and len(numbers) > 2
