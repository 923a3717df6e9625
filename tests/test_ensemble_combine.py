"""Combining real predictions stores (zarr, over the tiny packed dataset) and their errors."""

import shutil
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax, softmax

from cellblock.ensemble.combine import combine
from cellblock.errors import UserError
from cellblock.screen.sites import select_sites
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import PredictionInfo, create_store, write_wells

EMBEDDING_DIM = 8


def crafted_store(
    out,
    data,
    signal: float = 3.0,
    noise: float = 1.0,
    seed: int = 0,
    classes: tuple[int, ...] | None = None,
    plates: list[str] | None = None,
    dataset: str | None = None,
    skip_wells: int = 0,
):
    """A real predictions store: logits = signal on the true class + Gaussian noise.

    Embeddings: a per-sirna direction plus a large per-experiment offset plus noise.
    ``skip_wells`` leaves the first wells of the first plate unpredicted.
    """
    packed = PackedDataset(data)
    table = packed.metadata
    if classes is None:
        classes = tuple(range(int(table["sirna"].max()) + 1))
    info = PredictionInfo(
        setup="test/crafted",
        run=str(out),
        iteration=1,
        classes=tuple(classes),
        tta="none",
        channels=(1, 2, 3, 4, 5, 6),
        embedding_dim=EMBEDDING_DIM,
        dataset=str(dataset or data),
        code_version="test",
    )
    keys = packed.plate_keys() if plates is None else plates
    path = create_store(out, info, packed, keys)
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(99).normal(size=(200, EMBEDDING_DIM))
    n_all = max(int(table["sirna"].max()) + 1, max(classes) + 1)
    for n, key in enumerate(keys):
        experiment, plate = key.split("/Plate")
        part = table[(table["experiment"] == experiment) & (table["plate"] == int(plate))]
        wells = part.drop_duplicates("id_code")
        if n == 0:
            wells = wells.iloc[skip_wells:]
        sites = packed.info.n_sites
        # noise drawn per sirna id, then the store's columns picked: stores with the same
        # seed and permuted classes hold the same numbers in another column order
        full = rng.normal(0.0, noise, (len(wells), sites, n_all))
        offset = np.random.default_rng(zlib.crc32(experiment.encode())).normal(0, 5, EMBEDDING_DIM)
        emb = rng.normal(0.0, 0.3, (len(wells), sites, EMBEDDING_DIM)) + offset
        for i, sirna in enumerate(wells["sirna"].astype(int)):
            full[i, :, sirna] += signal
            emb[i] += directions[sirna]
        logits = full[:, :, list(classes)]
        write_wells(path, key, list(zip(wells["row"], wells["col"], strict=True)), logits, emb)
    return path


def split_plates(data) -> list[str]:
    packed = PackedDataset(data)
    test = set(packed.metadata.loc[packed.metadata["split"] == "test", "experiment"])
    return [k for k in packed.plate_keys() if k.split("/")[0] in test]


@pytest.fixture(scope="module")
def stores(tiny_packed, tmp_path_factory):
    """Stores shared by this module's tests (writing one costs seconds on a busy machine)."""
    root = tmp_path_factory.mktemp("stores")
    plates = split_plates(tiny_packed)
    return {
        "a": crafted_store(root / "a", tiny_packed, seed=1, plates=plates),
        "b": crafted_store(root / "b", tiny_packed, seed=2, plates=plates),
        "reversed": crafted_store(
            root / "reversed", tiny_packed, seed=1, plates=plates, classes=tuple(range(18, -1, -1))
        ),
    }


def read_logits(store, data, split="test"):
    """Site logits of ``split`` straight from zarr (an independent reader of the store)."""
    import zarr

    sites = select_sites(PackedDataset(data).metadata, split)
    root = zarr.open_group(store, mode="r")
    out = np.empty(
        (len(sites), len(zarr.open_group(store).attrs["cellblock_predictions"]["classes"]))
    )
    for (experiment, plate), part in sites.groupby(["experiment", "plate"]):
        array = root[f"{experiment}/Plate{plate}"]["logits"][:]
        out[part.index] = array[part["row"], part["col"], part["site"] - 1]
    return sites, out


def test_one_store_mean_over_sites(tiny_packed, stores):
    c = combine([stores["a"]], tiny_packed, "test")
    sites, logits = read_logits(stores["a"], tiny_packed)
    assert len(c.wells) == sites["id_code"].nunique()
    assert c.wells["id_code"].is_unique and (c.wells["split"] == "test").all()
    for i in (0, len(c.wells) - 1):
        well = (sites["id_code"] == c.wells["id_code"].iloc[i]).to_numpy()
        assert well.sum() == 2  # both sites merged
        expected = log_softmax(logits[well].mean(axis=0))
        np.testing.assert_allclose(c.log_probs[i], expected, atol=1e-5)
    np.testing.assert_allclose(np.exp(c.log_probs).sum(axis=1), 1.0, atol=1e-9)
    assert c.embeddings.shape == (len(c.wells), EMBEDDING_DIM)
    assert c.classes.tolist() == list(range(19))
    assert c.inputs[0]["setup"] == "test/crafted" and c.inputs[0]["weight"] == 1.0


