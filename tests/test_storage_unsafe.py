"""Untrusted object keys, against a server that stores them (moto's; SeaweedFS refuses them)."""

import os
import shutil
import socket
import subprocess
import sys
import time

import boto3
import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def moto_endpoint():
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, f"moto_server exited with {proc.returncode}"
                assert time.time() < deadline, f"moto_server not listening on {url} in 120 s"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("bad", ["p/../escape.txt", "p/../../escape.txt", "p//double.txt",
                                 "p/a\\b.txt", "p/./dot.txt"])  # fmt: skip
def test_unsafe_key_is_refused_and_nothing_written(moto_endpoint, tmp_path, bad):
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")  # fmt: skip
    bucket = f"b{abs(hash(bad)) % 10**8}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="p/ok.txt", Body=b"fine")
    client.put_object(Bucket=bucket, Key=bad, Body=b"evil")
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert bad in listed, f"the server normalized {bad!r}: {listed}"
    out = tmp_path / "a" / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "01_data" / "fetch_data.py"), "--bucket", bucket,
         "--prefix", "p/", "--endpoint-url", moto_endpoint, "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "refusing object key" in result.stderr and repr(bad) in result.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], written  # not the bad key, not even the good one
