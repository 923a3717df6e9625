#!/usr/bin/env bash
# `apptainer ARGS...` on any machine of the project: the host's apptainer (or singularity)
# where one is on PATH, else the local Apptainer of scripts/apptainer_local.sh install,
# run in the Debian sid root it lives in. Point the launchers at it with
# `export CELLBLOCK_APPTAINER=$PWD/scripts/apptainer.sh` (what `eval "$(scripts/apptainer_local.sh
# install)"` prints).
#
#   scripts/apptainer.sh build|exec|run|test|inspect|... ARGS...
#   scripts/apptainer.sh exec --nv -B /data,/scratch cell.sif python train.py 100
#
# The local Apptainer runs in a mount namespace of its own (gone when it exits) whose root
# is the sid root, entered with pivot_root (Apptainer refuses a plain chroot). Host paths
# are visible there at the same paths: every top-level folder of the host outside the OS
# (/work, /tmp, /root, /home, /opt, /mnt, /srv, ...) is bind-mounted, so -B binds, the
# working directory, $HOME and the image path mean what they mean on the host. The
# environment is passed on (PATH is the sid root's); `build` gets --fakeroot added where
# root lacks CAP_SYS_RESOURCE (this VM), which a root build of Apptainer needs.
# With either runtime, `--nv` on a machine without an NVIDIA GPU gets a warning (Apptainer
# itself binds nothing and says nothing) and the command still runs, on CPU.
#
# Environment:
#   APPTAINERLOCAL_DIR    state folder of scripts/apptainer_local.sh (default: <project>/.apptainerlocal)
#   APPTAINERLOCAL_BINDS  extra host paths (':'-separated) to bind into the sid root, e.g.
#                         folders under /var or /run that -B names
#   APPTAINERLOCAL_FORCE  1: use the local Apptainer even where the host has a runtime
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${APPTAINERLOCAL_DIR:-$root/.apptainerlocal}"
sid="$dir/root"

if [ "${_APPTAINERLOCAL_NS:-}" != "$sid" ]; then
    case "${1:-}" in -h|--help) [ $# -eq 1 ] && { awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0; } ;; esac
    # The subcommand: the first argument after apptainer's global options (-d, -v, ...).
    sub=""
    for a in "$@"; do case "$a" in -*) ;; *) sub="$a"; break ;; esac; done
    case "$sub" in
        exec|run|shell|test|instance)
            if [[ " $* " == *" --nv "* ]] && ! compgen -G '/dev/nvidia[0-9]*' >/dev/null; then
                echo "apptainer.sh: warning: --nv, but this machine has no NVIDIA GPU" \
                    "(no /dev/nvidia*): the container runs without one, on CPU" >&2
            fi ;;
    esac
    if [ "${APPTAINERLOCAL_FORCE:-0}" != 1 ]; then
        host="$(command -v apptainer || command -v singularity || true)"
        [ -n "$host" ] && exec "$host" "$@"
    fi
    if [ ! -e "$sid/.cellblock-apptainerlocal" ]; then
        echo "apptainer.sh: no apptainer or singularity on PATH and no local Apptainer in" \
            "$dir (run scripts/apptainer_local.sh install)" >&2
        exit 1
    fi
    [ "$(id -u)" -eq 0 ] || { echo "apptainer.sh: the local Apptainer needs root" >&2; exit 1; }
    # Re-run this script in a private mount namespace: the mounts below vanish with it.
    export _APPTAINERLOCAL_NS="$sid" _APPTAINERLOCAL_PWD="$PWD"
    exec unshare --mount --propagation private -- "$0" "$@"
fi

# --- inside the mount namespace ---
cwd="$_APPTAINERLOCAL_PWD"
unset _APPTAINERLOCAL_NS _APPTAINERLOCAL_PWD
mount --bind "$sid" "$sid"  # Apptainer needs / to be a mount point
mount -t proc proc "$sid/proc"
mount --rbind /sys "$sid/sys"
mount --rbind /dev "$sid/dev"  # loop devices for the SIF, /dev/shm, GPUs for --nv
for f in /etc/resolv.conf /etc/hosts; do
    [ -e "$f" ] && [ -e "$sid$f" ] && mount --bind "$f" "$sid$f"
done
binds=()
for d in /*; do
    [ -d "$d" ] && [ ! -L "$d" ] || continue
    case "$d" in
        /bin|/boot|/dev|/etc|/lib|/lib32|/lib64|/libx32|/lost+found|/proc|/run|/sbin|/sys|/usr|/var) ;;
        *) binds+=("$d") ;;
    esac
done
IFS=: read -r -a extra <<<"${APPTAINERLOCAL_BINDS:-}"
for d in "${binds[@]}" "${extra[@]}"; do
    [ -n "$d" ] && [ -e "$d" ] || continue
    if [ -d "$d" ]; then mkdir -p "$sid$d"; else mkdir -p "$(dirname "$sid$d")"; touch "$sid$d"; fi
    mount --rbind "$d" "$sid$d"
done
cd "$sid"
pivot_root . .oldroot
cd /
umount -l /.oldroot
cd "$cwd" 2>/dev/null || cd /
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Root builds need --fakeroot where the bounding set lacks CAP_SYS_RESOURCE (bit 24).
args=("$@")
if [ "$(id -u)" -eq 0 ]; then
    bnd=$((16#$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)))
    for i in "${!args[@]}"; do
        case "${args[$i]}" in -*) continue ;; esac
        if [ "${args[$i]}" = build ] && (((bnd >> 24 & 1) == 0)) \
            && [[ " $* " != *" --fakeroot "* && " $* " != *" -f "* ]]; then
            echo "apptainer.sh: adding --fakeroot to build (root lacks CAP_SYS_RESOURCE here)" >&2
            args=("${args[@]:0:i+1}" --fakeroot "${args[@]:i+1}")
        fi
        break
    done
fi
exec apptainer "${args[@]}"
