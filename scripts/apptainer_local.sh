#!/usr/bin/env bash
# Find or set up an Apptainer for building and running cell.sif (development, tests, CI).
# Where the host has `apptainer` or `singularity` on PATH, that one is used and nothing is
# installed. Otherwise `install` sets up a local Apptainer from Debian's packages: a Debian
# sid root file system (debootstrap) holding Debian's `apptainer`, under the state folder,
# entered by scripts/apptainer.sh (which then behaves as `apptainer`). Debian bookworm has
# no apptainer package and sid's needs a newer libc than the host's, hence the sid root.
# Idempotent: quick when done. Needs root (debootstrap, mount namespaces, loop devices).
#
#   scripts/apptainer_local.sh install|path|status
#   eval "$(scripts/apptainer_local.sh install)"   # exports CELLBLOCK_APPTAINER for the launchers
#
#   install   set up the local Apptainer if the host has none (~1.5 min, ~570 MB); prints
#             `export CELLBLOCK_APPTAINER=<command>` on stdout, the rest on stderr
#   path      print the command that runs Apptainer: the host's runtime, or
#             <project>/scripts/apptainer.sh once installed (exit 1 when neither)
#   status    say which runtime is used and its version (exit 1 when none)
#
# Environment:
#   APPTAINERLOCAL_DIR     state folder: the sid root, logs (default: <project>/.apptainerlocal)
#   APPTAINERLOCAL_MIRROR  Debian mirror (default: the host's apt source, else deb.debian.org)
#   APPTAINERLOCAL_FORCE   1: use the local Apptainer even where the host has a runtime
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${APPTAINERLOCAL_DIR:-$root/.apptainerlocal}"
sid="$dir/root"
ready="$sid/.cellblock-apptainerlocal"
wrapper="$root/scripts/apptainer.sh"
packages="apptainer debootstrap squashfs-tools ca-certificates"

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; }

host_runtime() {
    [ "${APPTAINERLOCAL_FORCE:-0}" = 1 ] && return 1
    command -v apptainer || command -v singularity
}

mirror() {
    if [ -n "${APPTAINERLOCAL_MIRROR:-}" ]; then echo "$APPTAINERLOCAL_MIRROR"; return; fi
    # The host's Debian source (deb822 .sources or one-line sources.list), not -security.
    local uri
    uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n' \
        | grep -E '/debian/?$' | head -1 || true)"
    [ -n "$uri" ] || uri="$(grep -hE '^deb[[:space:]]' /etc/apt/sources.list 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)"
    echo "${uri:-http://deb.debian.org/debian}"
}

install_local() {
    [ "$(id -u)" -eq 0 ] || { echo "apptainer_local.sh: install needs root" >&2; exit 1; }
    mkdir -p "$dir"
    exec 9>"$dir/install.lock"
    flock 9  # one installer at a time; a second waits, then finds it done
    [ -e "$ready" ] && return 0
    local start=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v debootstrap >/dev/null; then
        echo "apptainer_local.sh: installing debootstrap (host)" >&2
        apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
    fi
    if [ ! -e "$sid/.debootstrap-done" ]; then
        local url
        url="$(mirror)"
        echo "apptainer_local.sh: debootstrap sid from $url into $sid (~45 s)" >&2
        rm -rf "$sid"
        # In a mount namespace of its own, so that what debootstrap mounts (proc, sys)
        # goes away with it, also when it is killed.
        unshare --mount --propagation private \
            debootstrap --variant=minbase sid "$sid" "$url" >"$dir/debootstrap.log" 2>&1 \
            || { echo "apptainer_local.sh: debootstrap failed; see $dir/debootstrap.log" >&2; exit 1; }
        touch "$sid/.debootstrap-done"
    fi
    echo "apptainer_local.sh: apt-get install $packages (in the sid root)" >&2
    # The mirror's sid Release file can be older than its Valid-Until (a frozen snapshot).
    echo 'Acquire::Check-Valid-Until "false";' >"$sid/etc/apt/apt.conf.d/99cellblock-no-valid-until"
    cp /etc/resolv.conf "$sid/etc/resolv.conf"
    # shellcheck disable=SC2016  # expanded by the inner shell
    unshare --mount --propagation private bash -c '
        set -e
        mount -t proc proc "$1/proc"
        mount --rbind /dev "$1/dev"
        mount --rbind /sys "$1/sys"
        chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            sh -c "apt-get update && apt-get install -y --no-install-recommends $2"
    ' bash "$sid" "$packages" >"$dir/apt.log" 2>&1 \
        || { echo "apptainer_local.sh: apt-get failed in the sid root; see $dir/apt.log" >&2; exit 1; }
    # This VM's capability bounding set lacks CAP_SYS_RESOURCE: root builds need --fakeroot
    # (scripts/apptainer.sh adds it), which needs a subordinate id range for root; and
    # root's exec/test must not ask for capabilities it cannot have.
    for f in subuid subgid; do
        grep -q '^root:' "$sid/etc/$f" 2>/dev/null || echo "root:100000:65536" >>"$sid/etc/$f"
    done
    sed -i 's/^root default capabilities = .*/root default capabilities = no/' \
        "$sid/etc/apptainer/apptainer.conf"
    # Mount points scripts/apptainer.sh uses.
    mkdir -p "$sid/.oldroot"
    touch "$sid/etc/hosts"
    chroot "$sid" apptainer --version 2>/dev/null >"$ready"
    echo "apptainer_local.sh: $(cat "$ready") ready in $sid ($((SECONDS - start)) s)" >&2
}

case "${1:-}" in
    install)
        if runtime="$(host_runtime)"; then
            echo "apptainer_local.sh: using the host's $runtime" >&2
        else
            install_local
            runtime="$wrapper"
        fi
        echo "export CELLBLOCK_APPTAINER=$runtime"
        ;;
    path)
        if host_runtime; then exit 0; fi
        if [ -e "$ready" ]; then echo "$wrapper"; exit 0; fi
        echo "apptainer_local.sh: no apptainer or singularity on PATH and no local one" \
            "(run scripts/apptainer_local.sh install)" >&2
        exit 1
        ;;
    status)
        if runtime="$(host_runtime)"; then
            echo "host: $runtime ($("$runtime" --version))"
        elif [ -e "$ready" ]; then
            echo "local: $wrapper ($(cat "$ready"), sid root $sid)"
        else
            echo "none: no apptainer or singularity on PATH and no local one in $dir" \
                "(scripts/apptainer_local.sh install)"
            exit 1
        fi
        ;;
    -h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
