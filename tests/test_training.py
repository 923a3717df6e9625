"""02_train/synthetic/tiny and cellblock.training on CPU: outputs, exact resume, errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cellblock.errors import ConfigError, UserError
from cellblock.nets.models import build_net
from cellblock.nets.netconfig import NetConfig
from cellblock.training.checkpoint import latest_checkpoint, load_checkpoint
from cellblock.training.cli import default_run_dir, mknet_main, train_main
from cellblock.training.resume import init_weights
from cellblock.training.setupconfig import load_setup_config
from tests.conftest import ROOT, run_script

SETUP = ROOT / "02_train" / "synthetic" / "tiny"
# tiny_packed: 32 px, 19 classes; 3 training experiments, HEPG2-01 held out
FAST = [
    "net.input_size=32",
    "data.val_experiments=[HEPG2-01]",
    "train.batch_size=8",
    "train.workers=0",
    "train.log_every=1",
    "train.checkpoint_every=3",
    "train.validate_every=3",
    "train.warmup_iters=2",
    "train.schedule_iters=12",
]


def args(n: int, data: Path, out: Path, *extra: str) -> list[str]:
    sets = [a for s in FAST for a in ("--set", s)]
    return [str(n), "--data", str(data), "--out", str(out), *sets, *extra]


@pytest.fixture(scope="module")
def run12(tiny_packed, tmp_path_factory) -> Path:
    """An uninterrupted 12-iteration run (the reference curve)."""
    out = tmp_path_factory.mktemp("run12") / "run"
    assert train_main(SETUP, args(12, tiny_packed, out)) == 0
    return out


def test_train_script_writes_run(tiny_packed, tmp_path):
    out = tmp_path / "run"
    r = run_script(SETUP / "train.py", *args(4, tiny_packed, out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "validation accuracy" in r.stdout
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [f"checkpoint_0000000{i}.pt{ext}" for i in (3, 4) for ext in ("", ".sha256")]
    log = pd.read_csv(out / "log.csv")
    assert list(log["iteration"]) == [1, 2, 3, 4]
    assert {"loss", "lr", "img_per_s"} <= set(log.columns) and (log["img_per_s"] > 0).all()
    val = pd.read_csv(out / "val.csv")
    assert list(val["iteration"]) == [3, 4] and val["n"].iloc[0] > 0
    assert {"loss", "accuracy", "top3", "acc_HEPG2"} <= set(val.columns)
    for name in ("curves.png", "config.yaml", "run.json", "net_config.json"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    state = torch.load(out / "checkpoints/checkpoint_00000004.pt", weights_only=True)
    assert state["iteration"] == 4 and state["config"]["train"]["batch_size"] == 8
    assert {"model", "optimizer", "scheduler", "augment", "rng", "code_version"} <= set(state)
    # rerun to 4 (data from run.json): nothing to do, exit 0
    r = run_script(SETUP / "train.py", "4", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "already at iteration 4" in r.stdout


def test_resume_reproduces_the_uninterrupted_curve(run12, tiny_packed, tmp_path):
    out = tmp_path / "run"
    train_main(SETUP, args(6, tiny_packed, out))
    train_main(SETUP, args(12, tiny_packed, out))
    a, b = pd.read_csv(run12 / "log.csv"), pd.read_csv(out / "log.csv")
    assert list(a["iteration"]) == list(b["iteration"]) == list(range(1, 13))
    assert list(a["loss"]) == list(b["loss"]) and list(a["lr"]) == list(b["lr"])
    va, vb = pd.read_csv(run12 / "val.csv"), pd.read_csv(out / "val.csv")
    assert va.set_index("iteration").loc[12, "loss"] == vb.set_index("iteration").loc[12, "loss"]


def test_killed_run_resumes_exactly(run12, tiny_packed, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(SETUP / "train.py"), *args(12, tiny_packed, out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints/checkpoint_00000006.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint 6"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert train_main(SETUP, args(12, tiny_packed, out)) == 0
    a, b = pd.read_csv(run12 / "log.csv"), pd.read_csv(out / "log.csv")
    assert list(a["iteration"]) == list(b["iteration"])
    assert list(a["loss"]) == list(b["loss"])


def test_misspelt_or_unknown_config_is_an_error(tmp_path, tiny_packed):
    with pytest.raises(
        ConfigError, match=r"^--set train\.batchsize: train: unknown key 'batchsize'"
    ):
        train_main(SETUP, args(2, tiny_packed, tmp_path / "r", "--set", "train.batchsize=4"))
    setup = tmp_path / "setup"
    setup.mkdir()
    text = (SETUP / "config.yaml").read_text().replace("embedding_dim:", "embeding_dim:")
    (setup / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"setup/config\.yaml: net: unknown key 'embeding_dim'"):
        load_setup_config(setup)
    (setup / "config.yaml").write_text("nett: {}\n")
    with pytest.raises(ConfigError, match="unknown section 'nett'"):
        load_setup_config(setup)
    with pytest.raises(ConfigError, match=r"section\.key"):
        load_setup_config(SETUP, {"lr": 0.1})


def test_incompatible_checkpoints(run12, tiny_packed):
    # unreadable checkpoints are set aside on resume: tests/test_faults_training.py
    with pytest.raises(UserError, match="made for 69 classes, this run has 30"):
        train_main(SETUP, args(20, tiny_packed, run12, "--set", "net.num_classes=30"))
    with pytest.raises(UserError, match="made for 6 channels, this run has 3"):
        train_main(SETUP, args(20, tiny_packed, run12, "--channels", "1,2,3"))
    r = run_script(SETUP / "train.py", *args(20, tiny_packed, run12, "--channels", "1,2,3"))
    assert r.returncode == 1 and "checkpoint_00000012.pt" in r.stderr
    assert "Traceback" not in r.stderr


def test_init_from_loads_weights_only(run12, tiny_packed, tmp_path):
    out = tmp_path / "stage2"
    extra = ["--init-from", str(run12), "--set", "net.num_classes=25"]
    assert train_main(SETUP, args(3, tiny_packed, out, *extra)) == 0
    state = load_checkpoint(latest_checkpoint(out))
    assert state["iteration"] == 3 and state["config"]["net"]["num_classes"] == 25
    # weights: everything but the (resized) head comes from the source run
    resolved = load_setup_config(SETUP, {"net.input_size": 32})
    net = build_net(NetConfig.from_dict(resolved["net"]))
    init_weights(net, run12, resolved)
    source = load_checkpoint(latest_checkpoint(run12))["model"]
    key = next(k for k in source if k.startswith("backbone.") and k.endswith("weight"))
    assert torch.equal(net.state_dict()[key], source[key])
    with pytest.raises(UserError, match="in_channels"):
        train_main(SETUP, args(3, tiny_packed, tmp_path / "x", "--channels", "1,2,3",
                                "--init-from", str(run12)))  # fmt: skip
    with pytest.raises(UserError, match="no checkpoints in this run folder"):
        train_main(SETUP, args(3, tiny_packed, tmp_path / "y", "--init-from", str(tmp_path)))


def test_mknet_and_default_run_dir(tmp_path, capsys):
    assert mknet_main(SETUP, ["--out", str(tmp_path), "--channels", "1,2,3,4,5"]) == 0
    printed = capsys.readouterr().out
    assert "parameters:" in printed and "1x5x64x64" in printed
    assert '"in_channels": 5' in (tmp_path / "net_config.json").read_text()
    run = default_run_dir(SETUP, [1, 2, 3, 4, 5], 2)
    assert run == ROOT / "runs" / "synthetic" / "tiny" / "ch1-2-3-4-5" / "fold_2"
    r = run_script(SETUP / "mknet.py", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "--channels" in r.stdout


def test_snapshots_and_tensorboard(tiny_packed, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cellblock.training.snapshots import read_snapshot

    out = tmp_path / "run"
    assert train_main(SETUP, args(4, tiny_packed, out, "--set", "train.snapshot_every=2")) == 0
    names = sorted(p.name for p in (out / "snapshots").iterdir())
    assert names == ["batch_2.hdf", "batch_4.hdf"]
    snap = read_snapshot(out / "snapshots" / "batch_4.hdf")
    assert snap.iteration == 4 and snap.inputs.shape == (8, 6, 32, 32)
    assert snap.logits.shape == (8, 69) and snap.classes == tuple(range(69))
    assert snap.inputs.std() > 0.1  # normalized images, not zeros
    table = pd.read_parquet(tiny_packed / "metadata.parquet").set_index(["id_code", "site"])
    truth = table.loc[list(zip(snap.id_code, snap.site, strict=True)), "sirna"].to_numpy()
    assert (truth == snap.labels).all()  # the labels are those of the wells named
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    log = pd.read_csv(out / "log.csv")
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(list(log["loss"]))
    assert [e.step for e in events.Scalars("val/accuracy")] == [3, 4]


def test_stop_event_checkpoints_and_returns(tiny_packed, tmp_path):
    import threading

    from cellblock.cli import parse_overrides
    from cellblock.training.loop import train

    # log rows every 5 iterations: the stop (after iteration 1) falls inside a row's window
    config = load_setup_config(SETUP, parse_overrides([*FAST, "train.log_every=5"]))
    reference, out = tmp_path / "reference", tmp_path / "run"
    train(config, tiny_packed, reference, 12)
    stop = threading.Event()
    stop.set()
    result = train(config, tiny_packed, out, 12, stop=stop)
    assert result == {"iteration": 1, "trained": 1, "val": {}, "stopped": True}
    assert latest_checkpoint(out).name == "checkpoint_00000001.pt"
    assert train(config, tiny_packed, out, 12)["stopped"] is False
    a, b = pd.read_csv(reference / "log.csv"), pd.read_csv(out / "log.csv")
    assert list(a["iteration"]) == list(b["iteration"]) == [5, 10, 12]
    assert list(a["loss"]) == list(b["loss"])


@pytest.mark.parametrize("channels_last", [False, True])
def test_validate_scores_well_items_in_either_memory_format(channels_last):
    # well items (B, S, C, H, W) are flattened to sites before the memory format change
    from cellblock.data.normalize import BatchNormalizer
    from cellblock.training.evaluate import validate

    torch.manual_seed(0)
    net = build_net(NetConfig(backbone="test_resnet", num_classes=3, embedding_dim=8,
                              input_size=16))  # fmt: skip
    images = torch.randint(0, 255, (4, 2, 6, 16, 16), dtype=torch.uint8)
    labels, index = np.array([0, 1, 2, 1]), np.arange(4)
    per_image = BatchNormalizer(None, None, None, min_std=1.0)
    kinds = {0: "HEPG2", 1: "HEPG2", 2: "U2OS", 3: "U2OS"}
    metrics = validate(net, [(images, labels, index)], normalize=per_image, cell_types=kinds,
                       device=torch.device("cpu"), channels_last=channels_last)  # fmt: skip
    reference = validate(net, [(images, labels, index)], normalize=per_image, cell_types=kinds,
                         device=torch.device("cpu"))  # fmt: skip
    assert metrics["n"] == 4 and set(metrics) >= {"acc_HEPG2", "acc_U2OS", "top3"}
    assert metrics["accuracy"] == reference["accuracy"]
    assert metrics["loss"] == pytest.approx(reference["loss"], rel=1e-5)


class _Fixed(torch.nn.Module):
    """A 'network' whose logits are fixed per item: the item's hits are known."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        from types import SimpleNamespace

        index = images[:, 0, 0, 0].long()  # each image carries its item number
        return SimpleNamespace(logits=self.logits[index] + 0 * self.weight)

    def loss(self, out, labels):
        return torch.nn.functional.cross_entropy(out.logits, labels)


