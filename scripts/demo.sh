#!/usr/bin/env bash
# The whole pipeline, end to end, on an embedded synthetic RxRx1-style screen.
#
#   DEMO_DIR    workspace (default: demo/)
#   SYNTH_ARGS  extra make_synthetic.py arguments, e.g. "--seed 3 --effect-size 0.8"
#   WORKERS     processes per stage (default: 2)
#   TRAIN_ITERATIONS  iterations of the tiny CNN (default: 1500; its checkpoint at a third of
#               them is benchmarked against the last)
#
# Stages: synthesize -> publish to a local S3 store -> fetch it back anonymously
# -> pack (+verify) -> train synthetic/tiny -> predict the held-out test experiments
# blockwise (daisy, 2 workers) -> look at a plate (montage + headless neuroglancer
# screenshot) -> ensemble (plate groups, per-plate assignment, submission, report)
# -> benchmark the two checkpoints' profiles side by side -> reference probes on the
# same held-out wells (image statistics: the floor; the cells' true traits: the
# ceiling). The store is stopped on exit, whatever happens. The last line compares the
# model's held-out treatment accuracy after the plate assignment with the probes'.
#
# Step 8 needs Debian chromium + chromium-driver: `make demo` installs them first
# (`make browser`, i.e. scripts/apt_install.sh browser); run directly, this script
# checks for them before step 1 rather than failing after the training.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
demo="${DEMO_DIR:-$root/demo}"
workers="${WORKERS:-2}"
py="${PYTHON:-python}"
for bin in /usr/bin/chromium /usr/bin/chromedriver; do
  [ -x "$bin" ] || { echo "demo.sh: $bin not found: step 8 needs Debian chromium + chromium-driver" \
    "(scripts/apt_install.sh browser, or make demo, which runs it)" >&2; exit 1; }
done
mkdir -p "$demo"
demo="$(cd "$demo" && pwd)"
start=$(date +%s)
export S3LOCAL_DIR="$demo/s3"

echo "== 1/11 synthesize a demo screen into $demo/raw"
# shellcheck disable=SC2086  # SYNTH_ARGS is a list of arguments on purpose
"$py" "$root/01_data/make_synthetic.py" --out "$demo/raw" --preset demo --workers "$workers" ${SYNTH_ARGS:-}

echo "== 2/11 start the local S3 store (SeaweedFS on 127.0.0.1) and publish the raw tree"
trap '"$root/scripts/s3_local.sh" stop >/dev/null || true' EXIT
eval "$("$root/scripts/s3_local.sh" start)"
"$py" "$root/scripts/publish.py" "$demo/raw" --bucket "$CELLBLOCK_PUBLIC_BUCKET" --prefix demo/raw/

echo "== 3/11 fetch it back anonymously (no keys) into $demo/fetched"
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
    "$py" "$root/01_data/fetch_data.py" --dataset demo --out "$demo/fetched" --workers 16

echo "== 4/11 pack PNGs into $demo/dataset (zarr v3), verify pixels"
"$py" "$root/01_data/pack_zarr.py" --raw "$demo/fetched" --out "$demo/dataset" --workers "$workers" --verify

iterations="${TRAIN_ITERATIONS:-1500}"
early=$(( iterations / 3 ))
echo "== 5/11 train 02_train/synthetic/tiny ($iterations iterations, every training experiment) on $demo/dataset"
"$py" "$root/02_train/synthetic/tiny/train.py" "$iterations" --data "$demo/dataset" \
    --out "$demo/runs/synthetic/tiny" --set "train.checkpoint_every=$early" \
    --set "train.schedule_iters=$iterations"

echo "== 6/11 predict the held-out test experiments blockwise (daisy, $workers workers)"
"$py" "$root/03_predict/predict_blockwise.py" --run "$demo/runs/synthetic/tiny" --data "$demo/dataset" \
    --split test --out "$demo/predictions/synthetic/tiny" --workers "$workers" --tta flips
"$py" "$root/03_predict/predict_blockwise.py" --run "$demo/runs/synthetic/tiny" --data "$demo/dataset" \
    --split test --out "$demo/predictions/synthetic/tiny_$early" --iteration "$early" \
    --workers "$workers" --tta flips

echo "== 7/11 summary"
"$py" -m cellblock.summary "$demo/dataset" --seconds "$(( $(date +%s) - start ))"

plate="$("$py" -c 'import sys; from cellblock.store.packed import PackedDataset
t = PackedDataset(sys.argv[1]).metadata.query("split == \"test\"").iloc[0]
print(f"{t.experiment}/Plate{t.plate}")' "$demo/dataset")"
echo "== 8/11 look at test plate $plate: montage + headless neuroglancer screenshot, predictions overlaid"
"$py" "$root/01_data/view_data.py" --data "$demo/dataset" --plate "$plate" \
    --predictions "$demo/predictions/synthetic/tiny" \
    --montage "$demo/plate_montage.png" --screenshot "$demo/plate.png"

echo "== 9/11 ensemble: plate groups, per-plate assignment, submission + report in $demo/ensemble"
"$py" "$root/04_ensemble/ensemble.py" "$demo/predictions/synthetic/tiny" --data "$demo/dataset" \
    --out "$demo/ensemble"

echo "== 10/11 benchmark the profiles of iteration $early against $iterations in $demo/benchmark"
relationships=()
[ -f "$demo/raw/relationships.csv" ] && relationships=(--relationships "$demo/raw/relationships.csv")
"$py" "$root/04_ensemble/benchmark.py" "$demo/predictions/synthetic/tiny_$early" \
    "$demo/predictions/synthetic/tiny" --names "iteration_$early,iteration_$iterations" \
    --data "$demo/dataset" --out "$demo/benchmark" "${relationships[@]}"

echo "== 11/11 reference probes on the same held-out wells: image statistics (the floor), the cells' true traits (the ceiling)"
"$py" "$root/04_ensemble/reference_probes.py" --data "$demo/dataset" --traits "$demo/raw/site_traits.csv" \
    --ensemble "$demo/ensemble" --out "$demo/probes" --workers "$workers"
