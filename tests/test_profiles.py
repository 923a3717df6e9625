"""Profiles in the profiling convention: alignment, pycytominer and copairs read them; benchmark."""

import json

import numpy as np
import pandas as pd
import pytest
from copairs.map import average_precision, mean_average_precision
from copairs.matching import assign_reference_index
from PIL import Image
from pycytominer import feature_select, normalize

from cellblock.errors import UserError
from cellblock.profiling.align import align_profiles
from cellblock.profiling.benchmark import run_benchmark
from cellblock.profiling.mapscore import copairs_map
from cellblock.profiling.relations import read_relationships, relationship_recall
from cellblock.profiling.table import feature_columns, profile_table, reduce_width
from cellblock.store.pack import pack_dataset
from cellblock.store.packed import PackedDataset
from cellblock.store.predictions import PredictionInfo, create_store, write_wells
from cellblock.synth import Design, write_dataset
from tests.conftest import ROOT, TINY, run_script
from tests.test_ensemble_assign import N_CLASSES, crafted_wells
from tests.test_ensemble_combine import crafted_store, split_plates

BENCHMARK = ROOT / "04_ensemble" / "benchmark.py"
ENSEMBLE = ROOT / "04_ensemble" / "ensemble.py"
# TINY with planted relationships: 32 siRNAs in 16 genes of 2, pathways of 2 genes, and
# 4 negative controls per plate
RELATED = TINY.replace(n_treatments=32, sirnas_per_gene=2, genes_per_pathway=2,
                       negative_controls=4)  # fmt: skip


def batchy_wells(seed: int = 0, dim: int = 16):
    """crafted_wells with a per-siRNA direction and a plate offset far above it."""
    wells = crafted_wells()
    rng = np.random.default_rng(seed)
    labels = wells["sirna"].to_numpy(dtype=np.int64)
    directions = rng.normal(size=(N_CLASSES, dim))
    plates = wells["experiment"] + wells["plate"].astype(str)
    offsets = {p: rng.normal(0, 10, dim) for p in plates.unique()}
    emb = directions[labels] + np.stack([offsets[p] for p in plates])
    emb += rng.normal(0, 0.3, emb.shape)
    table = profile_table(wells, emb)
    return table, wells, emb


