"""The shipped rxrx1 setups: mknet at small input sizes, a few CPU iterations each, and the
stage I (controls) -> II (all siRNAs) -> III (pseudo labels) path with --init-from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from cellblock.training.checkpoint import latest_checkpoint, load_checkpoint
from cellblock.training.cli import mknet_main, train_main
from cellblock.training.setupconfig import load_setup_config
from tests.conftest import ROOT, run_script

RXRX1 = ROOT / "02_train" / "rxrx1"
SETUPS = ["densenet121", "seresnext50", "controls_pretrain", "densenet121_pseudo"]
# the tiny dataset: 32 px, 19 classes (16 siRNAs + 3 controls), HEPG2-01 held out
SMALL = [
    "net.input_size=32",
    "data.val_experiments=[HEPG2-01]",
    "train.batch_size=4",
    "train.workers=0",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.validate_every=2",
    "train.snapshot_every=0",
    "train.warmup_iters=1",
]


def small(n: int, data: Path, out: Path, *extra: str) -> list[str]:
    return [str(n), "--data", str(data), "--out", str(out),
            *[a for s in SMALL for a in ("--set", s)], *extra]  # fmt: skip


def test_every_setup_has_the_same_thin_scripts():
    for setup in SETUPS:
        folder = RXRX1 / setup
        for name in ("mknet.py", "train.py"):
            assert (folder / name).read_text() == (
                ROOT / "02_train/synthetic/tiny" / name
            ).read_text()
        load_setup_config(folder)  # validates
    for folder in (*(RXRX1 / s for s in SETUPS), ROOT / "02_train/synthetic/tiny"):
        assert not (folder / "predict.py").exists()  # the worker is cellblock's own module


@pytest.mark.parametrize("setup", SETUPS)
def test_mknet_at_small_size(setup, tmp_path, capsys):
    folder = RXRX1 / setup
    assert mknet_main(folder, ["--out", str(tmp_path), "--set", "net.input_size=64"]) == 0
    printed = capsys.readouterr().out
    params = int(re.search(r"parameters: ([\d,]+)", printed).group(1).replace(",", ""))
    described = json.loads((tmp_path / "net_config.json").read_text())
    resolved = load_setup_config(folder)
    assert described["num_classes"] == resolved["net"]["num_classes"]
    assert described["in_channels"] == 6 and described["input_size"] == 64
    assert params > 5_000_000  # real backbones, not toys
    assert "1x6x64x64" in printed


@pytest.mark.slow
def test_seresnext50_trains_a_few_iterations(tiny_packed, tmp_path):
    out = tmp_path / "se"
    assert train_main(RXRX1 / "seresnext50", small(2, tiny_packed, out)) == 0
    state = load_checkpoint(latest_checkpoint(out))
    assert state["iteration"] == 2 and state["config"]["net"]["head"] == "cosface"
    assert pd.read_csv(out / "val.csv")["n"].iloc[-1] > 0


@pytest.mark.slow
def test_stage_one_two_three(tiny_packed, tmp_path):
    stage1, stage2, stage3 = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    assert train_main(RXRX1 / "controls_pretrain", small(2, tiny_packed, stage1)) == 0
    s1 = load_checkpoint(latest_checkpoint(stage1))
    assert s1["model"]["head.weight"].shape[0] == 31

    assert train_main(RXRX1 / "densenet121", small(2, tiny_packed, stage2, "--init-from",
                                                    str(stage1))) == 0  # fmt: skip
    s2 = load_checkpoint(latest_checkpoint(stage2))
    assert s2["model"]["head.fc.weight"].shape[0] == 1139  # CE + ArcFace: two class matrices
    # stage II started from stage I's backbone: after 2 small steps it is still close
    key = "backbone.features.conv0.weight"
    fresh = torch.nn.init.kaiming_normal_(torch.empty_like(s1["model"][key]))
    assert (s2["model"][key] - s1["model"][key]).abs().mean() < 0.1 * fresh.abs().mean()

    table = pd.read_parquet(tiny_packed / "metadata.parquet")
    test_wells = table[(table["split"] == "test") & (table["well_type"] == "treatment")]
    wells = test_wells.drop_duplicates("id_code")
    confidence = [0.9 if i % 2 else 0.2 for i in range(len(wells))]  # half kept (>= 0.5)
    pseudo = pd.DataFrame({"id_code": wells["id_code"], "sirna": wells["sirna"].astype(int),
                           "confidence": confidence})  # fmt: skip
    csv = tmp_path / "pseudo.csv"
    pseudo.to_csv(csv, index=False)
    r = run_script(RXRX1 / "densenet121_pseudo" / "train.py",
                   *small(2, tiny_packed, stage3, "--init-from", str(stage2),
                          "--set", f"data.pseudo_labels={csv}"), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    s3 = load_checkpoint(latest_checkpoint(stage3))
    assert s3["config"]["data"]["pseudo_labels"] == str(csv)
    assert "pseudo" in r.stderr.lower()  # the loader says how many pseudo labels it kept
    # a missing pseudo-label file is a clear error naming it
    r = run_script(RXRX1 / "densenet121_pseudo" / "train.py",
                   *small(2, tiny_packed, tmp_path / "s3b", "--set",
                          "data.pseudo_labels=missing.csv"), cwd=tmp_path)  # fmt: skip
    assert r.returncode != 0 and str(tmp_path / "missing.csv") in r.stderr
    assert "Traceback" not in r.stderr
