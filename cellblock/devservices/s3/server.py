"""What a running local S3 server is to its clients: its address, keys and buckets."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from cellblock.devservices.ports import LOOPBACK

__all__ = [
    "DEFAULT_PRIVATE_BUCKET",
    "DEFAULT_PUBLIC_BUCKET",
    "REGION",
    "LocalS3",
    "S3LocalError",
    "url",
]

DEFAULT_PUBLIC_BUCKET = "cellblock-public"
DEFAULT_PRIVATE_BUCKET = "cellblock-private"
REGION = "us-east-1"


def url(port: int) -> str:
    """``http://127.0.0.1:PORT``."""
    return f"http://{LOOPBACK}:{port}"


class S3LocalError(RuntimeError):
    """The local S3 server could not be started, reached or stopped."""


@dataclass(frozen=True)
class LocalS3:
    """Connection info of a running local S3 server.

    Attributes:
        endpoint_url: ``http://127.0.0.1:PORT``.
        access_key: Admin access key id.
        secret_key: Admin secret key (kept out of ``repr`` so it never lands in a log).
        public_bucket: Bucket that anonymous clients can list and read, but not write.
        private_bucket: Bucket that needs the admin keys for everything.
        state_dir: The server's state folder (keys, config, log, data).
        pid: Process id of ``weed mini``.
        port: S3 port on 127.0.0.1.
    """

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    public_bucket: str
    private_bucket: str
    state_dir: Path
    pid: int
    port: int

    def env(self) -> dict[str, str]:
        """The environment variables that point boto3 and cellblock scripts at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "CELLBLOCK_PUBLIC_BUCKET": self.public_bucket,
            "CELLBLOCK_PRIVATE_BUCKET": self.private_bucket,
        }

    def export_lines(self) -> str:
        """``export NAME=value`` lines (shell-quoted) for ``eval "$(... start)"``."""
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())

    def record(self) -> dict:
        """The fields saved in ``server.json`` (all but the folder that holds the file)."""
        return {k: v for k, v in asdict(self).items() if k != "state_dir"}

    @classmethod
    def from_record(cls, state_dir: Path, info: dict) -> LocalS3:
        """The server that ``info`` (from ``state_dir``'s ``server.json``) describes.

        Raises:
            KeyError, TypeError, ValueError: ``info`` lacks a field or has a bad one.
        """
        values = {f.name: info[f.name] for f in fields(cls) if f.name != "state_dir"}
        values.update(pid=int(values["pid"]), port=int(values["port"]))
        return cls(**values, state_dir=state_dir)
