#!/usr/bin/env bash
# Create .venv if missing and install infercore with the given extra into it (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-dev}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@"; }
if [ "$extra" = "dev" ]; then
    # torch first and pinned: 2.13.0 installs from a local CPU build here, while any other torch
    # request (even one a dependency makes) would pull a multi-GB CUDA build.
    .venv/bin/python -c "import torch" 2>/dev/null || pip_install "torch==2.13.0"
fi
pip_install -e ".[$extra]"
