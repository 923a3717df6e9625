"""The project is an argument (``cellblock.paths.Project``), and a run names its setup.

Pure logic, no training: how the project is located, setup names and default run folders
in and outside ``02_train``, and how prediction finds a run's setup from ``run.json``
(the path of the run folder plays no part). The whole path, installed as a wheel with a
setup copied elsewhere, is ``test_wheel.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellblock.blockwise.setups import find_setup
from cellblock.errors import UserError
from cellblock.paths import PROJECT_ENV, Project, enclosing
from cellblock.remote.catalog import load_catalog
from cellblock.training.cli import default_run_dir
from tests.conftest import ROOT

TINY = ROOT / "02_train" / "synthetic" / "tiny"


def _setup(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("net: {}\n")
    return folder


def test_project_is_located_in_order(tmp_path, monkeypatch):
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    other, bare = _setup(tmp_path / "other" / "02_train" / "x" / "y").parents[2], tmp_path / "bare"
    bare.mkdir()
    monkeypatch.chdir(bare)
    assert Project.locate(start=TINY).root == ROOT  # the checkout holding the setup
    assert Project.locate(start=ROOT / "03_predict" / "predict_blockwise.py").root == ROOT
    assert Project.locate(start=tmp_path / "nowhere").root == bare  # else the working directory
    monkeypatch.chdir(other / "02_train" / "x")
    assert Project.locate(start=tmp_path).root == other  # ... or the checkout holding it
    monkeypatch.setenv(PROJECT_ENV, str(bare))
    assert Project.locate(start=TINY).root == bare  # $CELLBLOCK_PROJECT before both
    assert Project.locate(tmp_path, start=TINY).root == tmp_path  # --project before all
    assert enclosing(ROOT / "02_train") == ROOT and enclosing(tmp_path / "bare") is None


def test_setup_names_and_default_run_folders(tmp_path):
    project = Project(ROOT)
    assert project.setup_name(TINY) == "synthetic/tiny"
    assert default_run_dir(TINY, [1, 2], 3, project) == ROOT / "runs/synthetic/tiny/ch1-2/fold_3"
    copied = _setup(tmp_path / "scratch" / "tiny")
    assert project.setup_name(copied) == "tiny"  # outside 02_train: the folder's name
    assert default_run_dir(copied, None, None, Project(tmp_path)) == tmp_path / "runs" / "tiny"
    assert project.catalog == ROOT / "01_data" / "datasets.json"
    assert "demo" in load_catalog(project.catalog)


def test_prediction_finds_the_setup_from_run_json_not_the_path(tmp_path):
    project = Project(ROOT)
    copied = _setup(tmp_path / "scratch" / "tiny")
    # a run whose path names synthetic/tiny but whose run.json records another folder
    run = tmp_path / "runs" / "synthetic" / "tiny"
    run.mkdir(parents=True)
    record = {"dataset": "d", "setup": "tiny", "setup_dir": str(copied)}
    (run / "run.json").write_text(json.dumps(record))
    assert find_setup(run, project=project) == ("tiny", copied.resolve())
    # the recorded folder is gone (a run copied from elsewhere): the name, in the project
    (run / "run.json").write_text(json.dumps({**record, "setup": "synthetic/tiny",
                                              "setup_dir": "/gone/tiny"}))  # fmt: skip
    assert find_setup(run, project=project) == ("synthetic/tiny", TINY)
    # an older run.json: the name alone
    (run / "run.json").write_text(json.dumps({"dataset": "d", "setup": "synthetic/tiny"}))
    assert find_setup(run, project=project) == ("synthetic/tiny", TINY)
    # a grid run of before (no setup in run.json): the setup its grid.json records
    grid_run = tmp_path / "grid" / "ch1-2" / "fold_0"
    grid_run.mkdir(parents=True)
    (grid_run / "run.json").write_text(json.dumps({"dataset": "d", "setup": None}))
    grid = {"setup": str(TINY), "runs": [{"run_dir": "ch1-2/fold_0"}]}
    (tmp_path / "grid" / "grid.json").write_text(json.dumps(grid))
    assert find_setup(grid_run, project=project) == ("synthetic/tiny", TINY)
    # nothing recorded: unknown, whatever the run folder's path says
    (run / "run.json").write_text(json.dumps({"dataset": "d", "setup": None}))
    assert find_setup(run, project=project) == ("tiny", None)
    (run / "run.json").unlink()
    assert find_setup(run, project=project) == ("tiny", None)
    # --setup: a folder, or a name under the project's 02_train
    assert find_setup(run, copied, project) == ("tiny", copied.resolve())
    assert find_setup(run, "synthetic/tiny", project) == ("synthetic/tiny", TINY)
    with pytest.raises(UserError, match="--setup nothing/here: not a setup folder"):
        find_setup(run, "nothing/here", project)
