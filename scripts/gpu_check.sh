#!/usr/bin/env bash
# The GPU check: CUDA tests, GPU benchmark rows, the paper recipe's s/it and GPU
# utilisation, a one-process NCCL torchrun run with resume and a quickstart-size
# training, in at most 8 minutes, as one markdown report (scripts/gpu_check.py says
# what each stage does):
#
#   bash scripts/gpu_check.sh OUT_DIR                    # OUT_DIR/gpu-report.md
#   GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh OUT   # dry run on a CPU, tiny sizes
#
# Installs nothing: it runs with the machine's own PyTorch (which may be older than
# requirements.txt's pin). PYTHON picks the interpreter.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: bash scripts/gpu_check.sh OUT_DIR" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$1"
