"""cellblock.data: config, normalization, labels, splits, Dataset/DataLoader, augmentation."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from cellblock.data.augment import BatchAugment, d4
from cellblock.data.config import AugmentConfig, DataConfig
from cellblock.data.dataset import SiteDataset, dataset_labels
from cellblock.data.labels import make_labels, n_classes, read_pseudo_labels
from cellblock.data.loader import make_loader
from cellblock.data.normalize import Normalizer, pool_stats
from cellblock.data.splits import assign_folds, select_rows
from cellblock.errors import ConfigError, UserError
from cellblock.store.packed import PackedDataset


@pytest.fixture(scope="module")
def packed(tiny_packed) -> PackedDataset:
    return PackedDataset(tiny_packed)


@pytest.fixture(scope="module")
def pixels(packed) -> dict:
    """Every site's pixels straight from zarr-python: ``{(exp, plate, kind): (N, C, H, W)}``."""
    out: dict = {}
    for (exp, plate), sites in packed.metadata.groupby(["experiment", "plate"]):
        array = packed.plate(exp, plate)[...]
        negative = sites[sites.well_type == "negative_control"]
        for kind, rows in [("all", sites), ("negative_control", negative)]:
            out[exp, plate, kind] = np.stack(
                [array[r.row, r.col, r.site - 1] for r in rows.itertuples()]
            )
    return out


