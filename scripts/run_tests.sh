#!/usr/bin/env bash
# Install what the tests need into the active Python, then run the test suite.
#
#   bash scripts/run_tests.sh              # the suite CI runs (slow tests excluded)
#   bash scripts/run_tests.sh -m slow      # only the slow checks
#   RUN_SLOW=1 bash scripts/run_tests.sh   # everything
#
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# requirements-deploy.txt: the ONNX export tests run in CI too
PYTHON=$PYTHON bash scripts/install_requirements.sh requirements-dev.txt requirements-deploy.txt
if [ "${RUN_SLOW:-0}" = "1" ]; then
  exec "$PYTHON" -m pytest tests "$@"
fi
exec "$PYTHON" -m pytest tests -m "not slow" "$@"
