#!/usr/bin/env bash
# Evaluate a model on DIV2K validation at x2, x3, x4 (published bicubic LR) and x6-x30.
#
#   bash scripts/test-div2k.sh save/_train_edsr-baseline-liif/epoch-last.pth      # best device
#   bash scripts/test-div2k.sh rdn-liif.pth 0                                       # GPU 0
#
# Data: ./load/div2k/DIV2K_valid_HR and ./load/div2k/DIV2K_valid_LR_bicubic/X{2,3,4}.
# Prints each scale's name, then test.py's output ending in "result: <psnr>".
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: bash scripts/test-div2k.sh MODEL.pth [GPU]" >&2
  exit 2
fi
case "$1" in /*) model=$1 ;; *) model="$PWD/$1" ;; esac  # before leaving the caller's folder
cd "$(dirname "$0")/.."  # the configs read ./load/...
gpu_args=()
if [ -n "${2:-}" ]; then gpu_args=(--gpu "$2"); fi
for scale in 2 3 4 6 12 18 24 30; do
  echo "div2k-x$scale"
  "${PYTHON:-python}" test.py --config "configs/test/test-div2k-$scale.yaml" --model "$model" "${gpu_args[@]}"
done
