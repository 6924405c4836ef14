#!/usr/bin/env bash
# LIIF end to end on this machine, with no download (at most 5 minutes on 2 CPU cores once the
# requirements are installed; docs/quickstart.md has the figures):
#
#   bash scripts/quickstart.sh
#
# 1. installs requirements.txt, keeping an installed PyTorch >= 2.4 such as a CUDA
#    build (+ the optional requirements-quickstart.txt: scikit-image
#    ships sample photographs inside its wheel; without it, generated images are used)
#    into the active Python;
# 2. writes the photos to load/quickstart/{train,test} (3 held out for testing);
# 3. trains a CPU-sized EDSR-baseline-LIIF (configs/quickstart/train_quickstart.yaml;
#    bf16 where the CPU has it natively, else float32) with train_liif.py into a new run
#    folder save/quickstart-<date-time>;
# 4. evaluates it with test.py on the held-out photos at x2, x3.5 and x4, and the
#    bicubic baseline with the same protocol (test.py --baseline bicubic);
# 5. upscales one held-out photo x4 with demo.py and writes comparison.png (bicubic |
#    LIIF | ground truth, zoomed crop) and training_curve.png into the run folder;
# 6. reports: quickstart: LIIF <p> dB vs bicubic <q> dB on <what> at x4
# 7. writes the held-out photos for the viewer into the run folder and ends by printing
#    the command that opens the model in the browser (viewer.py; docs/viewer.md).
#
# Environment: PYTHON (default python3), QUICKSTART_DEVICE (default: CUDA if present,
# else CPU), QUICKSTART_RUN (run folder name, default quickstart-<date-time>).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

echo "== installing requirements"
PYTHON=$PYTHON bash scripts/install_requirements.sh
"$PYTHON" -m pip install -q -r requirements-quickstart.txt \
  || echo "note: optional quickstart packages not installed: generated images, Pillow plot"

stage() { echo "== [$1/6] $2 ($(( $(date +%s) - work_start )) s)"; }
work_start=$(date +%s)
"$PYTHON" scripts/quickstart_report.py estimate ${QUICKSTART_DEVICE:+--device "$QUICKSTART_DEVICE"}

run=${QUICKSTART_RUN:-quickstart-$(date +%Y%m%d-%H%M%S)}
out=save/$run
device_args=()
if [ -n "${QUICKSTART_DEVICE:-}" ]; then device_args=(--device "$QUICKSTART_DEVICE"); fi

stage 1 "data"
"$PYTHON" scripts/quickstart_data.py --out load/quickstart

stage 2 "training (run folder $out; progress bars and an estimate per epoch)"
"$PYTHON" train_liif.py --config configs/quickstart/train_quickstart.yaml --name "$run" \
  "${device_args[@]}"

stage 3 "evaluation on the held-out photos"
for scale in 2 3.5 4; do
  echo "-- x$scale: LIIF"
  "$PYTHON" test.py --config "configs/quickstart/test-x$scale.yaml" --model "$out/epoch-last.pth" \
    --out "$out/test-x$scale.json" "${device_args[@]}"
  echo "-- x$scale: bicubic"
  "$PYTHON" test.py --config "configs/quickstart/test-x$scale.yaml" --baseline bicubic \
    --out "$out/bicubic-x$scale.json" "${device_args[@]}"
done

stage 4 "demo"
lr=$("$PYTHON" scripts/quickstart_report.py demo-input --data load/quickstart --run "$out")
"$PYTHON" demo.py --input "$lr" --model "$out/epoch-last.pth" --scale 4 \
  --output "${lr/_lr_x4/_liif_x4}" "${device_args[@]}"

stage 5 "report"
"$PYTHON" scripts/quickstart_report.py report --data load/quickstart --run "$out" --started "$work_start"

stage 6 "viewer"
"$PYTHON" scripts/quickstart_report.py viewer --data load/quickstart --run "$out"