def test_two_stores_mean_logits_and_mean_probs(tiny_packed, stores):
    a, b = stores["a"], stores["b"]
    sites, la = read_logits(a, tiny_packed)
    _, lb = read_logits(b, tiny_packed)
    well = (sites["id_code"] == sites["id_code"].iloc[0]).to_numpy()

    c = combine([a, b], tiny_packed, "test", weights=[3, 1])
    expected = log_softmax((0.75 * la[well] + 0.25 * lb[well]).mean(axis=0))
    np.testing.assert_allclose(c.log_probs[0], expected, atol=1e-5)
    assert [i["weight"] for i in c.inputs] == [0.75, 0.25]

    p = combine([a, b], tiny_packed, "test", mode="mean-probs")
    probs = (0.5 * softmax(la[well], axis=1) + 0.5 * softmax(lb[well], axis=1)).mean(axis=0)
    np.testing.assert_allclose(np.exp(p.log_probs[0]), probs, atol=1e-6)
    assert p.mode == "mean-probs"
    # embeddings of two models are not averaged (different spaces): side by side
    assert c.embeddings.shape[1] == 2 * EMBEDDING_DIM
    # combining a store with itself changes nothing
    same = combine([a, a], tiny_packed, "test")
    np.testing.assert_allclose(same.log_probs, combine([a], tiny_packed, "test").log_probs)


def test_class_order_is_aligned(tiny_packed, stores):
    a, b = stores["a"], stores["reversed"]
    # same numbers, columns permuted: after alignment the two stores agree exactly
    ca, cb = combine([a], tiny_packed), combine([b], tiny_packed)
    assert cb.classes.tolist() == list(range(18, -1, -1))
    np.testing.assert_allclose(cb.log_probs[:, ::-1], ca.log_probs, atol=1e-6)
    both = combine([a, b], tiny_packed)
    assert both.classes.tolist() == list(range(19))
    np.testing.assert_allclose(both.log_probs, ca.log_probs, atol=1e-6)


def test_different_class_sets_are_refused(tiny_packed, stores, tmp_path):
    plates = split_plates(tiny_packed)
    b = crafted_store(tmp_path / "b", tiny_packed, classes=tuple(range(16, 19)), plates=plates)
    with pytest.raises(UserError, match=r"b/predictions.zarr: predicts other classes.*3 vs 19"):
        combine([stores["a"], b], tiny_packed)


def test_missing_plate_is_refused(tiny_packed, stores, tmp_path):
    plates = split_plates(tiny_packed)
    store = crafted_store(tmp_path / "a", tiny_packed, plates=plates[:-1])
    with pytest.raises(UserError, match=f"no predictions for plate {plates[-1]}"):
        combine([store], tiny_packed, "test")
    # the train split was never predicted at all
    with pytest.raises(UserError, match="no predictions for plate"):
        combine([stores["a"]], tiny_packed, "train")


def test_unpredicted_wells_are_refused(tiny_packed, tmp_path):
    store = crafted_store(
        tmp_path / "a", tiny_packed, skip_wells=2, plates=split_plates(tiny_packed)
    )
    with pytest.raises(UserError, match=r"4 sites of plate .* have no logits .*never predicted"):
        combine([store], tiny_packed, "test")


def test_store_of_another_dataset_is_refused(tiny_packed, tmp_path):
    other = tmp_path / "other_dataset"
    other.mkdir()
    table = PackedDataset(tiny_packed).metadata
    table.assign(sirna=table["sirna"][::-1].to_numpy()).to_parquet(other / "metadata.parquet")
    experiment = split_plates(tiny_packed)[0].split("/")[0]
    plates = [k for k in split_plates(tiny_packed) if k.startswith(experiment + "/")]
    store = crafted_store(tmp_path / "a", tiny_packed, dataset=str(other), plates=plates)
    with pytest.raises(UserError, match=r"predictions of dataset .*other_dataset, not of"):
        combine([store], tiny_packed, experiments=[experiment])
    # an exact copy of the dataset (moved, or mounted elsewhere) is the same dataset; so is
    # a path this machine cannot see (then plates and wells are what is checked)
    shutil.copy(tiny_packed / "metadata.parquet", other / "metadata.parquet")
    assert len(combine([store], tiny_packed, experiments=[experiment]).wells) == 4 * 7
    shutil.rmtree(other)
    assert len(combine([store], tiny_packed, experiments=[experiment]).wells) == 4 * 7


def test_classes_outside_the_dataset_are_refused(tiny_packed, tmp_path):
    plates = split_plates(tiny_packed)
    store = crafted_store(tmp_path / "a", tiny_packed, classes=tuple(range(40)), plates=plates)
    with pytest.raises(UserError, match=r"classes 0..39 outside the dataset's labels 0..18"):
        combine([store], tiny_packed)


def test_bad_arguments(tiny_packed, stores, tmp_path):
    store = stores["a"]
    with pytest.raises(UserError, match="2 weights for 1 predictions"):
        combine([store], tiny_packed, weights=[1, 2])
    with pytest.raises(UserError, match="non-negative"):
        combine([store, store], tiny_packed, weights=[1, -1])
    with pytest.raises(UserError, match="--combine 'median'"):
        combine([store], tiny_packed, mode="median")
    with pytest.raises(UserError, match="no predictions store here"):
        combine([tmp_path / "nothing"], tiny_packed)
    with pytest.raises(UserError, match="--experiments NOPE-01: not in dataset"):
        combine([store], tiny_packed, experiments=["NOPE-01"])
    with pytest.raises(UserError, match="no predictions given"):
        combine([], tiny_packed)


def test_select_sites_orders_wells_consecutively(tiny_packed):
    table = PackedDataset(tiny_packed).metadata.sample(frac=1.0, random_state=0)
    sites = select_sites(table, "all")
    assert isinstance(sites.index, pd.RangeIndex)
    starts = ~sites["id_code"].duplicated()
    assert sites.loc[starts, "id_code"].is_unique
    runs = (sites["id_code"] != sites["id_code"].shift()).cumsum()
    assert runs.max() == sites["id_code"].nunique()  # each well's sites are one run
