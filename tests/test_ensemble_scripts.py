"""The 04_ensemble scripts end to end on a real predictions store over the tiny dataset."""

import json

import pandas as pd
import pytest
from PIL import Image

from cellblock.data.labels import read_pseudo_labels
from cellblock.ensemble.submission import expected_ids, validate_submission
from cellblock.screen.sites import select_sites, well_table
from cellblock.store.packed import PackedDataset
from tests.conftest import ROOT, run_script
from tests.test_ensemble_combine import crafted_store, split_plates

ENSEMBLE = ROOT / "04_ensemble" / "ensemble.py"
EVALUATE = ROOT / "04_ensemble" / "evaluate.py"
PSEUDO = ROOT / "04_ensemble" / "make_pseudo_labels.py"


@pytest.fixture(scope="module")
def ensembled(tiny_packed, tmp_path_factory):
    """A noisy store (argmax often wrong) and the ensemble's output on it."""
    root = tmp_path_factory.mktemp("ensemble")
    store = crafted_store(root / "pred", tiny_packed, signal=1.5, noise=1.0, seed=3,
                          plates=split_plates(tiny_packed))  # fmt: skip
    out = root / "out"
    result = run_script(ENSEMBLE, root / "pred", "--data", tiny_packed, "--out", out, cwd=root)
    assert result.returncode == 0, result.stderr
    return store, out, result


@pytest.mark.slow
def test_ensemble_writes_submission_report_and_plots(tiny_packed, ensembled):
    _, out, result = ensembled
    report = json.loads((out / "report.json").read_text())
    acc = report["accuracy"]
    argmax, assigned = acc["argmax"]["overall"], acc["assigned"]["overall"]
    last = result.stdout.strip().splitlines()[-1]
    assert last == (
        "accuracy, test split (4 experiments, 64 treatment wells): "
        f"argmax {argmax:.4f} -> assigned {assigned:.4f}"
    )
    assert argmax < 0.8 and assigned >= argmax + 0.1  # the plate step is worth it
    assert set(acc["assigned"]["per_cell_type"]) == {"HEPG2", "HUVEC", "RPE", "U2OS"}
    assert len(acc["assigned"]["per_experiment"]) == 4
    assert report["inputs"][0]["setup"] == "test/crafted"
    assert report["groups"]["detection_accuracy"] == 1.0
    assert report["profiles"]["map"]["consistency"]["n_wells"] == 64
    assert f"copairs mAP activity {report['profiles']['map']['activity']['map']:.4f}" in (
        result.stdout
    )
    # the submission: every test treatment well once, labels in range
    sub = pd.read_csv(out / "submission.csv")
    wells, _ = well_table(select_sites(PackedDataset(tiny_packed).metadata, "test"))
    validate_submission(sub, expected_ids(wells), 19)
    for name in ("accuracy_per_experiment.png", "accuracy_per_cell_type.png", "plate_maps.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 200 and image.size[1] > 100
    md = (out / "report.md").read_text()
    assert f"**{assigned:.4f}**" in md and "plate_maps.png" in md
    profiles = pd.read_parquet(out / "profiles.parquet")
    assert len(profiles) == len(wells) and "Cells_CNN_0007" in profiles
    treatments = profiles["Metadata_well_type"] == "treatment"
    assert profiles.loc[treatments, "Metadata_sirna"].isna().all()  # hidden


@pytest.mark.slow
def test_evaluate_agrees_with_the_report(tiny_packed, ensembled):
    _, out, _ = ensembled
    report = json.loads((out / "report.json").read_text())
    scores = out / "scores.json"
    result = run_script(EVALUATE, out / "submission.csv", "--data", tiny_packed, "--json", scores)
    assert result.returncode == 0, result.stderr
    assert json.loads(scores.read_text()) == report["accuracy"]["assigned"]
    assert f"{report['accuracy']['assigned']['overall']:.4f}" in result.stdout
    broken = out / "broken.csv"
    pd.read_csv(out / "submission.csv").iloc[1:].to_csv(broken, index=False)
    result = run_script(EVALUATE, broken, "--data", tiny_packed)
    assert result.returncode == 1
    assert "broken.csv: 1 id_code(s) of the split missing" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_pseudo_labels_are_what_training_reads(tiny_packed, ensembled, tmp_path):
    _, out, _ = ensembled
    table = PackedDataset(tiny_packed).metadata
    csv = tmp_path / "pseudo.csv"
    result = run_script(PSEUDO, out, "--data", tiny_packed, "--out", csv)
    assert result.returncode == 0, result.stderr
    labels = read_pseudo_labels(csv, table)
    assert len(labels) == 64  # every test treatment well
    wells = pd.read_parquet(out / "wells.parquet").set_index("id_code")
    assert (labels["sirna"].to_numpy() == wells.loc[labels["id_code"], "assigned"]).all()
    confident = tmp_path / "confident.csv"
    result = run_script(PSEUDO, out, "--data", tiny_packed, "--out", confident,
                        "--min-confidence", "0.9")  # fmt: skip
    assert result.returncode == 0, result.stderr
    kept = read_pseudo_labels(confident, table)
    assert 0 < len(kept) < len(labels) and (kept["confidence"] >= 0.9).all()
    result = run_script(PSEUDO, tmp_path, "--data", tiny_packed, "--out", tmp_path / "x.csv")
    assert result.returncode == 1 and "run 04_ensemble/ensemble.py first" in result.stderr
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.slow
def test_bad_input_is_a_clear_error(tiny_packed, ensembled, tmp_path):
    store, _, _ = ensembled
    plates = split_plates(tiny_packed)
    other = crafted_store(tmp_path / "other", tiny_packed, classes=tuple(range(10)),
                          plates=plates)  # fmt: skip
    out = tmp_path / "out"
    result = run_script(ENSEMBLE, store, other, "--data", tiny_packed, "--out", out)
    assert result.returncode == 1
    assert "error: " in result.stderr and "predicts other classes" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "submission.csv").exists()  # nothing half-written
    result = run_script(ENSEMBLE, store, "--data", tiny_packed, "--out", out, "--split", "train")
    assert result.returncode == 1 and "no predictions for plate" in result.stderr
    result = run_script(ENSEMBLE, store, "--data", tiny_packed, "--out", out, "--no-assign")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert "assigned" not in report["accuracy"] and report["plate_step"] == "none (argmax)"
    assert (
        result.stdout.strip()
        .splitlines()[-1]
        .endswith(f"argmax {report['accuracy']['argmax']['overall']:.4f}")
    )
