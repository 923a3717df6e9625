#!/usr/bin/env bash
# Build cell.sif from containers/cell.def with Apptainer (or SingularityCE/PRO).
#
#   containers/build.sh [--out PATH] [--fakeroot] [--remote] [--sandbox] [-- BUILD_ARGS...]
#
#   --out PATH   image to write (default: cell.sif in the project root)
#   --fakeroot   build without root: needs /etc/subuid and /etc/subgid entries for your
#                user (an admin runs `apptainer config fakeroot --add $USER`), or
#                Apptainer >= 1.1 with unprivileged user namespaces, which most HPC login
#                nodes allow. The usual choice on a cluster.
#   --remote     SingularityCE only: build on Sylabs' remote builder (after
#                `singularity remote login`; the build context is uploaded). Apptainer has
#                no remote builder: build where you have root or fakeroot, then copy the
#                .sif, or pull it from an OCI registry (apptainer push/pull oras://...).
#   --sandbox    a writable folder instead of a .sif (for debugging the recipe)
#
# Notes:
#   - Runs from the project root: the %files paths of cell.def are relative to it.
#   - Needs internet (Docker Hub's python:3.11-slim-bookworm, PyPI) and ~15 GB free in
#     $APPTAINER_TMPDIR (default /tmp; point it at scratch on a cluster node), plus the
#     layer cache in $APPTAINER_CACHEDIR (default ~/.apptainer/cache).
#   - The install step is scripts/install.sh, the one `make env` and CI use, so the image
#     holds the tested stack. torch resolves to PyPI's CUDA build (~5 GB with its libraries).
#   - The build ends with cell.def's %test (the smoke test, CPU). On a GPU node check CUDA:
#       apptainer exec --nv cell.sif python -m cellblock.cluster.smoke --require-cuda
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/cell.sif"
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --out=*) out="${1#--out=}"; shift ;;
        --fakeroot|--remote|--sandbox) args+=("$1"); shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        --) shift; args+=("$@"); break ;;
        *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
runtime="$(command -v apptainer || command -v singularity || true)"
if [ -z "$runtime" ]; then
    echo "build.sh: neither apptainer nor singularity is on PATH (module load apptainer?)" >&2
    exit 1
fi
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$root"
echo "building $out with $(basename "$runtime") ${args[*]:-}" >&2
exec "$runtime" build "${args[@]}" "$out" containers/cell.def
