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
PYTHON=$PYTHON bash scripts/install_requirements.sh requirements-dev.txt requirements-viewer.txt \
  requirements-deploy.txt
# The viewer's browser test drives Debian's chromium (never a downloaded browser): install
# it when missing where we may (root with apt-get, as in CI); elsewhere that test is skipped.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the viewer's browser test"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium is not installed (apt-get install chromium): the browser test is skipped"
  fi
fi
if [ "${RUN_SLOW:-0}" = "1" ]; then
  exec "$PYTHON" -m pytest tests "$@"
fi
exec "$PYTHON" -m pytest tests -m "not slow" "$@"
