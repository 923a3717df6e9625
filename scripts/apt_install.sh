#!/usr/bin/env bash
# Install the Debian packages the real services need (idempotent; quick when present).
#   scripts/apt_install.sh browser   chromium + chromium-driver (neuroglancer screenshots)
#   scripts/apt_install.sh slurm     slurm-wlm, munge, slurmdbd, mariadb (local cluster)
#   scripts/apt_install.sh all       both
# Needs root (or sudo). Runs `apt-get update` once per machine, only if something is missing
# (again, once, if an install fails on stale package lists). Installs nothing, and exits 0
# within a second, when every package is already there.
#   CELLBLOCK_APT_STAMP  the marker of that one update (tests point it elsewhere)
set -euo pipefail

declare -A GROUPS_=(
  [browser]="chromium chromium-driver"
  [slurm]="slurm-wlm munge slurmdbd mariadb-server"
)
want=()
for group in "${@:-all}"; do
  case "$group" in
    all) want+=(${GROUPS_[browser]} ${GROUPS_[slurm]}) ;;
    browser|slurm) want+=(${GROUPS_[$group]}) ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "apt_install.sh: unknown group '$group' (browser, slurm, all)" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "apt_install.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
stamp="${CELLBLOCK_APT_STAMP:-/var/lib/apt/periodic/cellblock-update-stamp}"
update() {
  $SUDO apt-get update -qq
  $SUDO mkdir -p "$(dirname "$stamp")" && $SUDO touch "$stamp"
}
install_missing() {
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
[ -e "$stamp" ] || update
# Lists from an earlier update can be gone (image clean-up) or stale (404 on an old
# version): one fresh update, then the install again, before giving up.
install_missing || { echo "apt_install.sh: retrying after apt-get update" >&2; update; install_missing; }
