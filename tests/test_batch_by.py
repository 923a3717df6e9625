"""data.batch_by: training batches of one plate, BatchNorm statistics per plate (AdaBN)
at prediction and validation, and the samplers and estimates beneath them."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cellblock.data.config import DataConfig
from cellblock.data.dataset import SiteDataset
from cellblock.data.loader import even_spans
from cellblock.errors import ConfigError
from cellblock.inference import Predictor
from cellblock.nets.bnstats import bn_buffers, estimate_bn_stats, using_bn_buffers
from cellblock.runs import run_checkpoint
from cellblock.store.packed import PackedDataset
from cellblock.training.checkpoint import load_checkpoint
from cellblock.training.cli import train_main
from cellblock.training.evaluate import validate
from cellblock.training.sampler import GroupedSampler, group_batches
from tests.test_inference import SETUP, TRAIN, _plate_rows, _reference_net

BY_PLATE = [*TRAIN, "data.batch_by=plate"]


# --- the order: pure logic ---------------------------------------------------------------


def _take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_grouped_sampler_chunks_hold_one_group_and_cover_every_member():
    groups = ["a"] * 7 + ["b"] * 3 + ["c"] * 12  # none a multiple of the chunk
    sampler = GroupedSampler(groups, chunk=4, seed=1)
    assert sampler.chunks == [2, 1, 3] and sampler.n == 24  # 6 chunks of 4 per epoch
    stream = _take(sampler, 3 * sampler.n)
    for c in range(0, len(stream), 4):
        assert len({groups[p] for p in stream[c : c + 4]}) == 1, stream[c : c + 4]
    for e in range(3):
        epoch = stream[e * 24 : (e + 1) * 24]
        assert set(epoch) == set(range(len(groups)))  # every member, topped-up chunks aside
    assert stream[:24] != stream[24:48]  # reshuffled each epoch
    assert _take(GroupedSampler(groups, chunk=4, seed=1), 48) == stream[:48]  # seeded
    assert _take(GroupedSampler(groups, chunk=4, seed=2), 48) != stream[:48]


def test_grouped_sampler_resumes_mid_stream_and_splits_chunks_across_ranks():
    groups = [i % 3 for i in range(20)]
    whole = _take(GroupedSampler(groups, chunk=6, seed=0), 60)
    assert _take(GroupedSampler(groups, chunk=6, seed=0, start=30), 30) == whole[30:]
    ranks = [_take(GroupedSampler(groups, 6, 0, rank=r, world_size=2), 30) for r in (0, 1)]
    for step in range(10):  # micro-batches of 3 per rank: both ranks in one group
        both = ranks[0][step * 3 : step * 3 + 3] + ranks[1][step * 3 : step * 3 + 3]
        assert len({groups[p] for p in both}) == 1
        assert sorted(both) == sorted(whole[step * 6 : step * 6 + 6])


def test_group_batches_never_mix_groups_and_leave_no_lone_item():
    groups = ["p1"] * 9 + ["p2"] * 4 + ["p3"]
    batches = group_batches(groups, batch_size=4)
    assert [b for batch in batches for b in batch] == list(range(14))  # all, in order
    assert [len(b) for b in batches] == [3, 3, 3, 4, 1]  # 9 -> 3 x 3, not 4 + 4 + 1
    assert all(len({groups[p] for p in b}) == 1 for b in batches)


def test_batch_by_must_be_known():
    with pytest.raises(ConfigError, match="batch_by"):
        DataConfig(batch_by="well")
    assert DataConfig.from_dict({"batch_by": "experiment"}).batch_by == "experiment"


# --- the estimate ------------------------------------------------------------------------


class _Probe(torch.nn.Module):
    """BatchNorm, then a dropout that records whether it ran in training mode."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(2)
        self.drop = torch.nn.Dropout(0.5)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.drop.training)
        return self.drop(self.bn(x))


