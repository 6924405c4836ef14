#!/usr/bin/env bash
# Install the project's requirements into the active Python (used by quickstart.sh and
# run_tests.sh):
#
#   bash scripts/install_requirements.sh [EXTRA_REQUIREMENTS_FILE ...]
#
# A PyTorch that is already installed (a CUDA build a GPU user installed first, or a
# machine's own) is kept when it is 2.4 or newer: only the other requirements are
# installed, which needs no package index when they are there already. Without one,
# requirements.txt's pinned torch is installed (the CPU wheel on a CPU-only machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if "$PYTHON" -c 'import sys, torch; v = tuple(int(x) for x in torch.__version__.split(".")[:2]); sys.exit(v < (2, 4))' 2>/dev/null; then
  echo "keeping the installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
  grep -v '^torch' requirements.txt | "$PYTHON" -m pip install -q -r /dev/stdin "${@/#/-r}"
else
  "$PYTHON" -m pip install -q -r requirements.txt "${@/#/-r}"
fi
