#!/usr/bin/env bash
# Debian's prometheus server for tests/test_pull.py, which starts it scraping an exporter the
# test runs. Does nothing when it is already installed.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus
