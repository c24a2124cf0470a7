#!/usr/bin/env bash
# Prometheus Alertmanager (and amtool) for tests/test_alertmanager.py, which starts the real
# server; does nothing when it is already installed. Runs as root on CI.
set -euo pipefail

if command -v prometheus-alertmanager >/dev/null 2>&1; then
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager
