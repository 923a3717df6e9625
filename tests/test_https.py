"""HTTP(S) downloads and remote zips against a real server.

The local SeaweedFS store (``tests/fixtures_s3.py``) serves its public bucket over plain
HTTP with Range support: ``GET http://127.0.0.1:PORT/<bucket>/<key>``, no credentials.
"""

from __future__ import annotations

import io
import itertools
import socket
import uuid
import zipfile
from pathlib import Path

import pytest

import cellblock.remote.httpclient as httpclient
from cellblock.errors import UserError
from cellblock.remote.httpfetch import (
    HttpRangeFile,
    download_url,
    extract_zip,
    fetch_archives,
    open_url,
)
from cellblock.remote.storage import StorageError, UnsafeKeyError

FAST = {"attempts": 3, "backoff": 0.01}  # failing tests give up in milliseconds


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``: relative path -> bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def zip_tree(folder: Path, zip_path: Path, top: str = "rxrx1") -> Path:
    """Zip ``folder`` as ``top/...`` in path order, like RxRx1's zips (PNGs stored)."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr(f"{top}/", "")
        for rel, data in tree(folder).items():
            kind = zipfile.ZIP_STORED if rel.endswith(".png") else zipfile.ZIP_DEFLATED
            zf.writestr(f"{top}/{rel}", data, compress_type=kind)
    return zip_path


@pytest.fixture(scope="module")
def raw_zip(tiny_raw, tmp_path_factory) -> Path:
    return zip_tree(tiny_raw, tmp_path_factory.mktemp("zips") / "rxrx1-images.zip")


@pytest.fixture
def publish(s3_server, s3_client):
    """Upload a local file to the public bucket; returns its anonymous HTTP URL."""
    prefix = f"test-https/{uuid.uuid4().hex[:8]}"

    def upload(path: Path, name: str | None = None) -> str:
        key = f"{prefix}/{name or path.name}"
        s3_client.upload_file(str(path), s3_server.public_bucket, key)
        return f"{s3_server.endpoint_url.rstrip('/')}/{s3_server.public_bucket}/{key}"

    return upload


@pytest.fixture
def zip_url(publish, raw_zip) -> str:
    return publish(raw_zip)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/bucket/rxrx1-images.zip"  # nothing listens there now


def subset(tiny_raw: Path, *folders: str) -> dict[str, bytes]:
    """The expected extraction: top-level files plus the files under ``folders``."""
    return {rel: data for rel, data in tree(tiny_raw).items()
            if "/" not in rel or any(rel.startswith(f + "/") for f in folders)}  # fmt: skip


# ---- download_url -----------------------------------------------------------------------


def test_download_whole(zip_url, raw_zip, tmp_path):
    dest = tmp_path / "dl" / "a.zip"
    got = download_url(zip_url, dest, progress=False)
    assert dest.read_bytes() == raw_zip.read_bytes()
    assert got == raw_zip.stat().st_size
    assert [p.name for p in dest.parent.iterdir()] == ["a.zip"]  # no .part left behind


def test_download_resumes_a_partial_file_with_range(zip_url, raw_zip, tmp_path):
    data = raw_zip.read_bytes()
    dest = tmp_path / "a.zip"
    (tmp_path / ".a.zip.part").write_bytes(data[: len(data) * 3 // 5])
    got = download_url(zip_url, dest, progress=False)
    assert got == len(data) - len(data) * 3 // 5  # only the rest travelled
    assert dest.read_bytes() == data
    assert not (tmp_path / ".a.zip.part").exists()


@pytest.mark.parametrize("extra", [b"", b"garbage past the real end"])
def test_download_part_complete_or_too_long(zip_url, raw_zip, tmp_path, extra):
    data = raw_zip.read_bytes()
    dest = tmp_path / "a.zip"
    (tmp_path / ".a.zip.part").write_bytes(data + extra)  # the server answers 416
    got = download_url(zip_url, dest, progress=False)
    assert dest.read_bytes() == data
    assert got == (len(data) if extra else 0)  # too long: start over; complete: just rename


def test_download_from_a_server_that_ignores_range(zip_url, raw_zip, tmp_path, monkeypatch):
    real = httpclient._get
    sent = []

    def no_range(url, first=None, last=None, timeout=30.0):
        sent.append(first)
        return real(url, None, None, timeout)  # the server sees no Range: 200, whole body

    monkeypatch.setattr(httpclient, "_get", no_range)
    data = raw_zip.read_bytes()
    dest = tmp_path / "a.zip"
    (tmp_path / ".a.zip.part").write_bytes(b"x" * (len(data) // 2))  # wrong bytes too
    assert download_url(zip_url, dest, progress=False) == len(data)
    assert sent == [len(data) // 2]  # a resume was asked for, and a restart handled
    assert dest.read_bytes() == data
    with pytest.raises(httpclient.RangeNotSupportedError, match="Range"):
        HttpRangeFile(zip_url)


class CutAfter:
    """A real response whose body breaks off after ``budget`` bytes (a dropped connection)."""

    def __init__(self, resp, budget: int):
        self.resp, self.budget = resp, budget
        self.status, self.headers, self.reason = resp.status, resp.headers, resp.reason

    def read(self, n: int = -1) -> bytes:
        if self.budget <= 0:
            raise ConnectionResetError("connection reset by peer (test)")
        block = self.resp.read(min(n, self.budget) if n > 0 else self.budget)
        self.budget -= len(block)
        return block

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.resp.close()


def test_dropped_connection_is_resumed_with_range(zip_url, raw_zip, tmp_path, monkeypatch):
    real, sent = httpclient._get, []
    data = raw_zip.read_bytes()

    def flaky(url, first=None, last=None, timeout=30.0):
        sent.append(first)
        resp = real(url, first, last, timeout)
        return CutAfter(resp, len(data) // 3) if len(sent) == 1 else resp

    monkeypatch.setattr(httpclient, "_get", flaky)
    dest = tmp_path / "a.zip"
    assert download_url(dest=dest, url=zip_url, progress=False, **FAST) == len(data)
    assert sent == [None, len(data) // 3]  # the retry asked only for the rest
    assert dest.read_bytes() == data


def test_unreachable_url_fails_clearly_after_retries(tmp_path, caplog):
    url = closed_port_url()
    dest = tmp_path / "a.zip"
    with pytest.raises(StorageError, match=r"after 3 attempt") as err:
        download_url(url, dest, progress=False, **FAST)
    assert url in str(err.value) and "\n" not in str(err.value)
    assert sum("retrying" in r.message for r in caplog.records) == 2
    assert not dest.exists()
    with pytest.raises(StorageError, match="after 3 attempt") as err:
        HttpRangeFile(url, **FAST)
    assert url in str(err.value)


def test_missing_object_fails_at_once(zip_url, tmp_path, caplog):
    url = zip_url.rsplit("/", 1)[0] + "/no-such.zip"
    with pytest.raises(StorageError, match=r"HTTP 40\d") as err:
        download_url(url, tmp_path / "a.zip", progress=False, **FAST)
    assert url in str(err.value)
    assert not any("retrying" in r.message for r in caplog.records)  # 4xx is not retried
    assert list(tmp_path.iterdir()) == []


# ---- HttpRangeFile ----------------------------------------------------------------------


def test_range_file_reads_and_seeks(zip_url, raw_zip):
    data = raw_zip.read_bytes()
    raw = HttpRangeFile(zip_url)
    assert raw.size == len(data) and raw.seekable() and raw.readable()
    assert raw.seek(-100, io.SEEK_END) == len(data) - 100
    assert raw.read(1000) == data[-100:]  # clipped at the end
    assert raw.read(10) == b""
    f = open_url(zip_url, buffer_size=4096)
    f.seek(12345)
    assert f.read(50) == data[12345:12395]
    f.seek(-7, io.SEEK_CUR)
    assert f.read(7) == data[12388:12395]
    assert f.tell() == 12395


# ---- remote zips --------------------------------------------------------------------------


@pytest.mark.parametrize("wanted", [["HEPG2-01"], ["U2OS-02/Plate3"]])
def test_remote_subset_reads_only_the_wanted_members(zip_url, raw_zip, tiny_raw, tmp_path,
                                                     wanted):  # fmt: skip
    raw = HttpRangeFile(zip_url)
    s = extract_zip(raw, tmp_path, strip=1, wanted=wanted, progress=False)
    folder = {"HEPG2-01": "train/HEPG2-01", "U2OS-02/Plate3": "test/U2OS-02/Plate3"}[wanted[0]]
    expected = subset(tiny_raw, folder)
    assert tree(tmp_path) == expected
    assert s == {"extracted": len(expected), "skipped": 0,
                 "bytes": sum(map(len, expected.values()))}  # fmt: skip
    # What must travel: the wanted members (top-level files too), the central directory
    # and its end record; reading through gaps below 64 KiB saves requests. The zip holds
    # 8 experiments x 4 plates, and its central directory is ~11% of it.
    with zipfile.ZipFile(raw_zip) as zf:
        starts = sorted([i.header_offset for i in zf.infolist()] + [zf.start_dir])
        extent = dict(itertools.pairwise(starts))
        needed = raw.size - zf.start_dir + sum(
            extent[i.header_offset] - i.header_offset for i in zf.infolist()
            if i.filename.removeprefix("rxrx1/") in expected)  # fmt: skip
    assert needed <= raw.bytes_read <= needed + 2 * 65536 + 64, (raw.bytes_read, needed)
    assert raw.bytes_read < raw.size * (0.35 if "/" not in wanted[0] else 0.25)
    assert raw.requests <= 8, raw.requests  # runs of adjacent members: one request each


def test_rerun_skips_intact_members_and_repairs_damaged_ones(zip_url, tmp_path):
    first = extract_zip(HttpRangeFile(zip_url), tmp_path, 1, ["HEPG2-01"], progress=False)
    again = HttpRangeFile(zip_url)
    second = extract_zip(again, tmp_path, 1, ["HEPG2-01"], progress=False)
    assert second == {"extracted": 0, "skipped": first["extracted"], "bytes": 0}
    png = next(tmp_path.rglob("*.png"))
    good = png.read_bytes()
    png.write_bytes(bytes(len(good)))  # same size, wrong bytes: the CRC32 notices
    third = extract_zip(HttpRangeFile(zip_url), tmp_path, 1, ["HEPG2-01"], progress=False)
    assert third["extracted"] == 1 and png.read_bytes() == good


def test_unknown_experiment_lists_those_present(zip_url, tmp_path):
    with pytest.raises(UserError, match=r"RPE-09.*HEPG2-01"):
        extract_zip(HttpRangeFile(zip_url), tmp_path, 1, ["RPE-09"], progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["../evil", "/abs", "a\\b", "rxrx1/../../evil"])
def test_unsafe_member_names_are_refused(publish, tmp_path, bad):
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("rxrx1/metadata.csv", "a\n1\n")  # a good member first: it must not land
        zf.writestr(bad, "owned")
    out = tmp_path / "deep" / "out"
    before = sorted(p for p in tmp_path.rglob("*"))
    for source in (zpath, HttpRangeFile(publish(zpath, f"bad-{uuid.uuid4().hex[:6]}.zip"))):
        with pytest.raises(UnsafeKeyError, match="refusing zip member"):
            extract_zip(source, out, strip=1, progress=False)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert not Path("/abs").exists()


# ---- fetch_archives (what 01_data/fetch_data.py --dataset calls) ---------------------------


def test_fetch_archives_subset_across_two_zips(publish, zip_url, raw_zip, tiny_raw, tmp_path):
    meta = zip_tree(tiny_raw / "train" / "HEPG2-01" / "Plate1", tmp_path / "m.zip")  # no EXP
    files = [{"url": publish(meta, "rxrx1-metadata.zip"), "extract": True, "strip": 1},
             {"url": zip_url, "extract": True, "strip": 1}]  # fmt: skip
    out = tmp_path / "out"
    s = fetch_archives(files, out, ["RPE-01/Plate2"], progress=False)
    expected = subset(tiny_raw, "train/RPE-01/Plate2")
    expected.update(tree(tiny_raw / "train/HEPG2-01/Plate1"))
    assert tree(out) == expected
    assert s["extracted"] == len(expected) and s["archives"] == 2
    # One plate of 32, the top-level files and both central directories (~11% of the zip).
    assert 0 < s["downloaded"] < raw_zip.stat().st_size / 4
    assert not (out / ".downloads").exists()


@pytest.mark.slow  # ~4 s: 2,700 members extracted, then all checked again
def test_fetch_archives_whole_then_rerun(zip_url, raw_zip, tiny_raw, tmp_path):
    files = [{"url": zip_url, "extract": True, "strip": 1}]
    s = fetch_archives(files, tmp_path, progress=False)
    assert tree(tmp_path) == tree(tiny_raw)  # the archive itself is gone
    assert s["downloaded"] == raw_zip.stat().st_size and s["skipped"] == 0
    again = fetch_archives(files, tmp_path, progress=False)
    assert again["extracted"] == 0 and again["skipped"] == s["extracted"]
    assert again["downloaded"] == 0  # the central directory said everything is here


@pytest.mark.slow  # ~4 s: a whole fetch, a failure, and a second whole fetch
def test_damaged_download_is_removed_and_refetched(publish, raw_zip, tiny_raw, tmp_path):
    data = bytearray(raw_zip.read_bytes())
    with zipfile.ZipFile(raw_zip) as zf:
        png = next(i for i in zf.infolist() if i.filename.endswith(".png"))
        at = png.header_offset + 30 + len(png.filename) + len(png.extra) + 10  # stored data
    data[at] ^= 0xFF  # one flipped bit in transit: the size is right, the CRC is not
    bad = tmp_path / "bad" / "rxrx1-images.zip"
    bad.parent.mkdir()
    bad.write_bytes(bytes(data))
    url = publish(bad)
    out = tmp_path / "out"
    with pytest.raises(StorageError, match=r"cannot be extracted.*run again") as err:
        fetch_archives([{"url": url, "extract": True, "strip": 1}], out, progress=False)
    assert png.filename in str(err.value)
    assert not (out / ".downloads" / "rxrx1-images.zip").exists()
    assert not any(p.name.endswith(".part") for p in out.rglob("*"))
    publish(raw_zip, url.rsplit("/", 1)[1])  # the server's copy is repaired
    s = fetch_archives([{"url": url, "extract": True, "strip": 1}], out, progress=False)
    assert tree(out) == tree(tiny_raw) and s["skipped"] > 0  # what was good is kept