def test_estimate_is_the_batches_statistics_and_leaves_the_network_as_it_was():
    torch.manual_seed(0)
    net = _Probe().train()
    net.bn.running_mean.fill_(3.0)
    own = bn_buffers(net)
    batches = [torch.randn(8, 2, 4, 4) * 2 + 5 for _ in range(3)]
    stats = estimate_bn_stats(net, [*batches, torch.randn(1, 2, 4, 4)])  # a lone item: skipped
    means = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    variances = torch.stack([b.var((0, 2, 3)) for b in batches]).mean(0)  # unbiased, as BN
    torch.testing.assert_close(stats["bn.running_mean"], means)
    torch.testing.assert_close(stats["bn.running_var"], variances)
    assert int(stats["bn.num_batches_tracked"]) == 3
    assert net.modes == [False] * 3  # dropout stayed off while estimating
    assert net.training and net.drop.training and net.bn.momentum == 0.1  # restored
    torch.testing.assert_close(bn_buffers(net)["bn.running_mean"], own["bn.running_mean"])
    with using_bn_buffers(net, stats):
        torch.testing.assert_close(net.bn.running_mean, means)
    torch.testing.assert_close(net.bn.running_mean, own["bn.running_mean"])


class _Centred(torch.nn.Module):
    """Logits ``[z, -z]`` of the BatchNorm-ed mean pixel ``z``: class 0 above the mean."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(1, affine=False)

    def forward(self, x):
        z = self.bn(x).mean((1, 2, 3))
        return SimpleNamespace(logits=torch.stack([z, -z], 1))

    def loss(self, out, labels):
        return torch.nn.functional.cross_entropy(out.logits, labels)


def test_validation_scores_each_plate_with_its_own_statistics():
    # plate A sits at 10-12, plate B at -5 to -3: the trained statistics (0, 1) call every
    # A item class 0 and every B item class 1; each plate's own mean gets all four right
    values = [10.0, 12.0, -5.0, -3.0]
    labels, index = np.array([1, 0, 1, 0]), np.array([7, 8, 9, 10])
    images = torch.tensor(values)[:, None, None, None].expand(4, 1, 2, 2).contiguous()
    batches = [(images[:2], labels[:2], index[:2]), (images[2:], labels[2:], index[2:])]
    kw = dict(normalize=lambda x, i: x, cell_types=dict.fromkeys(index.tolist(), "HEPG2"),
              device=torch.device("cpu"))  # fmt: skip
    net = _Centred()
    assert validate(net, batches, **kw)["accuracy"] == 0.5
    groups = {7: "A/1", 8: "A/1", 9: "B/1", 10: "B/1"}
    assert validate(net, batches, bn_groups=groups, **kw)["accuracy"] == 1.0
    assert float(net.bn.running_mean) == 0.0  # the trained statistics are back
    mixed = [(images[1:3], labels[1:3], index[1:3])]
    with pytest.raises(ValueError, match=r"mixes BatchNorm groups \['A/1', 'B/1'\]"):
        validate(net, mixed, bn_groups=groups, **kw)
    with pytest.raises(ValueError, match="batches of A/1 are not contiguous"):
        validate(net, [*batches, batches[0]], bn_groups=groups, **kw)


# --- a run trained by plate ---------------------------------------------------------------


@pytest.fixture(scope="module")
def plate_run(tiny_packed, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("by_plate") / "run"
    sets = [a for s in BY_PLATE for a in ("--set", s)]
    assert train_main(SETUP, ["20", "--data", str(tiny_packed), "--out", str(run), *sets]) == 0
    return run


def test_training_by_plate_validates_per_plate_and_resumes_exactly(
    plate_run, tiny_packed, tmp_path
):
    val = (plate_run / "val.csv").read_text().splitlines()
    assert len(val) == 3 and "treatment_accuracy" in val[0]  # iterations 10 and 20
    split = tmp_path / "split"
    sets = [a for s in BY_PLATE for a in ("--set", s)]
    for its in ("10", "20"):
        assert train_main(SETUP, [its, "--data", str(tiny_packed), "--out", str(split), *sets]) == 0
    whole = load_checkpoint(run_checkpoint(plate_run))["model"]
    resumed = load_checkpoint(run_checkpoint(split))["model"]
    for key, value in whole.items():
        assert torch.equal(value, resumed[key]), key
    assert (split / "val.csv").read_text() == (plate_run / "val.csv").read_text()


def test_prediction_adapts_to_each_plate_whatever_the_block(plate_run, tiny_packed):
    packed = PackedDataset(tiny_packed)
    checkpoint = run_checkpoint(plate_run)
    predictor = Predictor(checkpoint, packed, "none", batch_size=64)
    assert predictor.bn_stats == "plate"  # from the run's data.batch_by
    rows = _plate_rows(packed)
    logits, embeddings = predictor.predict_rows(rows)
    # reference, by hand: the plate's sites in the run's own training batches (never the
    # prediction's batch size), each a BatchNorm-training pass, statistics averaged
    net, cfg = _reference_net(checkpoint)
    assert predictor.bn_batch == cfg.train.batch_size < len(rows)  # several batches
    sites = SiteDataset(packed, rows, cfg.data)
    images = torch.stack([sites[i][0] for i in range(len(sites))])
    adapted = copy.deepcopy(net)
    for m in adapted.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    with torch.no_grad():
        for a, b in even_spans(len(images), cfg.train.batch_size):
            adapted(images[a:b])
        out = adapted.eval()(images)
    np.testing.assert_allclose(logits, out.logits.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(embeddings, out.embeddings.numpy(), rtol=1e-4, atol=1e-4)
    # a block of a few wells gets the plate's statistics, not its own
    fresh = Predictor(checkpoint, packed, "none", batch_size=64)
    # (equal up to float rounding: a batch of 4 rows runs other kernels than one of 64)
    np.testing.assert_allclose(fresh.predict_rows(rows[3:7])[0], logits[3:7], rtol=1e-5, atol=1e-5)
    # rows of two plates, interleaved: each with its own plate's statistics, in row order
    other = _plate_rows(packed, plate=2)
    mixed = rows[:3].append(other[:3])[[0, 3, 1, 4, 2, 5]]
    both = predictor.predict_rows(mixed)[0]  # (batches of 3: float sums in another order)
    np.testing.assert_allclose(both[[0, 2, 4]], logits[:3], rtol=1e-5, atol=1e-5)
    alone = predictor.predict_rows(other[:3])[0]
    np.testing.assert_allclose(both[[1, 3, 5]], alone, rtol=1e-5, atol=1e-5)
    with using_bn_buffers(predictor.net, predictor._group_stats(("HEPG2-02", 1))):
        with_plate_1 = predictor._predict(other[:3])[0]  # plate 2's sites, plate 1's statistics
    assert not np.allclose(alone, with_plate_1, atol=1e-3)
    # the trained statistics are another prediction, and stay selectable
    trained = Predictor(checkpoint, packed, "none", bn_stats="trained").predict_rows(rows)[0]
    assert not np.allclose(trained, logits, atol=1e-3)


@pytest.mark.slow
def test_blockwise_workers_adapt_as_the_scan_does(plate_run, tiny_packed, tmp_path):
    """Two daisy workers, blocks of 4 wells (a plate split over blocks and workers), give
    the in-process scan's logits: each worker estimates a plate's statistics from the
    whole plate, not from its blocks."""
    from tests.test_blockwise import BLOCKWISE, SCAN, _assert_close, _common, _load, _run

    scan, blockwise = tmp_path / "scan", tmp_path / "blockwise"
    r = _run([str(SCAN), *_common(plate_run, tiny_packed, scan)])
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([str(BLOCKWISE), *_common(plate_run, tiny_packed, blockwise), "--block-wells", "4",
              "--workers", "2"])  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_close(_load(blockwise), _load(scan))  # both adapt: the scan's own test above