def test_alignment_removes_plate_offsets_and_scales_on_controls():
    table, wells, emb = batchy_wells()
    centred = align_profiles(table, emb, "centre")
    for _, rows in table.groupby("Metadata_plate").indices.items():
        np.testing.assert_allclose(centred[rows].mean(axis=0), 0, atol=1e-4)
    standard = align_profiles(table, emb, "standardize")
    negative = (table["Metadata_well_type"] == "negative_control").to_numpy()
    for _, rows in table.groupby("Metadata_experiment").indices.items():
        controls = rows[negative[rows]]
        np.testing.assert_allclose(standard[controls].mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(standard[controls].std(axis=0), 1, atol=1e-3)
    tvn = align_profiles(table, emb, "tvn")
    np.testing.assert_allclose(tvn[negative].mean(axis=0), 0, atol=1e-4)

    # whitening evens out the controls' spread over the directions they span (8 controls,
    # centred on 2 experiments: 6 of them)
    def condition(x):
        top = np.sort(np.linalg.eigvalsh(np.cov(x[negative].T)))[::-1][:6]
        return top[0] / top[-1]

    assert condition(tvn) < 0.5 * condition(standard)
    # batch offsets make raw profiles inconsistent across experiments; centring fixes it
    meta = table.assign(Metadata_sirna=wells["sirna"].to_numpy())
    raw = copairs_map(meta, emb, "consistency", null_size=200)
    fixed = copairs_map(meta, centred, "consistency", null_size=200)
    assert raw["map"] < 0.3 and fixed["map"] > 0.9 and fixed["fraction_significant"] > 0.9
    with pytest.raises(UserError, match="--align 'zca'"):
        align_profiles(table, emb, "zca")


def test_standardize_is_pycytominer_standardize_on_negative_controls_per_experiment():
    table, _, emb = batchy_wells()
    names = feature_columns(table)
    centred = table.assign(**dict(zip(names, align_profiles(table, emb, "centre").T, strict=True)))
    ours = align_profiles(table, emb, "standardize")
    for _, part in centred.groupby("Metadata_experiment"):
        theirs = normalize(part, method="standardize",
                           samples="Metadata_well_type == 'negative_control'")  # fmt: skip
        np.testing.assert_allclose(theirs[names].to_numpy(), ours[part.index], rtol=1e-4,
                                   atol=1e-4)  # fmt: skip


def test_reduce_width_keeps_the_leading_components():
    rng = np.random.default_rng(1)
    # 300 wells x 200 dims of rank ~5 signal plus small noise
    x = rng.normal(size=(300, 5)) @ (rng.normal(size=(5, 200)) * [[9], [7], [5], [3], [2]])
    x += rng.normal(0, 0.05, x.shape)
    narrow = reduce_width(x, 250)
    assert narrow is x  # narrow enough: unchanged
    reduced = reduce_width(x, 5)
    assert reduced.shape == (300, 5)
    centred = x - x.mean(axis=0)
    exact = np.linalg.svd(centred, compute_uv=False)[:5] ** 2
    np.testing.assert_allclose(np.sort(reduced.var(axis=0) * 300)[::-1], exact, rtol=1e-3)
    np.testing.assert_array_equal(reduce_width(x, 5), reduced)  # seeded: reproducible


@pytest.fixture(scope="module")
def ensembled(tiny_packed, tmp_path_factory):
    root = tmp_path_factory.mktemp("profiles")
    crafted_store(root / "pred", tiny_packed, signal=1.5, noise=1.0, seed=3,
                  plates=split_plates(tiny_packed))  # fmt: skip
    out = root / "out"
    result = run_script(ENSEMBLE, root / "pred", "--data", tiny_packed, "--out", out,
                        "--null-size", "500", cwd=root)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root, out


def test_pycytominer_normalize_and_feature_select_read_profiles_parquet(ensembled):
    _, out = ensembled
    profiles = pd.read_parquet(out / "profiles.parquet")
    meta = [c for c in profiles if c.startswith("Metadata_")]
    features = [c for c in profiles if not c.startswith("Metadata_")]
    assert features and all(c.startswith("Cells_CNN_") for c in features)
    normalized = normalize(profiles)  # every default: features and metadata inferred
    assert list(normalized.columns) == meta + features
    pd.testing.assert_frame_equal(normalized[meta], profiles[meta])
    values = normalized[features].to_numpy()
    np.testing.assert_allclose(values.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(values.std(axis=0), 1, atol=1e-2)
    controls = normalize(profiles, method="standardize",
                         samples="Metadata_well_type == 'negative_control'")  # fmt: skip
    negative = (profiles["Metadata_well_type"] == "negative_control").to_numpy()
    np.testing.assert_allclose(controls[features].to_numpy()[negative].mean(axis=0), 0, atol=1e-5)
    selected = feature_select(profiles)  # default operations, metadata inferred
    assert set(meta) <= set(selected.columns)
    assert set(selected.columns) - set(meta) <= set(features)
    assert len(selected) == len(profiles)


def test_benchmark_map_equals_copairs_called_on_the_same_table(ensembled, tiny_packed):
    root, out = ensembled
    bench = run_benchmark([out], tiny_packed, root / "bench", names=["ensemble"],
                          null_size=500, rotation_sites=0)  # fmt: skip
    model = bench["models"][0]
    profiles = pd.read_parquet(out / "profiles.parquet")
    profiles = profiles[profiles["Metadata_split"] == "test"].reset_index(drop=True)
    key = PackedDataset(tiny_packed).metadata.drop_duplicates("id_code").set_index("id_code")
    profiles["Metadata_sirna"] = key.loc[profiles["Metadata_id_code"], "sirna"].to_numpy()
    features = [c for c in profiles if c.startswith("Cells_CNN_")]
    # phenotypic activity, as copairs' tutorial scores it
    activity = profiles[profiles["Metadata_well_type"].isin(["treatment", "negative_control"])]
    activity = assign_reference_index(
        activity.reset_index(drop=True),
        "Metadata_well_type == 'negative_control'",
        reference_col="Metadata_reference_index",
        default_value=-1,
    )
    by = ["Metadata_sirna", "Metadata_reference_index"]
    ap = average_precision(activity, activity[features].to_numpy(), by, [], [], by,
                           progress_bar=False)  # fmt: skip
    ap = ap[ap["Metadata_well_type"] == "treatment"]
    direct = mean_average_precision(ap, ["Metadata_sirna"], null_size=500, threshold=0.05,
                                    seed=0, progress_bar=False)  # fmt: skip
    assert model["activity"]["map"] == pytest.approx(direct["mean_average_precision"].mean())
    assert model["activity"]["fraction_significant"] == pytest.approx(
        direct["below_corrected_p"].mean()
    )
    treat = profiles[profiles["Metadata_well_type"] == "treatment"].reset_index(drop=True)
    ap = average_precision(treat, treat[features].to_numpy(), ["Metadata_sirna"],
                           ["Metadata_experiment"], [], ["Metadata_sirna"],
                           progress_bar=False)  # fmt: skip
    direct = mean_average_precision(ap, ["Metadata_sirna"], null_size=500, threshold=0.05,
                                    seed=0, progress_bar=False)  # fmt: skip
    assert model["consistency"]["map"] == pytest.approx(direct["mean_average_precision"].mean())
    report = json.loads((out / "report.json").read_text())
    assert report["profiles"]["map"]["consistency"]["map"] == pytest.approx(
        model["consistency"]["map"]
    )  # the ensemble's summary: the same number


def test_synthetic_relationships_are_planted_and_written(tmp_path):
    design = Design(RELATED)
    pairs = design.relationships()
    assert set(pairs["relationship"]) == {"same_gene", "same_pathway"}
    assert (pairs["relationship"] == "same_gene").sum() == 16  # 16 genes of 2 siRNAs
    assert (pairs["relationship"] == "same_pathway").sum() == 8 * 4  # 8 pathways of 2 genes
    assert (pairs["sirna_a"] < pairs["sirna_b"]).all()
    cos = design.phenotypes[:32] @ design.phenotypes[:32].T
    cos /= np.outer(*[np.linalg.norm(design.phenotypes[:32], axis=1)] * 2)
    same_gene = pairs[pairs["relationship"] == "same_gene"]
    assert cos[same_gene["sirna_a"], same_gene["sirna_b"]].mean() > 0.7
    assert np.abs(cos[np.triu_indices(32, 1)]).mean() < 0.4
    plate = design.plates(["HEPG2-01"])[0]
    assert sum(label == RELATED.n_classes - 1 for label in plate.wells.values()) == 4
    assert Design(TINY).relationships().empty
    out = tmp_path / "raw"
    write_dataset(RELATED, out, experiments=["HEPG2-01"], progress=False)
    back = read_relationships(out / "relationships.csv")
    pd.testing.assert_frame_equal(back, pairs)
    assert "sirnas_per_gene" in (out / "synthetic.json").read_text()


def test_relationship_table_errors_name_the_file_and_row(tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match=r"pairs.csv: missing column\(s\) \['sirna_a', 'sirna_b'\]"):
        read_relationships(bad)
    bad.write_text("sirna_a,sirna_b\n1,2\n3,x\n")
    with pytest.raises(UserError, match=r"pairs.csv: row 3: sirna_b 'x' is not a sirna id"):
        read_relationships(bad)
    with pytest.raises(UserError, match="no such relationship table"):
        read_relationships(tmp_path / "missing.csv")


def test_recall_is_the_random_rate_for_random_profiles_and_above_for_planted():
    design = Design(RELATED)
    labels = np.repeat(np.arange(32), 4)
    meta = pd.DataFrame({"Metadata_sirna": pd.array(labels, dtype="Int64"),
                         "Metadata_well_type": "treatment"})  # fmt: skip
    rng = np.random.default_rng(0)
    pairs = design.relationships()
    planted = design.phenotypes[labels] + rng.normal(0, 0.01, (len(labels), 17))
    good = relationship_recall(meta, planted, pairs)
    assert good["random_rate"] == pytest.approx(0.1, abs=0.01)
    assert good["by_relationship"]["same_gene"]["recall"] > 0.6
    rates = [relationship_recall(meta, rng.normal(size=(len(labels), 17)), pairs)["recall"]
             for _ in range(20)]  # fmt: skip
    assert abs(np.mean(rates) - 0.1) < 0.05


def phenotype_store(out, data, design: Design, informative: bool, seed: int):
    """A predictions store whose embeddings are the design's phenotypes (or noise) + batch."""
    packed = PackedDataset(data)
    table = packed.metadata
    classes = tuple(range(design.config.n_classes))
    dim = design.phenotypes.shape[1]
    info = PredictionInfo(setup="test/phenotype", run=str(out), iteration=1, classes=classes,
                          tta="none", channels=(1, 2, 3, 4, 5, 6), embedding_dim=dim,
                          dataset=str(data), code_version="test")  # fmt: skip
    path = create_store(out, info, packed, packed.plate_keys())
    rng = np.random.default_rng(seed)
    scale = np.abs(design.phenotypes).max()
    for key in packed.plate_keys():
        experiment, plate = key.split("/Plate")
        part = table[(table["experiment"] == experiment) & (table["plate"] == int(plate))]
        wells = part.drop_duplicates("id_code")
        sites = packed.info.n_sites
        emb = rng.normal(0, 0.1 * scale, (len(wells), sites, dim)) + rng.normal(0, scale, dim)
        if informative:
            emb += design.phenotypes[wells["sirna"].astype(int).to_numpy()][:, None]
        logits = rng.normal(size=(len(wells), sites, len(classes)))
        write_wells(path, key, list(zip(wells["row"], wells["col"], strict=True)), logits, emb)
    return path


@pytest.fixture(scope="module")
def related(tmp_path_factory):
    root = tmp_path_factory.mktemp("related")
    write_dataset(RELATED, root / "raw", workers=2, progress=False)
    pack_dataset(root / "raw", root / "dataset", workers=2, progress=False)
    return root


def test_benchmark_of_two_stores_writes_the_table_and_the_polar_plot(related):
    design, data = Design(RELATED), related / "dataset"
    phenotype_store(related / "good", data, design, informative=True, seed=1)
    phenotype_store(related / "noise", data, design, informative=False, seed=2)
    bench_dir = related / "bench"
    result = run_script(BENCHMARK, related / "good", related / "noise", "--data", data,
                        "--out", bench_dir, "--names", "planted,noise", "--relationships",
                        related / "raw" / "relationships.csv", "--null-size", "1000",
                        "--align", "standardize")  # fmt: skip
    assert result.returncode == 0, result.stderr
    bench = json.loads((bench_dir / "benchmark.json").read_text())
    good, noise = bench["models"]
    assert [good["name"], noise["name"]] == ["planted", "noise"]
    assert good["relationships"]["recall"] > 2.5 * good["relationships"]["random_rate"]
    assert abs(noise["relationships"]["recall"] - noise["relationships"]["random_rate"]) < 0.1
    assert good["activity"]["map"] > noise["activity"]["map"] + 0.2
    assert good["consistency"]["map"] > noise["consistency"]["map"] + 0.2
    assert good["linear_probe"]["accuracy"] > 0.8 > noise["linear_probe"]["accuracy"] + 0.4
    assert good["rotation"] is None  # the crafted stores' runs are not reachable
    md = (bench_dir / "benchmark.md").read_text()
    assert "| metric | planted | noise | meaning |" in md
    assert f"{good['activity']['map']:.3f}" in md and "relationship recall" in md
    assert "| activity mAP |" in result.stdout
    with Image.open(bench_dir / "benchmark.png") as image:
        assert image.size[0] > 400 and image.size[1] > 300
    result = run_script(BENCHMARK, related / "good", "--data", data, "--out", bench_dir,
                        "--names", "a,b")  # fmt: skip
    assert result.returncode == 1 and "--names: need 1 distinct names" in result.stderr
    assert "Traceback" not in result.stderr
