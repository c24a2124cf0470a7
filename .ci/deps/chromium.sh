#!/usr/bin/env bash
# Debian's chromium for tests/test_dashboard.py, driven by Playwright (PyPI) through its
# executable path: Playwright's own browser download cannot work here. Does nothing when installed.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
