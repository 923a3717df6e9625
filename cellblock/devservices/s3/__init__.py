"""A local S3-compatible object store (SeaweedFS ``weed mini``) for development, tests, demo.

One ``weed mini`` process per state folder, bound to 127.0.0.1 only, with two buckets:
a public one (anonymous Read + List, anonymous writes denied) and a private one that needs
the admin keys. The keys are generated at the first start and kept in the state folder,
so a restart on the same folder and port serves the same objects to the same clients.

State folder layout::

    credentials.json   admin access/secret key (0600), generated once
    s3.json            SeaweedFS identities (0600), rewritten at each start
    server.json        connection info of the running server (0600), removed by stop
    ports.json         the ports of the last start, reused when free
    server.log         the server's stdout/stderr (warnings, errors), appended at each start
    logs/              weed's detailed logs, rotated by weed (5 files per level at most)
    data/              SeaweedFS data (master, volumes, filer metadata)

Command line (``start`` and ``status`` print ``export`` lines for ``eval``)::

    python -m cellblock.devservices.s3 start|stop|status [--dir DIR] [--port P]

Modules: ``lifecycle`` (start, status, stop), ``server`` (``LocalS3``, the error),
``state`` (the folder's files), ``ports`` (the ten ports, socket files), ``process``
(weed's command line, its identity), ``ready`` (when a start is done), ``cli`` (the
command line); launch, termination, the readiness poll and the choice of ports are the
shared ``devservices.process`` and ``devservices.ports``.
"""

from cellblock.devservices.ports import listening_sockets
from cellblock.devservices.s3.cli import main
from cellblock.devservices.s3.lifecycle import start, status, stop
from cellblock.devservices.s3.ready import client
from cellblock.devservices.s3.server import (
    DEFAULT_PRIVATE_BUCKET,
    DEFAULT_PUBLIC_BUCKET,
    LocalS3,
    S3LocalError,
)

__all__ = [
    "DEFAULT_PRIVATE_BUCKET",
    "DEFAULT_PUBLIC_BUCKET",
    "LocalS3",
    "S3LocalError",
    "client",
    "listening_sockets",
    "main",
    "start",
    "status",
    "stop",
]
