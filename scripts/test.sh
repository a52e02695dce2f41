#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): creates .venv if missing, installs infercore[dev],
# then lint, type check and the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy src/infercore
exec .venv/bin/python -m pytest -q "$@"
