#!/usr/bin/env bash
# Build cell.sif from containers/cell.def with Apptainer (or SingularityCE/PRO).
#
#   containers/build.sh [--out PATH] [--cpu] [--debootstrap] [--mirror URL]
#                       [--find-links DIR] [--index-url URL] [--extra-index-url URL]
#                       [--ca-certs PATH]... [--zstd] [--fakeroot] [--remote] [--sandbox]
#                       [-- BUILD_ARGS...]
#
#   --out PATH         image to write (default: cell.sif in the project root); written under
#                      a temporary name and renamed, so a failed build leaves no image
#   --cpu              PyTorch's CPU build (torch==<pin>+cpu) instead of PyPI's CUDA build:
#                      a small image that builds and tests in CI in minutes. pip finds it
#                      in --find-links, --index-url or --extra-index-url; with none of them,
#                      on PyTorch's CPU index (https://download.pytorch.org/whl/cpu)
#   --debootstrap      bootstrap Debian bookworm from a Debian mirror (containers/debootstrap.def)
#                      instead of pulling python:3.11-slim-bookworm from Docker Hub; needs
#                      debootstrap on the build host (scripts/apptainer_local.sh has it)
#   --mirror URL       the Debian mirror of --debootstrap (default http://deb.debian.org/debian)
#   --find-links DIR   a local wheel folder pip searches first in the build (copied in for
#                      %post only), e.g. a site's CPU torch wheel
#   --index-url URL, --extra-index-url URL
#                      the site's pip index (replacing PyPI) or an extra one, in the build
#   --ca-certs PATH    a PEM certificate file, or a folder of *.crt files, that the build
#                      trusts and the image keeps in its system bundle: sites behind an
#                      HTTPS proxy need its CA for pip (repeatable)
#   --zstd             compress the image with zstd instead of squashfs's default gzip: as
#                      small, and ~20x faster to compress (10 s instead of 196 s for the CPU
#                      image on 2 cores); the nodes that run it need squashfs zstd support
#                      (Linux >= 4.14, or squashfuse): check before handing it to a cluster
#   --fakeroot         build without root: needs /etc/subuid and /etc/subgid entries for your
#                      user (an admin runs `apptainer config fakeroot --add $USER`), or
#                      Apptainer >= 1.1 with unprivileged user namespaces, which most HPC login
#                      nodes allow. The usual choice on a cluster.
#   --remote           SingularityCE only: build on Sylabs' remote builder (after
#                      `singularity remote login`; the build context is uploaded). Apptainer has
#                      no remote builder: build where you have root or fakeroot, then copy the
#                      .sif, or pull it from an OCI registry (apptainer push/pull oras://...).
#   --sandbox          a writable folder instead of a .sif (for debugging the recipe)
#
# The runtime: $CELLBLOCK_APPTAINER (a command or path, e.g. scripts/apptainer.sh), else
# apptainer, else singularity on PATH. Where the host has neither,
# `eval "$(scripts/apptainer_local.sh install)"` sets up a local Apptainer and the variable.
#
# Notes:
#   - Runs from the project root: the %files paths of cell.def are relative to it.
#   - Needs a registry (Docker Hub) or a Debian mirror (--debootstrap), and PyPI (or the
#     site's index), and ~15 GB free in $APPTAINER_TMPDIR (default /tmp; point it at scratch
#     on a cluster node), plus the layer cache in $APPTAINER_CACHEDIR (~/.apptainer/cache).
#   - The install step is scripts/install.sh, the one `make env` and CI use, so the image
#     holds the tested stack. torch resolves to PyPI's CUDA build (a 3.2 GiB image, 6 GB
#     unpacked, with its libraries) unless --cpu.
#   - The build ends with cell.def's %test (the smoke test, CPU). On a GPU node check CUDA:
#       apptainer exec --nv cell.sif python -m cellblock.cluster.smoke --require-cuda
#   - Example, this project's build machine (Debian mirror + PyPI through an HTTPS proxy,
#     the CPU torch wheel in pip's find-links folder /opt/wheels):
#       containers/build.sh --cpu --debootstrap --find-links /opt/wheels \
#           --ca-certs /usr/local/share/ca-certificates
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/cell.sif"
args=() build_args=() ca_certs=()
torch="" debootstrap=0 mirror="" find_links="" index_url="" extra_index_url="" sandbox=0
need() { [ $# -ge 2 ] || { echo "build.sh: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --out) need "$@"; out="$2"; shift 2 ;;
        --out=*) out="${1#--out=}"; shift ;;
        --cpu) torch=cpu; shift ;;
        --debootstrap) debootstrap=1; shift ;;
        --mirror) need "$@"; mirror="$2"; shift 2 ;;
        --find-links) need "$@"; find_links="$2"; shift 2 ;;
        --index-url) need "$@"; index_url="$2"; shift 2 ;;
        --extra-index-url) need "$@"; extra_index_url="${extra_index_url:+$extra_index_url }$2"; shift 2 ;;
        --ca-certs) need "$@"; ca_certs+=("$2"); shift 2 ;;
        --zstd) args+=(--mksquashfs-args "-comp zstd -Xcompression-level 3"); shift ;;
        --sandbox) sandbox=1; args+=("$1"); shift ;;
        --fakeroot|--remote) args+=("$1"); shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        --) shift; args+=("$@"); break ;;
        *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
