#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): creates .venv if missing, installs infercore[dev],
# then lint, type check and the test suite in two passes: the quick suite, then the heavy framework
# tests (TensorFlow, Ray, a browser, Prometheus) after scripts/setup-heavy.sh installs what they need.
# INFERCORE_HEAVY=0 skips the second pass. Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy src/infercore
.venv/bin/python -m pytest -q "$@"
if [ "${INFERCORE_HEAVY:-1}" != "0" ]; then
    bash scripts/setup-heavy.sh
    heavy="tensorflow or ray or browser or prometheus"
    # exit status 5: no heavy test was collected (none selected by the arguments): not a failure
    .venv/bin/python -m pytest -q -m "$heavy" "$@" || { rc=$?; [ "$rc" -eq 5 ] || exit "$rc"; }
fi
