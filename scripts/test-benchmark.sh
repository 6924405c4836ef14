#!/usr/bin/env bash
# Evaluate a model on Set5, Set14, B100 and Urban100 at x2, x3, x4 (published bicubic LR)
# and x6, x8 (HR downsampled on the fly).
#
#   bash scripts/test-benchmark.sh save/_train_rdn-liif/epoch-last.pth      # best device
#   bash scripts/test-benchmark.sh rdn-liif.pth 0                           # GPU 0
#
# Data: ./load/benchmark/<Set>/HR and ./load/benchmark/<Set>/LR_bicubic/X{2,3,4}.
# Prints each set and scale, then test.py's output ending in "result: <psnr>".
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: bash scripts/test-benchmark.sh MODEL.pth [GPU]" >&2
  exit 2
fi
case "$1" in /*) model=$1 ;; *) model="$PWD/$1" ;; esac  # before leaving the caller's folder
cd "$(dirname "$0")/.."  # the configs read ./load/...
gpu_args=()
if [ -n "${2:-}" ]; then gpu_args=(--gpu "$2"); fi
for set in set5 set14 b100 urban100; do
  for scale in 2 3 4 6 8; do
    echo "$set-x$scale"
    "${PYTHON:-python}" test.py --config "configs/test/test-$set-$scale.yaml" --model "$model" "${gpu_args[@]}"
  done
done
