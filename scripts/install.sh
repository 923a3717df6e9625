#!/usr/bin/env bash
# Install the pinned cellblock stack into a virtual environment.
#
# One script for every install path: `make env` on a workstation, CI, and the
# %post section of containers/cell.def, so the container and the tested
# environment are the same stack.
#
#   scripts/install.sh [VENV_DIR]      (default: .venv in the project root)
#
# Environment:
#   PYTHON   interpreter to create the venv with (default: python3.11, else python3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.venv}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating virtual environment $venv ($("$python" --version))"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"cellblock needs Python >= 3.11, this venv has {sys.version.split()[0]}")
PY
# -c constraints.txt pins the transitive dependencies too; torch is pinned in
# requirements.txt only, so pip picks the local CPU wheel here and the CUDA
# build on a GPU host (see shared notes/torch.md).
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    -r "$root/requirements.txt" -c "$root/constraints.txt"
# Packages whose declared dependencies cannot resolve with the stack's pins, installed
# without them: the "# no-deps: NAME==VERSION" lines of requirements.txt (what they
# import is pinned there).
nodeps=$(sed -n 's/^# no-deps: *//p' "$root/requirements.txt")
if [ -n "$nodeps" ]; then
    # shellcheck disable=SC2086  # one argument per pin
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps $nodeps
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -e "$root"
echo "cellblock installed in $venv"
