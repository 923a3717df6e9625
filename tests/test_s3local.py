"""The local S3 server (SeaweedFS ``weed mini``): access rules, loopback only, lifecycle, CLI."""

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from cellblock.devservices import s3
from tests.conftest import ROOT
from tests.fixtures_s3 import restart_s3

EXPORTED = [
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "CELLBLOCK_PUBLIC_BUCKET",
    "CELLBLOCK_PRIVATE_BUCKET",
]


def unique_key(name: str) -> str:
    """A key no other test (sharing the session server) writes."""
    return f"test_s3local/{uuid.uuid4().hex[:8]}/{name}"


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def cli(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    """Run ``python -m cellblock.devservices.s3 ARGS`` with this interpreter."""
    return subprocess.run([sys.executable, "-m", "cellblock.devservices.s3", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)  # fmt: skip


def parse_exports(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        assert line.startswith("export "), line
        name, _, value = line[len("export ") :].partition("=")
        out[name] = value
    return out


# ------------------------------------------------------------------- access rules


def test_anonymous_can_list_and_read_the_public_bucket(s3_server, s3_client, anon_s3_client):
    key = unique_key("hello.txt")
    s3_client.put_object(Bucket=s3_server.public_bucket, Key=key, Body=b"hello")
    listed = anon_s3_client.list_objects_v2(Bucket=s3_server.public_bucket, Prefix=key)
    assert [o["Key"] for o in listed["Contents"]] == [key]
    body = anon_s3_client.get_object(Bucket=s3_server.public_bucket, Key=key)["Body"].read()
    assert body == b"hello"


def test_anonymous_cannot_write_the_public_bucket(s3_server, s3_client, anon_s3_client):
    key = unique_key("intruder.txt")
    with pytest.raises(ClientError) as e:
        anon_s3_client.put_object(Bucket=s3_server.public_bucket, Key=key, Body=b"x")
    assert error_code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        s3_client.head_object(Bucket=s3_server.public_bucket, Key=key)
    assert error_code(e) == "404"  # nothing was written


def test_private_bucket_needs_the_keys(s3_server, s3_client, anon_s3_client):
    bucket, key = s3_server.private_bucket, unique_key("secret.txt")
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"private")
    for call in (
        lambda: anon_s3_client.get_object(Bucket=bucket, Key=key),
        lambda: anon_s3_client.list_objects_v2(Bucket=bucket),
        lambda: anon_s3_client.put_object(Bucket=bucket, Key=key, Body=b"x"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "AccessDenied"
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"private"


@pytest.mark.parametrize("wrong", ["secret", "access key"])
def test_wrong_keys_are_rejected(s3_server, wrong):
    access, secret = s3_server.access_key, s3_server.secret_key
    if wrong == "secret":
        secret = "0" * len(secret)
    else:
        access = "CBLK" + "0" * 16
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=access, aws_secret_access_key=secret)  # fmt: skip
    with pytest.raises(ClientError) as e:
        client.list_objects_v2(Bucket=s3_server.private_bucket)
    expected = "SignatureDoesNotMatch" if wrong == "secret" else "InvalidAccessKeyId"
    assert error_code(e) == expected


def test_both_buckets_exist(s3_server, s3_client):
    names = {b["Name"] for b in s3_client.list_buckets()["Buckets"]}
    assert {"cellblock-public", "cellblock-private"} <= names
    assert (s3_server.public_bucket, s3_server.private_bucket) == (
        "cellblock-public",
        "cellblock-private",
    )


# ------------------------------------------------------------------------ network


def test_every_listener_is_on_loopback(s3_server):
    sockets = s3.listening_sockets(s3_server.pid)
    assert ("127.0.0.1", s3_server.port) in sockets
    # weed mini also opens master, volume, filer, admin and gRPC ports: all on loopback.
    assert len(sockets) > 1
    assert {addr for addr, _ in sockets} == {"127.0.0.1"}, sockets


def test_ss_agrees_that_every_listener_is_on_loopback(s3_server):
    """An independent check of the same property with ``ss`` (not our /proc parser)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    mine = [line.split() for line in out.splitlines() if f"pid={s3_server.pid}," in line]
    local = {cols[3] for cols in mine}
    assert f"127.0.0.1:{s3_server.port}" in local
    assert all(addr.startswith("127.0.0.1:") for addr in local), local


def test_secret_is_not_in_repr_or_log(s3_server, s3_client):
    assert s3_server.secret_key not in repr(s3_server)
    wrong = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1",
                         aws_access_key_id=s3_server.access_key,
                         aws_secret_access_key="W" * 40)  # fmt: skip
    with pytest.raises(ClientError):  # a failed signature is the likeliest place to leak it
        wrong.list_buckets()
    s3_client.list_buckets()
    log_text = (s3_server.state_dir / "server.log").read_text()
    assert "Starting SeaweedFS Mini" in log_text
    assert s3_server.secret_key not in log_text
    for path in (s3_server.state_dir / "logs").iterdir():  # weed's own detailed logs
        assert s3_server.secret_key not in path.read_text(errors="replace"), path


def test_state_files_are_private(s3_server):
    for name in ("server.json", "credentials.json", "s3.json"):
        mode = stat.S_IMODE((s3_server.state_dir / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))


# ---------------------------------------------------------------------- lifecycle


def test_restart_keeps_objects_keys_and_port(s3_server, s3_client):
    key = unique_key("survivor.bin")
    payload = os.urandom(300_000)
    s3_client.put_object(Bucket=s3_server.private_bucket, Key=key, Body=payload)
    before = s3.status(s3_server.state_dir)
    after = restart_s3(s3_server)
    assert after.pid != before.pid
    assert (after.port, after.endpoint_url) == (s3_server.port, s3_server.endpoint_url)
    assert (after.access_key, after.secret_key) == (s3_server.access_key, s3_server.secret_key)
    # The client made before the restart still works: same endpoint, same keys.
    got = s3_client.get_object(Bucket=s3_server.private_bucket, Key=key)["Body"].read()
    assert got == payload


@pytest.mark.slow
def test_start_is_idempotent_and_status_is_none_after_stop(tmp_path):
    state = tmp_path / "s3"
    assert s3.status(state) is None
    assert s3.stop(state) is False
    server = s3.start(state)
    try:
        assert s3.start(state) == server  # the running one, not a second process
        assert s3.status(state) == server
        with pytest.raises(s3.S3LocalError, match="already runs"):
            s3.start(state, port=server.port + 1)
    finally:
        assert s3.stop(state) is True
    assert s3.status(state) is None
    assert s3.stop(state) is False
    assert not (state / "server.json").exists()
    # weed leaves /tmp/seaweedfs-<service>-<port>.sock files; stop removes them.
    ports = json.loads((state / "ports.json").read_text()).values()
    assert server.port in ports
    assert not [p for port in ports for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]

    again = s3.start(state)  # same folder, no port: the same port and keys
    try:
        assert (again.port, again.secret_key) == (server.port, server.secret_key)
    finally:
        s3.stop(state)


def test_start_on_a_busy_port_fails_clearly(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(s3.S3LocalError, match=f"port {port} .* in use"):
            s3.start(tmp_path / "s3", port=port)
    assert s3.status(tmp_path / "s3") is None


# ---------------------------------------------------------------------------- CLI


def test_cli_help():
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "start" in result.stdout


def test_cli_status_without_server_fails_in_one_line(tmp_path):
    result = cli("status", "--dir", tmp_path / "none")
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: no local S3 server running")


@pytest.mark.slow
def test_cli_and_wrapper_print_exports_that_work(tmp_path):
    state = tmp_path / "cli"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    try:
        started = cli("start", "--dir", state, env=env)
        assert started.returncode == 0, started.stderr
        exports = parse_exports(started.stdout)
        assert list(exports) == EXPORTED
        secret = exports["AWS_SECRET_ACCESS_KEY"]
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert secret not in started.stderr

        status = cli("status", "--dir", state, env=env)
        assert status.returncode == 0 and status.stdout == started.stdout

        # The wrapper, as a user runs it: eval the exports, then a plain boto3 client
        # (keys and endpoint from the environment) writes to the private bucket.
        script = (
            'eval "$(scripts/s3_local.sh start)" && "$PYTHON" -c "import boto3, os; '
            "boto3.client('s3', region_name='us-east-1').put_object("
            "Bucket=os.environ['CELLBLOCK_PRIVATE_BUCKET'], Key='k', Body=b'v'); print('ok')\""
        )
        wrapper_env = {**env, "PYTHON": sys.executable, "S3LOCAL_DIR": str(state)}
        shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                               env=wrapper_env, cwd=ROOT, timeout=60)  # fmt: skip
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout.strip() == "ok"
        assert secret not in shell.stderr
        help_ = subprocess.run([str(ROOT / "scripts" / "s3_local.sh"), "--help"],
                               capture_output=True, text=True, env=wrapper_env)  # fmt: skip
        assert help_.returncode == 0 and "usage:" in help_.stdout
    finally:
        stopped = cli("stop", "--dir", state, env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == ""
    assert cli("status", "--dir", state, env=env).returncode == 1
    assert secret not in stopped.stderr
    assert secret not in (state / "server.log").read_text()
