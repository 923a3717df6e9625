"""Pure logic of fetching: key safety, experiment selection, checksums.

The same paths run against a real S3 server in test_storage.py.
"""

import hashlib

import pytest

from cellblock.errors import ConfigError, UserError
from cellblock.paths import Project
from cellblock.remote.catalog import load_catalog, select_experiments
from cellblock.remote.checksums import Manifest, etag_matches
from cellblock.remote.storage import RemoteObject, UnsafeKeyError, local_path


@pytest.mark.parametrize(
    "key",
    ["p/../evil", "p/../../etc/passwd", "/abs/path", "p//double", "p/a\\b", "p/./x", "p/", "p/a/..",
     "p/nul\x00"],
)  # fmt: skip
def test_unsafe_keys_are_refused(tmp_path, key):
    with pytest.raises(UnsafeKeyError, match="refusing object key"):
        local_path(tmp_path / "out", key, "p/")


def test_safe_keys_map_under_out(tmp_path):
    out = tmp_path / "out"
    assert (
        local_path(out, "p/train/HEPG2-01/Plate1/B02_s1_w1.png", "p/")
        == (out / "train/HEPG2-01/Plate1/B02_s1_w1.png").resolve()
    )
    assert local_path(out, "p/train.csv", "p") == (out / "train.csv").resolve()
    assert local_path(out, "x..y/file", "") == (out / "x..y/file").resolve()


def _objs(*keys):
    return [RemoteObject(k, 1, "e") for k in keys]


def test_select_experiments_and_plates():
    objs = _objs("r/train.csv", "r/train/HEPG2-01/Plate1/a.png", "r/train/HEPG2-01/Plate2/b.png",
                 "r/test/U2OS-02/Plate1/c.png")  # fmt: skip
    keys = [o.key for o in select_experiments(objs, "r/", ["HEPG2-01"])]
    assert keys == ["r/train.csv", "r/train/HEPG2-01/Plate1/a.png", "r/train/HEPG2-01/Plate2/b.png"]
    keys = [o.key for o in select_experiments(objs, "r/", ["HEPG2-01/Plate2", "U2OS-02"])]
    assert keys == ["r/train.csv", "r/train/HEPG2-01/Plate2/b.png", "r/test/U2OS-02/Plate1/c.png"]
    with pytest.raises(UserError, match=r"no objects for \['RPE-03'\].*HEPG2-01"):
        select_experiments(objs, "r/", ["RPE-03"])
    assert select_experiments(objs, "r/", None) == objs


def test_single_and_multipart_etags(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 40000  # ~10 MB: two 8 MiB parts
    path.write_bytes(data)
    assert etag_matches(path, '"' + hashlib.md5(data).hexdigest() + '"')
    parts = [data[: 8 * 2**20], data[8 * 2**20 :]]
    multipart = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2"
    assert etag_matches(path, multipart)
    path.write_bytes(data[:-1] + b"\x00")
    assert not etag_matches(path, multipart)


def test_manifest_round_trip_and_errors(tmp_path):
    (tmp_path / "a").write_bytes(b"hello")
    manifest = Manifest.for_folder(tmp_path, ["a"])
    again = Manifest.from_json(manifest.to_json(), "m")
    assert again.matches("a", tmp_path / "a") is True
    (tmp_path / "a").write_bytes(b"hellO")
    assert again.matches("a", tmp_path / "a") is False
    assert again.matches("b", tmp_path / "a") is None
    with pytest.raises(UserError, match="malformed checksum manifest"):
        Manifest.from_json('{"files": {"a": {"size": 1}}}', "s3://b/manifest.json")


def test_catalog_entries_are_valid(tmp_path):
    catalog = load_catalog(Project.locate(start=__file__).catalog)
    assert catalog["demo"]["kind"] == "s3" and catalog["demo"]["anonymous"]
    assert catalog["rxrx1"]["kind"] == "https" and "CC BY-NC-SA" in catalog["rxrx1"]["license"]
    bad = tmp_path / "datasets.json"
    bad.write_text('{"x": {"kind": "s3", "bucket": "b", "bukket": "c"}}')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['bukket'\]"):
        load_catalog(bad)
