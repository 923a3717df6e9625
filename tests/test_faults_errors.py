"""Errors in one line at the right place (issue 29, part 5), as a user meets them.

A resume whose optimizer, schedule or head differs from its checkpoint's is refused
naming both values (not a ``KeyError`` from deep inside torch); a bad ``--set`` value is
named as that ``--set``, not as config.yaml; ``1e6`` and ``3e-4`` are numbers in
config.yaml and on the command line. The scripts run as real processes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cellblock.cli import parse_overrides
from cellblock.errors import ConfigError, UserError
from cellblock.training.cli import train_main
from cellblock.training.setupconfig import load_setup_config
from tests.conftest import run_script
from tests.test_training import SETUP, args

TRAIN = SETUP / "train.py"


@pytest.fixture(scope="module")
def run3(tiny_packed, tmp_path_factory) -> Path:
    """A 3-iteration AdamW/cosine/softmax run with its checkpoint 3."""
    out = tmp_path_factory.mktemp("errors_run3") / "run"
    assert train_main(SETUP, args(3, tiny_packed, out)) == 0
    return out


def _error_line(stderr: str) -> str:
    """The one line a failed script ends with; no traceback before it."""
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


def test_resume_with_another_optimizer_is_refused_naming_both(run3, tiny_packed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run3, run)
    r = run_script(TRAIN, *args(6, tiny_packed, run, "--set", "train.optimizer=sgd"))
    assert r.returncode == 1
    checkpoint = run / "checkpoints" / "checkpoint_00000003.pt"
    assert _error_line(r.stderr) == (
        f"error: {checkpoint}: checkpoint made with train.optimizer=adamw, this run has "
        "train.optimizer=sgd; resume with --set train.optimizer=adamw, or start another run "
        "folder (--out)"
    )
    assert "KeyError" not in r.stderr
    # nothing was written: the run resumes as it was
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == [checkpoint.name]
    for name, value, before in [
        ("train.schedule", "onecycle", "cosine"),
        ("net.head", "cosface", "softmax"),
    ]:
        pattern = rf"checkpoint made with {name}={before}, this run has {name}={value};"
        with pytest.raises(UserError, match=pattern):
            train_main(SETUP, args(6, tiny_packed, run, "--set", f"{name}={value}"))
    assert train_main(SETUP, args(4, tiny_packed, run)) == 0  # the same config resumes


def test_a_bad_set_value_is_named_as_the_set_not_the_file(tiny_packed, tmp_path):
    r = run_script(TRAIN, *args(2, tiny_packed, tmp_path / "run", "--set", "train.lr=1e6"))
    assert r.returncode == 1
    assert _error_line(r.stderr) == (
        "error: --set train.lr: train: lr must be a number in [0, 10], got 1000000.0"
    )
    assert "config.yaml" not in r.stderr and not (tmp_path / "run").exists()
    r = run_script(TRAIN, *args(2, tiny_packed, tmp_path / "run", "--fold", "7"))
    assert r.returncode == 1 and _error_line(r.stderr).startswith("error: --fold: data: ")
    # a bad value in the file is still the file's
    setup = tmp_path / "setup"
    shutil.copytree(SETUP, setup)
    text = (setup / "config.yaml").read_text()
    (setup / "config.yaml").write_text(text.replace("lr: 0.003 ", "lr: 1e6 ", 1))
    with pytest.raises(ConfigError, match=rf"^{setup / 'config.yaml'}: train: lr must be a "):
        load_setup_config(setup, parse_overrides(["train.batch_size=4"]))
    # ... unless the command line overrides it
    assert load_setup_config(setup, parse_overrides(["train.lr=0.1"]))["train"]["lr"] == 0.1


def test_exponent_numbers_are_numbers_in_the_file_and_on_the_command_line(tiny_packed, tmp_path):
    setup = tmp_path / "setup"
    shutil.copytree(SETUP, setup)
    text = (setup / "config.yaml").read_text()
    text = text.replace("lr: 0.003 ", "lr: 3e-4 ", 1).replace(
        "weight_decay: 0.2 ", "weight_decay: 1E-2 "
    )
    (setup / "config.yaml").write_text(text)
    train = load_setup_config(setup)["train"]
    assert train["lr"] == 3e-4 and train["weight_decay"] == 0.01
    assert parse_overrides(["a=1e6", "b=-2.5e-3", "c=1e", "d=12", "e='1e6'"]) == {
        "a": 1e6,
        "b": -2.5e-3,
        "c": "1e",
        "d": 12,
        "e": "1e6",
    }
    out = tmp_path / "run"
    sets = ["--set", "train.lr=2e-3", "--set", "train.weight_decay=1e-2"]
    r = run_script(TRAIN, *args(1, tiny_packed, out, *sets))
    assert r.returncode == 0, r.stderr[-3000:]
    resolved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert resolved["lr"] == 2e-3 and resolved["weight_decay"] == 0.01