runtime="${CELLBLOCK_APPTAINER:-$(command -v apptainer || command -v singularity || true)}"
if [ -z "$runtime" ]; then
    echo "build.sh: neither apptainer nor singularity is on PATH (module load apptainer?;" \
        "without one, eval \"\$(scripts/apptainer_local.sh install)\")" >&2
    exit 1
fi
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$root"

stage=""
cleanup() { [ -z "$stage" ] || rm -rf "$stage"; }
trap cleanup EXIT
staging() {  # a scratch folder for the build's inputs, visible to the runtime (under its tmp)
    if [ -z "$stage" ]; then
        stage="$(mktemp -d "${APPTAINER_TMPDIR:-${TMPDIR:-/tmp}}/cellblock-build.XXXXXX")"
    fi
}
recipe=containers/cell.def
if [ "$debootstrap" = 1 ]; then
    staging
    recipe="$stage/cell.def"
    { grep -v '^#' containers/debootstrap.def \
        | if [ -n "$mirror" ]; then sed "s|^MirrorURL:.*|MirrorURL: $mirror|"; else cat; fi
      sed '/^Bootstrap:/d; /^From:/d' containers/cell.def; } >"$recipe"
fi
if [ -n "$find_links" ] || [ ${#ca_certs[@]} -gt 0 ]; then
    staging
    mkdir -p "$stage/inputs/ca-certificates"
    if [ -n "$find_links" ]; then
        [ -d "$find_links" ] || { echo "build.sh: --find-links $find_links: no such folder" >&2; exit 2; }
        cp -rL "$find_links" "$stage/inputs/wheels"
    fi
    for cert in "${ca_certs[@]}"; do
        if [ -d "$cert" ]; then
            found=("$cert"/*.crt)
            [ -e "${found[0]}" ] || { echo "build.sh: --ca-certs $cert: no *.crt in it" >&2; exit 2; }
            cp -L "${found[@]}" "$stage/inputs/ca-certificates/"
        elif [ -f "$cert" ]; then
            cp -L "$cert" "$stage/inputs/ca-certificates/$(basename "${cert%.*}").crt"
        else
            echo "build.sh: --ca-certs $cert: no such file or folder" >&2; exit 2
        fi
    done
    build_args+=(--build-arg "BUILD_INPUTS=$stage/inputs")
fi
if [ "$torch" = cpu ]; then
    build_args+=(--build-arg TORCH=cpu)
    if [ -z "$find_links$index_url$extra_index_url" ]; then
        extra_index_url=https://download.pytorch.org/whl/cpu
    fi
fi
[ -z "$index_url" ] || build_args+=(--build-arg "PIP_INDEX_URL=$index_url")
[ -z "$extra_index_url" ] || build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra_index_url")

# A .sif is built under a temporary name next to the target, then renamed into place.
target="$out"
[ "$sandbox" = 1 ] || target="$out.partial"
rm -rf "$target"
mkdir -p "$(dirname "$out")"
echo "building $out with $(basename "$runtime") ${args[*]:-} ${build_args[*]:-}" >&2
"$runtime" build "${args[@]}" "${build_args[@]}" "$target" "$recipe"
[ "$sandbox" = 1 ] || mv -f "$target" "$out"
echo "built $out ($(du -sh "$out" | cut -f1))" >&2
