"""The state folder: its file names, the admin keys, SeaweedFS identities, the server record.

Files that hold secrets (keys, identities, the server record) are written atomically with
mode 0600 (``devservices.files``). The layout is described in the package docstring
(``cellblock.devservices.s3``).
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from cellblock.devservices.files import read_json, write_atomic
from cellblock.devservices.s3.server import LocalS3

__all__ = [
    "CONFIG_FILE",
    "CREDENTIALS_FILE",
    "DATA_DIR",
    "LOG_FILE",
    "PORTS_FILE",
    "STATE_FILE",
    "WEED_LOG_DIR",
    "prepare",
    "save_server",
]

CREDENTIALS_FILE = "credentials.json"
CONFIG_FILE = "s3.json"
STATE_FILE = "server.json"
PORTS_FILE = "ports.json"
LOG_FILE = "server.log"
WEED_LOG_DIR = "logs"
DATA_DIR = "data"


def _credentials(state_dir: Path) -> tuple[str, str]:
    """Admin (access key, secret key) of ``state_dir``, generated and saved at first use."""
    path = state_dir / CREDENTIALS_FILE
    saved = read_json(path)
    if saved and saved.get("access_key") and saved.get("secret_key"):
        return saved["access_key"], saved["secret_key"]
    # AWS-shaped: 20-character upper-case key id, 40-character secret. Hex only, so
    # the values need no quoting anywhere (shell, URLs, JSON).
    access_key = "CBLK" + secrets.token_hex(8).upper()
    secret_key = secrets.token_hex(20)
    write_atomic(path, json.dumps({"access_key": access_key, "secret_key": secret_key}), 0o600)
    return access_key, secret_key


def _s3_config(access_key: str, secret_key: str, public_bucket: str) -> str:
    """SeaweedFS identities JSON: an admin, and anonymous Read + List on the public bucket."""
    config = {
        "identities": [
            {
                "name": "cellblock-admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {"name": "anonymous", "actions": [f"Read:{public_bucket}", f"List:{public_bucket}"]},
        ]
    }
    return json.dumps(config, indent=2)


def prepare(state_dir: Path, public_bucket: str) -> tuple[str, str]:
    """Make the folders, keys and identities a start needs; return (access key, secret key).

    Args:
        state_dir: The server's state folder (exists).
        public_bucket: The bucket that anonymous clients may list and read.
    """
    data_dir = state_dir / DATA_DIR
    data_dir.mkdir(exist_ok=True)
    (state_dir / WEED_LOG_DIR).mkdir(exist_ok=True)
    # weed mini saves its flags in mini.options and reloads them on the next start; drop
    # it so this command line is the whole configuration (it only caches a volume size).
    (data_dir / "mini.options").unlink(missing_ok=True)
    access_key, secret_key = _credentials(state_dir)
    config = _s3_config(access_key, secret_key, public_bucket)
    write_atomic(state_dir / CONFIG_FILE, config, 0o600)
    return access_key, secret_key


def save_server(server: LocalS3, ports: dict[str, int]) -> None:
    """Record ``server`` and its ports in its ``server.json`` (read by status and stop)."""
    info = {**server.record(), "ports": ports, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_atomic(server.state_dir / STATE_FILE, json.dumps(info, indent=2) + "\n", 0o600)
