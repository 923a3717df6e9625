#!/usr/bin/env bash
# The whole pipeline, end to end, on an embedded synthetic RxRx1-style screen.
#
#   DEMO_DIR    workspace (default: demo/)
#   SYNTH_ARGS  extra make_synthetic.py arguments, e.g. "--seed 3 --effect-size 0.8"
#   WORKERS     processes per stage (default: 2)
#
# Stages so far: synthesize -> pack (+verify) -> summary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
demo="${DEMO_DIR:-$root/demo}"
workers="${WORKERS:-2}"
py="${PYTHON:-python}"
mkdir -p "$demo"
start=$(date +%s)

echo "== 1/2 synthesize a demo screen into $demo/raw"
# shellcheck disable=SC2086  # SYNTH_ARGS is a list of arguments on purpose
"$py" "$root/01_data/make_synthetic.py" --out "$demo/raw" --preset demo --workers "$workers" ${SYNTH_ARGS:-}

echo "== 2/2 pack PNGs into $demo/dataset (zarr v3), verify pixels"
"$py" "$root/01_data/pack_zarr.py" --raw "$demo/raw" --out "$demo/dataset" --workers "$workers" --verify

echo "== summary"
"$py" -m cellblock.summary "$demo/dataset" --seconds "$(( $(date +%s) - start ))"
