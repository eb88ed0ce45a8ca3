#!/usr/bin/env bash
# GPU check (about 4 minutes on one H100): eager vs CUDA-graphed training compared step by step, then
# the throughput benchmark on CUDA at batch 64 and 1024 against the two plain-loop baselines.
#
#   bench/gpu_check.sh [DATA_DIR]      DATA_DIR holds MNIST/raw (default ./.gpudata)
#
# Needs torch, torchvision, tqdm, tensorboard, Pillow and hydra-core/omegaconf importable by python3
# (or $PYTHON). The package is used from this checkout (copied to a temporary site folder, so no
# install is needed). Writes everything it prints to $OUT/gpu_check.log when OUT is set. Each section
# runs under its own time limit, so one failure still lets the others report. Exits 1 when the
# eager-vs-graphed comparison fails (or cannot run), else 0.
set -u
cd "$(dirname "$0")/.."
DATA="${1:-./.gpudata}"
LOG_NAME=gpu_check.log
# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh || exit 1
[ -d "$DATA/MNIST/raw" ] || { echo "no $DATA/MNIST/raw: pass the folder that holds MNIST/raw"; exit 1; }

echo
echo "== eager vs graphed (same seed, every logged scalar, every step)"
timeout 130 "$PY" bench/compare_paths.py --data "$DATA" --steps 12
compare=$?
[ $compare -eq 124 ] && echo "compare_paths: timed out after 130 s"

echo
echo "== throughput, batch 64 and 1024"
timeout 210 "$PY" bench/throughput.py --data "$DATA" --device cuda --batch-sizes 64 1024 --seconds 2.5
bench=$?
[ $bench -eq 124 ] && echo "throughput: timed out after 210 s"

echo
echo "== summary: compare_paths exit $compare, throughput exit $bench"
[ $compare -eq 0 ] || exit 1
exit 0
