#!/usr/bin/env bash
# Demo of the main job on a real model: creates .venv if missing, installs infercore, runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
exec .venv/bin/python examples/demo.py "$@"
