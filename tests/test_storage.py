"""Fetching and publishing against a real S3 server (SeaweedFS on 127.0.0.1)."""

import filecmp
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cellblock.devservices import s3
from cellblock.remote.storage import Remote, list_objects, make_client, upload_folder
from tests.conftest import ROOT
from tests.fixtures_s3 import restart_s3

FETCH = ROOT / "01_data" / "fetch_data.py"
PUBLISH = ROOT / "scripts" / "publish.py"


def files_of(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
        and p.name != "manifest.json"
    )  # fmt: skip


def assert_same_tree(a: Path, b: Path) -> None:
    names = files_of(a)
    assert names == files_of(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, mismatch[:5]


def script_env(server, keys=False, secret=None) -> dict:
    """This environment without AWS settings, plus the endpoint (and the admin keys)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ENDPOINT_URL"] = server.endpoint_url
    if keys:
        env["AWS_ACCESS_KEY_ID"] = server.access_key
        env["AWS_SECRET_ACCESS_KEY"] = secret or server.secret_key
    return env


def run(script, server, *args, keys=False, secret=None, timeout=120):
    """Run a script anonymously (only the endpoint in its env) or with the admin keys."""
    env = script_env(server, keys, secret)
    cmd = [sys.executable, str(script), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def start_fetch(server, out: Path, n_files: int, *extra: str) -> subprocess.Popen:
    """Start a one-thread anonymous fetch and return once it has written ``n_files`` PNGs."""
    args = fetch_args(server, out, "--workers", "1", *extra)
    cmd = [sys.executable, str(FETCH), *map(str, args)]
    proc = subprocess.Popen(cmd, env=script_env(server), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.rglob("*.png"))) < n_files:
        time.sleep(0.01)
    assert proc.poll() is None, "the fetch ended before the interruption"
    return proc


def n_fetched(stdout: str) -> int:
    return int(re.search(r": (\d+) file\(s\)", stdout).group(1))


@pytest.fixture(scope="module")
def published(s3_server, tiny_raw, tmp_path_factory):
    """Two experiments of the tiny raw tree in the public bucket, published with the CLI."""
    src = tmp_path_factory.mktemp("src") / "raw"
    shutil.copytree(tiny_raw, src, ignore=shutil.ignore_patterns("HUVEC-*", "RPE-*", "U2OS-*"))
    result = run(PUBLISH, s3_server, src, "--bucket", s3_server.public_bucket,
                 "--prefix", "tiny/raw", keys=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert s3_server.secret_key not in result.stdout + result.stderr
    return src


def fetch_args(server, out, *extra):
    return ["--bucket", server.public_bucket, "--prefix", "tiny/raw/", "--anonymous",
            "--out", out, *extra]  # fmt: skip


def test_anonymous_fetch_equals_the_source(s3_server, published, tmp_path):
    out = tmp_path / "out"
    result = run(FETCH, s3_server, *fetch_args(s3_server, out))
    assert result.returncode == 0, result.stderr
    assert_same_tree(published, out)
    assert "0 already present" in result.stdout
    again = run(FETCH, s3_server, *fetch_args(s3_server, out))
    assert n_fetched(again.stdout) == 0, again.stdout


def test_fetch_a_subset_by_experiment_and_plate(s3_server, published, tmp_path):
    out = tmp_path / "out"
    result = run(FETCH, s3_server, *fetch_args(s3_server, out, "--experiments",
                                               "HEPG2-02/Plate3"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = files_of(out)
    assert "train.csv" in got and "test.csv" in got
    images = [n for n in got if n.endswith(".png")]
    assert images and all(n.startswith("test/HEPG2-02/Plate3/") for n in images)
    assert len(images) == len(list((published / "test/HEPG2-02/Plate3").iterdir()))


def test_resume_refetches_only_missing_partial_and_damaged(s3_server, published, tmp_path):
    out = tmp_path / "out"
    assert run(FETCH, s3_server, *fetch_args(s3_server, out)).returncode == 0
    pngs = sorted(out.rglob("*.png"))
    pngs[0].unlink()  # missing
    pngs[1].write_bytes(pngs[1].read_bytes()[:50])  # partial
    data = bytearray(pngs[2].read_bytes())
    data[-20] ^= 0xFF  # same size, wrong bytes
    pngs[2].write_bytes(bytes(data))
    result = run(FETCH, s3_server, *fetch_args(s3_server, out))
    assert result.returncode == 0, result.stderr
    assert n_fetched(result.stdout) == 3, result.stdout
    assert_same_tree(published, out)


@pytest.mark.slow
def test_killed_fetch_resumes_with_only_whats_missing(s3_server, published, tmp_path):
    out = tmp_path / "out"
    proc = start_fetch(s3_server, out, 40)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    have = list(out.rglob("*.png"))
    total = len(list(published.rglob("*.png")))
    assert 40 <= len(have) < total, "killed too late to prove anything"
    for path in have:  # nothing partial under a final name
        assert path.read_bytes() == (published / path.relative_to(out)).read_bytes()
    result = run(FETCH, s3_server, *fetch_args(s3_server, out))
    assert result.returncode == 0, result.stderr
    assert n_fetched(result.stdout) <= total - len(have) + 8, result.stdout  # + tables, manifest
    assert_same_tree(published, out)


@pytest.mark.slow
def test_server_restart_mid_fetch_is_retried(s3_server, published, tmp_path):
    out = tmp_path / "out"
    proc = start_fetch(s3_server, out, 20)
    restart_s3(s3_server)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert "retrying" in stderr
    assert_same_tree(published, out)


def test_server_down_fails_cleanly(s3_server, published, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    result = run(FETCH, s3_server, "--bucket", "b", "--anonymous", "--out", out, "--retries",
                 "3", "--endpoint-url", f"http://127.0.0.1:{port}", timeout=180)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: s3://b/")
    assert "cannot reach the endpoint" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bucket", "no-such-bucket", "--anonymous"], "no-such-bucket"),
        (["--bucket", "PUBLIC", "--prefix", "nothing/here/", "--anonymous"],
         "no objects under this prefix"),
        (["--bucket", "PRIVATE", "--anonymous"], "access denied"),
        (["--dataset", "nope"], "unknown dataset 'nope'; known: demo, rxrx1"),
    ],
)  # fmt: skip
def test_clear_errors(s3_server, tmp_path, args, message):
    names = {"PUBLIC": s3_server.public_bucket, "PRIVATE": s3_server.private_bucket}
    args = [names.get(a, a) for a in args]
    result = run(FETCH, s3_server, *args, "--out", tmp_path / "out")
    assert result.returncode == 1, result.stdout
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_private_bucket_needs_the_right_keys(s3_server, published, tmp_path):
    up = run(PUBLISH, s3_server, published, "--bucket", s3_server.private_bucket,
             "--prefix", "lab/raw", keys=True)  # fmt: skip
    assert up.returncode == 0, up.stderr
    args = ["--bucket", s3_server.private_bucket, "--prefix", "lab/raw/", "--out", tmp_path / "ok"]
    ok = run(FETCH, s3_server, *args, keys=True)
    assert ok.returncode == 0, ok.stderr
    assert_same_tree(published, tmp_path / "ok")
    wrong = "W" * len(s3_server.secret_key)
    bad = run(FETCH, s3_server, *args[:-1], tmp_path / "bad", keys=True, secret=wrong)
    assert bad.returncode == 1 and "access denied" in bad.stderr
    for text in (ok.stdout, ok.stderr, bad.stdout, bad.stderr):
        assert s3_server.secret_key not in text and wrong not in text


def test_multipart_object_without_manifest_is_verified_by_etag(s3_server, tmp_path):
    blob = tmp_path / "src" / "big.bin"
    blob.parent.mkdir()
    blob.write_bytes(os.urandom(9 * 2**20))  # > 8 MiB: uploaded in parts
    client = s3.client(s3_server)
    client.upload_file(str(blob), s3_server.public_bucket, "big/big.bin")
    etag = client.head_object(Bucket=s3_server.public_bucket, Key="big/big.bin")["ETag"]
    assert "-" in etag, "expected a multipart ETag"
    args = ["--bucket", s3_server.public_bucket, "--prefix", "big/", "--anonymous",
            "--out", tmp_path / "out"]  # fmt: skip
    assert run(FETCH, s3_server, *args).returncode == 0
    got = tmp_path / "out" / "big.bin"
    assert got.read_bytes() == blob.read_bytes()
    data = bytearray(got.read_bytes())
    data[123] ^= 1
    got.write_bytes(bytes(data))
    again = run(FETCH, s3_server, *args)
    assert n_fetched(again.stdout) == 1 and got.read_bytes() == blob.read_bytes()


def test_upload_folder_api_writes_manifest_last(s3_server, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model_1000.pt").write_bytes(b"x" * 1000)
    remote = Remote(s3_server.public_bucket, "runs/x", s3_server.endpoint_url)
    summary = upload_folder(s3.client(s3_server), remote, folder, progress=False)
    assert summary == {"files": 1, "bytes": 1000}
    keys = [o["Key"] for o in s3.client(s3_server).list_objects_v2(
        Bucket=s3_server.public_bucket, Prefix="runs/x/")["Contents"]]  # fmt: skip
    assert sorted(keys) == ["runs/x/manifest.json", "runs/x/model_1000.pt"]


def test_fetch_checkpoint_picks_iteration_from_the_registry(s3_server, tmp_path):
    run_dir = tmp_path / "published_run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("lr: 0.1\n")
    for it in (100, 200):
        (run_dir / "checkpoints" / f"model_{it}.pt").write_bytes(os.urandom(2000 + it))
    up = run(PUBLISH, s3_server, run_dir, "--bucket", s3_server.public_bucket,
             "--prefix", "checkpoints/synthetic/tiny", keys=True)  # fmt: skip
    assert up.returncode == 0, up.stderr
    script = ROOT / "01_data" / "fetch_checkpoint.py"
    latest = run(script, s3_server, "--setup", "02_train/synthetic/tiny", "--out", tmp_path / "a")
    assert latest.returncode == 0, latest.stderr
    assert "iteration 200" in latest.stdout
    assert files_of(tmp_path / "a") == ["checkpoints/model_200.pt", "config.yaml"]
    assert (tmp_path / "a/checkpoints/model_200.pt").read_bytes() == (
        run_dir / "checkpoints/model_200.pt"
    ).read_bytes()
    older = run(script, s3_server, "--setup", "02_train/synthetic/tiny", "--iteration", "100",
                "--out", tmp_path / "b")  # fmt: skip
    assert files_of(tmp_path / "b") == ["checkpoints/model_100.pt", "config.yaml"]
    missing = run(script, s3_server, "--setup", "02_train/synthetic/tiny", "--iteration", "300",
                  "--out", tmp_path / "c")  # fmt: skip
    assert missing.returncode == 1 and "published: [100, 200]" in missing.stderr
    unknown = run(script, s3_server, "--setup", "02_train/rxrx1/nothing", "--out", tmp_path / "d")
    assert (
        unknown.returncode == 1 and "no published checkpoints for 'rxrx1/nothing'" in unknown.stderr
    )
    assert older.returncode == 0


def test_listing_is_paginated(s3_server, published):
    remote = Remote(s3_server.public_bucket, "tiny/raw/", s3_server.endpoint_url, anonymous=True)
    client = make_client(remote)
    calls = []
    client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: calls.append(1))
    objects = list_objects(client, remote, page_size=7)
    n_files = len(files_of(published)) + 1  # + manifest.json
    assert len(objects) == n_files and len({o.key for o in objects}) == n_files
    assert len(calls) == -(-n_files // 7)


def test_named_profile_supplies_the_keys(s3_server, published, tmp_path):
    up = run(PUBLISH, s3_server, published, "--bucket", s3_server.private_bucket,
             "--prefix", "profiled", keys=True)  # fmt: skip
    assert up.returncode == 0, up.stderr
    creds = tmp_path / "credentials"
    creds.write_text(f"[lab]\naws_access_key_id = {s3_server.access_key}\n"
                     f"aws_secret_access_key = {s3_server.secret_key}\n")  # fmt: skip
    env = script_env(s3_server) | {"AWS_SHARED_CREDENTIALS_FILE": str(creds),
                                   "AWS_CONFIG_FILE": str(tmp_path / "none")}  # fmt: skip
    cmd = [sys.executable, str(FETCH), "--bucket", s3_server.private_bucket, "--prefix",
           "profiled/", "--profile", "lab", "--out", str(tmp_path / "out")]  # fmt: skip
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert_same_tree(published, tmp_path / "out")
    cmd[cmd.index("lab")] = "nobody"
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "AWS profile 'nobody' not found" in bad.stderr


@pytest.mark.slow
def test_server_dying_mid_fetch_fails_cleanly(published, tmp_path):
    server = s3.start(tmp_path / "s3")
    try:
        up = run(PUBLISH, server, published, "--bucket", server.public_bucket,
                 "--prefix", "tiny/raw", keys=True)  # fmt: skip
        assert up.returncode == 0, up.stderr
        out = tmp_path / "out"
        proc = start_fetch(server, out, 20, "--retries", "3")
    finally:
        s3.stop(tmp_path / "s3")
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: s3://") and "attempt(s)" in last, stderr[-1500:]
    assert not list(out.rglob("*.part")), "a temp file was left behind"
    for path in out.rglob("*.png"):  # whatever has its final name is whole
        assert path.read_bytes() == (published / path.relative_to(out)).read_bytes()


@pytest.mark.slow
def test_full_disk_fails_at_once_in_one_line(s3_server, published, tmp_path):
    """ENOSPC is the local disk's fault: no retries with backoff, one line naming the file."""
    from tests.test_disk_full import tmpfs

    with tmpfs(tmp_path / "small", 1) as small:
        start = time.monotonic()
        result = run(FETCH, s3_server, *fetch_args(s3_server, small / "out"))
        elapsed = time.monotonic() - start
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr and "retrying" not in result.stderr
        assert lines[-1].startswith(f"error: {small / 'out'}") and "no space left" in lines[-1]
        assert elapsed < 20, elapsed  # 8 attempts with backoff would take ~30 s per file
        assert not list((small / "out").rglob("*.part"))
