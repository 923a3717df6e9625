"""cellblock.inference: a trained run's checkpoint, training's inputs, TTA, clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cellblock.data.augment import d4
from cellblock.data.dataset import SiteDataset
from cellblock.errors import UserError
from cellblock.inference import Predictor
from cellblock.nets.models import build_net
from cellblock.runs import check_channels, class_ids, load_run_info, run_checkpoint
from cellblock.store.packed import PackedDataset
from cellblock.training.checkpoint import latest_checkpoint, load_checkpoint
from cellblock.training.cli import train_main
from cellblock.training.setupconfig import SetupConfig
from cellblock.tta import tta_transforms
from tests.conftest import ROOT

SETUP = ROOT / "02_train" / "synthetic" / "tiny"
# tiny_packed: 32 px, 19 classes; HEPG2-01 held out for validation
TRAIN = [
    "net.input_size=32",
    "data.val_experiments=[HEPG2-01]",
    "train.batch_size=8",
    "train.workers=0",
    "train.log_every=5",
    "train.checkpoint_every=10",
    "train.validate_every=10",
    "train.warmup_iters=2",
    "train.schedule_iters=20",
    "data.batch_by=null",  # the stored BatchNorm statistics (per plate: test_batch_by.py)
]


def train_tiny_run(data: Path, base: Path) -> Path:
    """A 20-iteration synthetic/tiny run on ``data``, trained once per test session.

    It lives in ``base/predict_run/synthetic/tiny``; its ``run.json`` records the setup
    folder, ``02_train/synthetic/tiny``, which is how prediction finds the setup.
    """
    run = base / "predict_run" / "synthetic" / "tiny"
    if latest_checkpoint(run) is None:
        sets = [a for s in TRAIN for a in ("--set", s)]
        assert train_main(SETUP, ["20", "--data", str(data), "--out", str(run), *sets]) == 0
    return run


@pytest.fixture(scope="module")
def trained(tiny_packed, tmp_path_factory) -> Path:
    return train_tiny_run(tiny_packed, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def packed(tiny_packed) -> PackedDataset:
    return PackedDataset(tiny_packed)


def _plate_rows(packed: PackedDataset, experiment: str = "HEPG2-02", plate: int = 1) -> pd.Index:
    m = packed.metadata
    return m.index[(m["experiment"] == experiment) & (m["plate"] == plate)]


def _reference_net(checkpoint: Path):
    """The network and config, loaded independently of cellblock.inference."""
    state = load_checkpoint(checkpoint)
    cfg = SetupConfig.from_resolved(state["config"])
    net = build_net(cfg.net)
    net.load_state_dict(state["model"])
    return net.eval(), cfg


def test_predictions_equal_a_forward_pass_on_training_inputs(trained, packed):
    checkpoint = run_checkpoint(trained)
    assert checkpoint.name == "checkpoint_00000020.pt"
    net, cfg = _reference_net(checkpoint)
    rows = _plate_rows(packed)
    # training's own dataset: labels, normalizer and channels built from the config
    dataset = SiteDataset(packed, rows, cfg.data)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        out = net(images)
    predictor = Predictor(checkpoint, packed, "none", batch_size=5)  # 3 batches, 1 partial
    logits, embeddings = predictor.predict_rows(rows)
    assert logits.shape == (len(rows), cfg.net.num_classes) and logits.dtype == np.float32
    assert embeddings.shape == (len(rows), cfg.net.embedding_dim)
    np.testing.assert_allclose(logits, out.logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(embeddings, out.embeddings.numpy(), rtol=1e-5, atol=1e-5)
    assert predictor.iteration == 20 and predictor.device.type == "cpu"
    # reader threads (the GPU default) feed the same batches in the same order
    threaded = Predictor(checkpoint, packed, "none", batch_size=5, readers=2)
    assert threaded.readers == 2
    assert np.array_equal(threaded.predict_rows(rows)[0], logits)


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_tta_averages_logits_and_embeddings_over_the_transforms(trained, packed, tta):
    checkpoint = run_checkpoint(trained)
    net, cfg = _reference_net(checkpoint)
    rows = _plate_rows(packed)[:6]
    images = torch.stack([SiteDataset(packed, rows, cfg.data)[i][0] for i in range(len(rows))])
    ks = {"flips": [0, 2, 4, 6], "d4": list(range(8))}[tta]
    with torch.no_grad():
        outs = [net(d4(images, k)) for k in ks]
    want_logits = torch.stack([o.logits for o in outs]).mean(0).numpy()
    want_embeddings = torch.stack([o.embeddings for o in outs]).mean(0).numpy()
    logits, embeddings = Predictor(checkpoint, packed, tta).predict_rows(rows)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(embeddings, want_embeddings, rtol=1e-5, atol=1e-5)
    plain, _ = Predictor(checkpoint, packed, "none").predict_rows(rows)
    assert np.abs(plain - logits).max() > 1e-4  # the views really differ


def test_tta_modes():
    assert tta_transforms("none", (8, 8)) == (0,)
    assert tta_transforms("flips", (8, 16)) == (0, 2, 4, 6)  # flips suit any shape
    assert tta_transforms("d4", (8, 8)) == tuple(range(8))
    x = torch.arange(6.0).reshape(1, 2, 3)
    views = {tuple(d4(x, k).flatten().tolist()) for k in (0, 2, 4, 6)}
    assert len(views) == 4  # identity, both flips, half turn: all distinct
    with pytest.raises(UserError, match="needs square sites; these are 8x16"):
        tta_transforms("d4", (8, 16))
    with pytest.raises(UserError, match="'rot'"):
        tta_transforms("rot", (8, 8))


def test_predict_wells_groups_sites_and_leaves_missing_ones_nan(trained, packed, tmp_path):
    checkpoint = run_checkpoint(trained)
    rows = _plate_rows(packed)
    m = packed.metadata.loc[rows]
    wells = [tuple(w) for w in m[["row", "col"]].drop_duplicates().to_numpy().tolist()]
    predictor = Predictor(checkpoint, packed, "none", batch_size=4)
    logits, embeddings = predictor.predict_wells("HEPG2-02", 1, wells)
    assert logits.shape == (len(wells), 2, predictor.n_classes)
    assert embeddings.shape == (len(wells), 2, predictor.embedding_dim)
    site_logits, _ = predictor.predict_rows(rows)
    for label, (row, col, site) in zip(rows, m[["row", "col", "site"]].to_numpy(), strict=True):
        i = wells.index((row, col))
        np.testing.assert_allclose(logits[i, site - 1], site_logits[rows.get_loc(label)],
                                   rtol=1e-5, atol=1e-5)  # fmt: skip

    # a dataset whose first well lacks site 2: that site reads NaN, the rest as before
    copy = tmp_path / "dataset"
    copy.mkdir()
    (copy / "images.zarr").symlink_to(packed.path.resolve() / "images.zarr")
    table = packed.metadata
    r, c = wells[0]
    drop = (table["experiment"] == "HEPG2-02") & (table["plate"] == 1) & (table["row"] == r)
    drop &= (table["col"] == c) & (table["site"] == 2)
    table[~drop].to_parquet(copy / "metadata.parquet", index=False)
    short = Predictor(checkpoint, PackedDataset(copy), "none", batch_size=4)
    logits2, embeddings2 = short.predict_wells("HEPG2-02", 1, wells)
    assert np.isnan(logits2[0, 1]).all() and np.isnan(embeddings2[0, 1]).all()
    np.testing.assert_allclose(logits2[0, 0], logits[0, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits2[1:], logits[1:], rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="no sites of HEPG2-02/Plate1 A01"):
        short.predict_wells("HEPG2-02", 1, [(0, 0)])


def test_run_checkpoint_errors(trained, tmp_path):
    assert run_checkpoint(trained, 10).name == "checkpoint_00000010.pt"
    with pytest.raises(
        UserError, match=r"no checkpoint of iteration 7 \(iterations here: 10, 20\)"
    ):
        run_checkpoint(trained, 7)
    with pytest.raises(UserError, match="no such checkpoint or run folder"):
        run_checkpoint(tmp_path / "nope")
    with pytest.raises(UserError, match="no such run folder"):
        run_checkpoint(tmp_path / "nope", 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoints in this run folder"):
        run_checkpoint(tmp_path / "empty")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        Predictor(bad, None)  # fails on the file, before touching the dataset


def test_channel_checks(trained, packed):
    info = load_run_info(run_checkpoint(trained))
    assert info.iteration == 20 and info.embedding_dim == info.config.net.embedding_dim == 64
    assert check_channels(info.config, packed) == [0, 1, 2, 3, 4, 5]
    cfg = info.config
    five = cfg._replace(data=cfg.data.replace(channels=(1, 2, 3, 4, 5)))
    with pytest.raises(UserError, match=r"takes 6 channels .* selects 5 of dataset"):
        check_channels(five, packed, "run")
    seven = cfg._replace(data=cfg.data.replace(channels=(1, 7)))
    with pytest.raises(UserError, match=r"run: channels: \[7\] not in a 6-channel dataset"):
        check_channels(seven, packed, "run")
    subset = cfg._replace(
        net=dataclasses.replace(cfg.net, in_channels=2),
        data=cfg.data.replace(channels=(2, 5)),
    )
    assert check_channels(subset, packed) == [1, 4]


def test_embedding_width_and_classes(trained, packed, tmp_path):
    checkpoint = run_checkpoint(trained)
    cfg = load_run_info(checkpoint).config
    # no embedding layer: the width is the pooled features' (found without allocating)
    state = load_checkpoint(checkpoint)
    state["config"]["net"]["embedding_dim"] = 0
    torch.save(state, tmp_path / "pooled.pt")
    pooled = dataclasses.replace(cfg.net, embedding_dim=0)
    assert load_run_info(tmp_path / "pooled.pt").embedding_dim == build_net(pooled).embedding_dim
    assert class_ids(cfg, packed) == tuple(range(cfg.net.num_classes))
    controls = cfg._replace(data=cfg.data.replace(label="control"),
                            net=dataclasses.replace(cfg.net, num_classes=3))  # fmt: skip
    table = packed.metadata
    sirnas = table.loc[table["well_type"] != "treatment", "sirna"].dropna().astype(int)
    assert class_ids(controls, packed) == tuple(sorted(sirnas.unique()))


def test_pretrained_source_is_never_fetched(trained, packed, tmp_path):
    """A run initialized from a pretrained file predicts without that file."""
    checkpoint = run_checkpoint(trained)
    state = load_checkpoint(checkpoint)
    state["config"]["net"]["pretrained"] = str(tmp_path / "gone.pth")
    copy = tmp_path / "run" / "checkpoints" / checkpoint.name
    copy.parent.mkdir(parents=True)
    torch.save(state, copy)
    logits, _ = Predictor(copy, packed).predict_rows(_plate_rows(packed)[:2])
    assert np.isfinite(logits).all()
