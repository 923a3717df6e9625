#!/usr/bin/env bash
# Start, stop or query the local S3 server (SeaweedFS on 127.0.0.1) for development,
# tests and the demo. A thin wrapper around `python -m cellblock.devservices.s3`.
#
#   scripts/s3_local.sh start|stop|status [--port P] [--timeout S]
#   eval "$(scripts/s3_local.sh start)"     # exports AWS_ENDPOINT_URL, the keys, buckets
#
# Environment:
#   PYTHON        interpreter with cellblock installed (default: the project's .venv/bin/python)
#   S3LOCAL_DIR   state folder: keys, config, log, data (default: <project>/.s3local)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
dir="${S3LOCAL_DIR:-$root/.s3local}"

if [ $# -lt 1 ]; then
    echo "usage: $0 start|stop|status [--port P] [--timeout S]" >&2
    exit 2
fi
# PYTHONPATH: the project's package also when the interpreter lacks the editable install.
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m cellblock.devservices.s3 "$@" --dir "$dir"
