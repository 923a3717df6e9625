"""Pytest plugin: one real local S3 server (SeaweedFS on 127.0.0.1) per test session.

Register with ``pytest_plugins = ["tests.fixtures_s3"]`` in ``tests/conftest.py``.

Fixtures: ``s3_server`` (session, a running ``LocalS3``), ``s3_client`` (boto3 with the
admin keys) and ``anon_s3_client`` (unsigned boto3). ``restart_s3(server)`` stops and
starts the server on the same folder and port, e.g. to interrupt a download.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cellblock.devservices import s3
from cellblock.devservices.s3 import LocalS3

__all__ = ["anon_s3_client", "restart_s3", "s3_client", "s3_server"]

REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[LocalS3]:
    """A SeaweedFS S3 server for the whole session, stopped at its end (also on failure)."""
    state_dir = tmp_path_factory.mktemp("s3local")
    try:
        yield s3.start(state_dir)
    finally:
        # By folder, not by pid: restart_s3 may have replaced the process meanwhile.
        s3.stop(state_dir)


def restart_s3(server: LocalS3, timeout: float = 30.0) -> LocalS3:
    """Stop ``server`` and start it again on the same folder and port; return the new one.

    Objects, buckets and keys survive, so ``server``'s endpoint and keys stay valid; only
    the pid changes.

    Args:
        server: A server from ``s3_server`` (or ``s3.start``).
        timeout: Seconds to wait for the restarted server.
    """
    s3.stop(server.state_dir)
    return s3.start(
        server.state_dir,
        port=server.port,
        timeout=timeout,
        public_bucket=server.public_bucket,
        private_bucket=server.private_bucket,
    )


@pytest.fixture
def s3_client(s3_server: LocalS3):
    """A boto3 S3 client with the server's admin keys."""
    return s3.client(s3_server)


@pytest.fixture
def anon_s3_client(s3_server: LocalS3):
    """An unsigned (anonymous) boto3 S3 client for the server."""
    return s3.client(s3_server, anonymous=True)