def direct_stats(pixels: dict, keys: list) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of all pixels of ``keys``, from the pixels themselves."""
    px = np.concatenate([pixels[k] for k in keys]).astype(np.float64)
    px = px.transpose(1, 0, 2, 3).reshape(px.shape[1], -1)
    return px.mean(1), px.std(1)


# ---- config -------------------------------------------------------------------------------


def test_config_defaults_and_unknown_keys():
    assert DataConfig.from_dict({}) == DataConfig()
    cfg = DataConfig.from_dict({"channels": [1, 2, 3], "augment": {"erase_p": 0.5}})
    assert cfg.channels == (1, 2, 3) and cfg.augment.erase_p == 0.5
    with pytest.raises(ConfigError, match="normalisation"):
        DataConfig.from_dict({"normalisation": "plate"})
    with pytest.raises(ConfigError, match=r"augment\.flips"):
        DataConfig.from_dict({"augment": {"flips": True}})
    for bad in [
        {"unit": "plate"},
        {"normalization": "batch"},
        {"channels": [0, 1]},
        {"channels": [1, 1]},
        {"fold": 5, "n_folds": 5},
        {"crop": 0},
        {"augment": {"crop_scale": [0.9, 0.1]}},
    ]:
        with pytest.raises(ConfigError):
            DataConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="7"):
        DataConfig(channels=(1, 7)).channel_index(6)


# ---- normalization ------------------------------------------------------------------------


def test_pool_stats_equals_pooled_pixels():
    rng = np.random.default_rng(0)
    groups = [rng.normal(i, i + 1, size=(3, n)) for i, n in enumerate([10, 200, 37])]
    mean, std = pool_stats(
        [g.mean(1) for g in groups], [g.std(1) for g in groups], [g.shape[1] for g in groups]
    )
    allpx = np.concatenate(groups, axis=1)
    np.testing.assert_allclose(mean, allpx.mean(1))
    np.testing.assert_allclose(std, allpx.std(1))


@pytest.mark.parametrize("stats_from", ["all", "negative_control"])
@pytest.mark.parametrize("mode", ["plate", "experiment", "global"])
def test_pooled_stats_equal_direct_pixel_stats(packed, pixels, mode, stats_from):
    norm = Normalizer(packed, mode, stats_from)
    plates = sorted({(e, p) for e, p, _ in pixels})
    exp, plate = plates[5]
    members = {
        "plate": [(exp, plate)],
        "experiment": [k for k in plates if k[0] == exp],
        "global": plates,
    }[mode]
    mean, std = direct_stats(pixels, [(*k, stats_from) for k in members])
    got_mean, got_std = norm.stats(exp, plate)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5)
    np.testing.assert_allclose(got_std, np.maximum(std, 1.0), rtol=1e-5)


@pytest.mark.parametrize("mode", ["plate", "experiment", "global", "image"])
def test_normalized_items_equal_numpy(packed, pixels, mode):
    cfg = DataConfig(normalization=mode)
    ds = SiteDataset(packed, None, cfg)
    table = packed.metadata
    plates = sorted({(e, p) for e, p, _ in pixels})
    for i in [0, 17, len(ds) - 1]:
        image, _, index = ds[i]
        r = table.loc[index]
        x = packed.plate(r.experiment, r.plate)[r.row, r.col, r.site - 1].astype(np.float64)
        if mode == "image":
            mean, std = x.mean((1, 2)), x.std((1, 2))
        else:
            keys = {
                "plate": [(r.experiment, r.plate)],
                "experiment": [k for k in plates if k[0] == r.experiment],
                "global": plates,
            }[mode]
            mean, std = direct_stats(pixels, [(*k, "all") for k in keys])
        expected = (x - mean[:, None, None]) / np.maximum(std, 1.0)[:, None, None]
        assert image.dtype == torch.float32 and image.shape == (6, 32, 32)
        np.testing.assert_allclose(image.numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["plate", "image"])
def test_channel_subset_and_well_unit(packed, mode):
    full = SiteDataset(packed, None, DataConfig(normalization=mode))
    sub = SiteDataset(packed, None, DataConfig(normalization=mode, channels=(2, 5)))
    image, label, index = sub[3]
    assert image.shape == (2, 32, 32)
    ref, ref_label, ref_index = full[3]
    assert (label, index) == (ref_label, ref_index)
    torch.testing.assert_close(image, ref[[1, 4]])
    np.testing.assert_array_equal(
        Normalizer(packed, "plate", channels=[1, 4]).stats("HEPG2-01", 1)[0],
        Normalizer(packed, "plate").stats("HEPG2-01", 1)[0][[1, 4]],
    )

    wells = SiteDataset(packed, None, DataConfig(normalization=mode, unit="well", channels=(2, 5)))
    assert len(wells) * 2 == len(sub)
    well, _, first = wells[0]
    assert well.shape == (2, 2, 32, 32)
    table = packed.metadata
    r = table.loc[first]
    sites = table[
        (table.experiment == r.experiment) & (table.plate == r.plate) & (table.well == r.well)
    ]
    by_index = {int(idx): i for i, idx in enumerate(sub.index)}
    for s, idx in enumerate(sites.sort_values("site").index):
        torch.testing.assert_close(well[s], sub[by_index[idx]][0])
    # the labels of a batch's stacked sites (snapshots name each site by them)
    assert wells.item_sites(np.array([first])).tolist() == [list(sites.sort_values("site").index)]
    assert sub.item_sites(np.array([first, 7])).tolist() == [[first], [7]]


@pytest.mark.parametrize("unit", ["site", "well"])
@pytest.mark.parametrize("mode", ["plate", "experiment", "global", "image"])
def test_uint8_batches_normalized_on_device_equal_loader_normalized(packed, mode, unit):
    # training ships uint8 and normalizes batches on the device: the same numbers as
    # normalizing each image in the loader (bit-exact for the plate statistics)
    cfg = DataConfig(normalization=mode, unit=unit, channels=(1, 3, 4, 6))
    ref = SiteDataset(packed, None, cfg)
    raw = SiteDataset(packed, None, cfg, normalize=False)
    picks = [0, 5, len(ref) // 2, len(ref) - 1]  # plates of different experiments
    want = torch.stack([ref[i][0] for i in picks])
    items = [raw[i] for i in picks]
    images, index = torch.stack([x for x, _, _ in items]), torch.tensor([j for _, _, j in items])
    assert images.dtype == torch.uint8 and images.shape == want.shape
    got = raw.batch_normalizer()(images, index)
    assert got.dtype == torch.float32
    tol = 0 if mode != "image" else 1e-5
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_batch_normalizer_names_plates_without_statistics(packed):
    table = packed.metadata
    norm = Normalizer(packed, "plate", plates=[("HEPG2-01", 1)])
    with pytest.raises(ValueError, match="HEPG2-01', 2"):
        norm.batch_normalizer(table)
    norm.batch_normalizer(table[(table.experiment == "HEPG2-01") & (table.plate == 1)])


# ---- loading ------------------------------------------------------------------------------


def test_dataloader_workers_match_in_process(packed):
    cfg = DataConfig(channels=(1, 2, 3, 4, 5))
    ds = SiteDataset(packed, packed.metadata.index[:70], cfg)
    assert len(pickle.dumps(ds)) < 100_000  # no reader state or table travels to workers
    for train in (False, True):
        batches = []
        for workers in (0, 2):
            loader = make_loader(ds, 16, train=train, workers=workers, seed=3, device="cpu")
            assert loader.persistent_workers == (workers > 0) and not loader.pin_memory
            batches.append(list(loader))
        assert len(batches[0]) == (4 if train else 5)  # drop_last only when training
        for (x0, y0, i0), (x1, y1, i1) in zip(*batches, strict=True):
            torch.testing.assert_close(x0, x1, rtol=0, atol=0)
            assert np.array_equal(y0, y1) and np.array_equal(i0, i1)
            assert y1.dtype == i1.dtype == np.int64  # small arrays: no shared-memory tensor


# ---- labels and splits --------------------------------------------------------------------


def test_test_labels_never_reach_training(packed):
    table = packed.metadata
    labels = dataset_labels(packed, DataConfig())
    hidden = (table.split == "test") & (table.well_type == "treatment")
    assert hidden.any() and table.loc[hidden, "sirna"].notna().all()  # the answer key exists
    assert (labels[hidden] == -1).all()
    assert (labels[~hidden] == table.loc[~hidden, "sirna"]).all()
    train, val = select_rows(table, DataConfig(), labels)
    assert len(val) == 0 and (table.loc[train, "split"] == "train").all()
    assert set(train) == set(table.index[table.split == "train"])

    ds = SiteDataset(packed, None, DataConfig())
    item_labels = pd.Series(ds.labels, index=ds.index)
    assert (item_labels[table.index[hidden]] == -1).all()

    asked = make_labels(table, use_test_labels=True)
    assert (asked == table["sirna"]).all()


def test_controls_only_selection(packed):
    table = packed.metadata
    cfg = DataConfig(label="control", controls_only=True)
    labels = dataset_labels(packed, cfg)
    train, _ = select_rows(table, cfg, labels)
    rows = table.loc[train]
    assert (rows.well_type != "treatment").all()
    assert set(rows.split) == {"train", "test"}
    assert len(rows) == (table.well_type != "treatment").sum()
    assert set(labels[train]) == set(range(n_classes(table, "control"))) == {0, 1, 2}


def test_folds_disjoint_cover_deterministic(packed):
    table = packed.metadata
    train_exps = set(table.loc[table.split == "train", "experiment"])
    labels = dataset_labels(packed, DataConfig())
    for n_folds in (2, 4):
        folds = assign_folds(table, n_folds, seed=1)
        assert set(folds) == train_exps and set(folds.values()) == set(range(n_folds))
        assert folds == assign_folds(table, n_folds, seed=1)
        seen = set()
        for fold in range(n_folds):
            cfg = DataConfig(n_folds=n_folds, fold=fold, split_seed=1)
            train, val = select_rows(table, cfg, labels)
            tr_exps, va_exps = (
                set(table.loc[train, "experiment"]),
                set(table.loc[val, "experiment"]),
            )
            assert tr_exps.isdisjoint(va_exps) and va_exps
            assert (table.loc[train, "split"] == "train").all()
            seen |= va_exps
        assert seen == train_exps
    with pytest.raises(ConfigError, match="n_folds"):
        assign_folds(table, 5)
    with pytest.raises(ConfigError, match=r"none of \['NOPE-01'\] is in the dataset"):
        select_rows(table, DataConfig(val_experiments=("NOPE-01",)), labels)


def test_val_experiments_missing_from_the_dataset_are_skipped_with_a_warning(packed, caplog):
    # a setup names RxRx1's held-out experiments; a dataset of a few validates on those it has
    table = packed.metadata
    labels = dataset_labels(packed, DataConfig())
    train_exps = sorted(set(table.loc[table.split == "train", "experiment"]))
    cfg = DataConfig(val_experiments=(train_exps[0], "HUVEC-16", "RPE-07"))
    with caplog.at_level("WARNING", logger="cellblock.data.splits"):
        train, val = select_rows(table, cfg, labels)
    assert set(table.loc[val, "experiment"]) == {train_exps[0]}
    assert train_exps[0] not in set(table.loc[train, "experiment"]) and len(train)
    assert "HUVEC-16, RPE-07 not in the dataset" in caplog.text
    with pytest.raises(ConfigError, match="all the training experiments"):
        select_rows(table, DataConfig(val_experiments=(*train_exps, "RPE-07")), labels)


def test_folds_balanced_over_cell_types():
    rows = [
        {"experiment": f"{ct}-{e:02d}", "cell_type": ct, "split": "train"}
        for ct in ("HEPG2", "HUVEC", "RPE", "U2OS")
        for e in range(1, 6)
    ]
    table = pd.DataFrame(rows)
    folds = assign_folds(table, 5, seed=7)
    per_fold = pd.Series(folds).groupby(lambda e: (folds[e], e.split("-")[0])).size()
    assert (per_fold == 1).all() and len(per_fold) == 20  # each fold: one of each cell type
    assert len({tuple(sorted(assign_folds(table, 5, seed=s).items())) for s in range(5)}) > 1


def write_csv(path, text: str):
    path.write_text(text)
    return path


def test_pseudo_labels_merge_onto_test_rows(packed, tmp_path):
    table = packed.metadata
    test_wells = table[(table.split == "test") & (table.well_type == "treatment")]
    wells = test_wells.drop_duplicates("id_code")
    lines = ["id_code,sirna,confidence"] + [
        f"{r.id_code},{(r.sirna + 1) % 16},{0.9 if i % 2 else 0.3}"
        for i, r in enumerate(wells.itertuples())
    ]
    path = write_csv(tmp_path / "pseudo.csv", "\n".join(lines) + "\n")
    cfg = DataConfig(pseudo_labels=str(path), min_confidence=0.5)
    labels = dataset_labels(packed, cfg)
    train, _ = select_rows(table, cfg, labels)
    rows = table.loc[train]
    pseudo_rows = rows[(rows.split == "test") & (rows.well_type == "treatment")]
    kept = set(wells.id_code[1::2])
    assert set(pseudo_rows.id_code) == kept
    assert (labels[pseudo_rows.index] == (pseudo_rows.sirna + 1) % 16).all()  # file, not answer key
    assert (table.loc[train, "split"] == "train").sum() == (table.split == "train").sum()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("id_code,label\nX,1\n", r"pseudo\.csv: missing column\(s\) \['sirna'\]"),
        ("id_code,sirna,score\nX,1,2\n", r"pseudo\.csv: unexpected column\(s\) \['score'\]"),
        ("id_code,sirna\n{id},1\n{id},x\n", r"pseudo\.csv: column 'sirna', line 3"),
        ("id_code,sirna\n{id},999\n", r"column 'sirna', line 2: 999 is not a class"),
        ("id_code,sirna,confidence\n{id},1,1.5\n", r"column 'confidence', line 2"),
        ("id_code,sirna\nHEPG2-01_1_B02,1\n", r"column 'id_code', line 2: .* not a test well"),
        ("id_code,sirna\n{id},1\n{id},2\n", r"column 'id_code', line 3: .* twice"),
    ],
)
def test_pseudo_label_errors_name_file_column_row(packed, tmp_path, text, match):
    table = packed.metadata
    test_id = table.loc[table.split == "test", "id_code"].iloc[0]
    path = write_csv(tmp_path / "pseudo.csv", text.format(id=test_id))
    with pytest.raises(UserError, match=match):
        read_pseudo_labels(path, table)
    with pytest.raises(UserError, match="not found"):
        read_pseudo_labels(tmp_path / "missing.csv", table)


# ---- augmentation -------------------------------------------------------------------------


def test_d4_group_is_eight_distinct_permutations():
    x = torch.randn(3, 8, 8)
    outs = [d4(x, k) for k in range(8)]
    for out in outs:
        assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8


def test_augment_shapes_eval_identity_and_seed():
    x = torch.randn(6, 2, 5, 16, 16)  # wells: (B, S, C, H, W)
    aug = BatchAugment(AugmentConfig(erase_p=1.0), out_size=12, seed=4)
    out = aug(x)
    assert out.shape == (6, 2, 5, 12, 12) and not torch.equal(out[..., :12, :12], x[..., :12, :12])
    same = BatchAugment(AugmentConfig(), seed=4)
    assert same(x).shape == x.shape
    assert torch.equal(
        BatchAugment(AugmentConfig(), seed=9)(x), BatchAugment(AugmentConfig(), seed=9)(x)
    )
    assert not torch.equal(
        BatchAugment(AugmentConfig(), seed=9)(x), BatchAugment(AugmentConfig(), seed=8)(x)
    )
    aug.eval()
    assert aug(x) is x

    # the generator state is in the state dict: a restored module continues the stream
    a, b = BatchAugment(AugmentConfig(), seed=1), BatchAugment(AugmentConfig(), seed=2)
    a(x)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_augment_d4_permutes_pixels_per_sample():
    x = torch.randn(32, 3, 8, 8)
    off = AugmentConfig.none()
    assert torch.equal(BatchAugment(off)(x), x)
    only_d4 = AugmentConfig(
        d4=True, crop_scale=(1, 1), crop_ratio=(1, 1), erase_p=0, jitter_scale=0, jitter_shift=0
    )
    out = BatchAugment(only_d4, seed=0)(x)
    used = set()
    for xi, oi in zip(x, out, strict=True):
        match = [k for k in range(8) if torch.equal(d4(xi, k), oi)]
        assert len(match) == 1
        used.add(match[0])
    assert len(used) > 4  # per sample, not one transform for the whole batch


def test_augment_erase_and_jitter():
    x = torch.ones(16, 3, 10, 10)
    erase = AugmentConfig(
        d4=False, crop_scale=(1, 1), crop_ratio=(1, 1), erase_p=1.0, jitter_scale=0, jitter_shift=0
    )
    out = BatchAugment(erase)(x)
    zeros = (out == 0).all(1)  # erased pixels: every channel
    assert zeros.flatten(1).any(1).all() and ((out == 0) | (out == 1)).all()
    jitter = AugmentConfig(
        d4=False,
        crop_scale=(1, 1),
        crop_ratio=(1, 1),
        erase_p=0,
        jitter_scale=0.2,
        jitter_shift=0.1,
    )
    out = BatchAugment(jitter)(x)
    per_channel = out.flatten(2)
    assert (per_channel.std(2) < 1e-6).all()  # one affine map per sample and channel
    assert ((per_channel[..., 0] - 1).abs() <= 0.3 + 1e-6).all()