def test_validation_reports_treatment_wells_apart_from_controls():
    from cellblock.training.evaluate import validate

    # 6 items: 4 treatments (hits: right, wrong-but-top-3, wrong, right), 2 controls (right)
    labels = np.array([0, 1, 4, 3, 4, 4])
    predicted = [0, 0, 0, 3, 4, 4]
    logits = (-10.0 - 0.1 * torch.arange(5.0)).repeat(6, 1)  # after the top: 0, 1, 2, ...
    for item, top in enumerate(predicted):
        logits[item, top] = 10.0
    images = torch.arange(6, dtype=torch.uint8)[:, None, None, None].expand(6, 1, 2, 2)
    index = np.arange(6) + 100  # site-table labels, not positions
    cell_of = ["HEPG2", "HEPG2", "U2OS", "U2OS", "HEPG2", "U2OS"]
    cells = dict(zip(index.tolist(), cell_of, strict=True))
    wells = dict(zip(index.tolist(), ["treatment"] * 4 + ["positive_control"] * 2, strict=True))
    m = validate(_Fixed(logits), [(images, labels, index)], normalize=lambda x, i: x.float(),
                 cell_types=cells, device=torch.device("cpu"), well_types=wells)  # fmt: skip
    assert m["n"] == 6 and m["n_treatment"] == 4
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["treatment_accuracy"] == 0.5 and m["treatment_top3"] == 0.75
    assert m["control_accuracy"] == 1.0
    assert m["treatment_acc_HEPG2"] == 0.5 and m["treatment_acc_U2OS"] == 0.5
    assert m["acc_HEPG2"] == pytest.approx(2 / 3)
    no_controls = {k: "treatment" for k in wells}
    m = validate(_Fixed(logits), [(images, labels, index)], normalize=lambda x, i: x.float(),
                 cell_types=cells, device=torch.device("cpu"), well_types=no_controls)  # fmt: skip
    assert np.isnan(m["control_accuracy"]) and m["treatment_accuracy"] == pytest.approx(4 / 6)
