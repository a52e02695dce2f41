#!/usr/bin/env bash
# What the heavy tests need beyond infercore[dev]: the heavy Python extras into .venv and, when run as
# root (CI), the Debian packages. Idempotent. Tests whose tool is still missing skip, naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@"; }
# dev and heavy in one resolve: alone, the heavy extras would move packages that dev pins (ray
# would take protobuf 7, which kserve refuses)
pip_install -e ".[dev,heavy]"
# prometheus (and promtool): the alert rules end to end; chromium: the dashboard under Playwright
apt_packages=(prometheus chromium)
if [ "$(id -u)" = "0" ] && [ "${#apt_packages[@]}" -gt 0 ]; then
    missing=()
    for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
fi
