"""An RxRx1-v1.0-shaped release over HTTPS: fetch one experiment of its zips, then pack it."""

import json
import zipfile

import numpy as np
import pandas as pd

from cellblock.store.packed import PackedDataset
from cellblock.synth import write_dataset
from tests.conftest import ROOT, TINY, run_script


def test_fetch_one_experiment_of_a_v1_release_and_pack_it(s3_server, s3_client, tmp_path):
    release = tmp_path / "release"
    write_dataset(TINY, release, layout="v1", experiments=["HEPG2-01", "RPE-02"], progress=False)
    zips = {"rxrx1-metadata.zip": ["metadata.csv"],
            "rxrx1-images.zip": [str(p.relative_to(release)) for p in
                                 sorted((release / "images").rglob("*.png"))]}  # fmt: skip
    for name, members in zips.items():
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            for member in members:
                z.write(release / member, f"rxrx1/{member}")  # RxRx1 zips have a top folder
        s3_client.upload_file(str(tmp_path / name), s3_server.public_bucket, f"release/{name}")
    base = f"{s3_server.endpoint_url}/{s3_server.public_bucket}/release"
    catalog = tmp_path / "datasets.json"
    catalog.write_text(json.dumps({"mini-rxrx1": {
        "kind": "https", "layout": "v1", "license": "test",
        "files": [{"url": f"{base}/{n}", "extract": True, "strip": 1} for n in zips],
    }}))  # fmt: skip

    raw = tmp_path / "raw"
    fetched = run_script(ROOT / "01_data/fetch_data.py", "--dataset", "mini-rxrx1", "--catalog",
                         catalog, "--out", raw, "--experiments", "RPE-02")  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    assert (raw / "metadata.csv").is_file()
    assert {p.parent.parent.name for p in (raw / "images").rglob("*.png")} == {"RPE-02"}

    assert set(pd.read_csv(raw / "metadata.csv").experiment) == {"HEPG2-01", "RPE-02"}
    packed = run_script(ROOT / "01_data/pack_zarr.py", "--raw", raw, "--out", tmp_path / "ds",
                        "--experiments", "RPE-02", "--verify")  # fmt: skip
    assert packed.returncode == 0, packed.stderr
    ds = PackedDataset(tmp_path / "ds")
    assert ds.plate_keys() == [f"RPE-02/Plate{p}" for p in range(1, 5)]
    site = ds.metadata.iloc[0]
    assert np.asarray(
        ds.read_site(site.experiment, site.plate, site.row, site.col, site.site)
    ).any()
