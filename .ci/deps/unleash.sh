#!/usr/bin/env bash
# unleash-server 8 for tests/test_flags.py, which starts the real server on the machine's PostgreSQL.
# Installed into the cache folder the test fixture uses ($ABGUARD_UNLEASH_DIR, default
# ~/.cache/abguard/unleash), never into the repository; does nothing when it is already there.
# The fixture runs this same script when the folder is empty. Runs as root on CI.
set -euo pipefail

DIR="${ABGUARD_UNLEASH_DIR:-$HOME/.cache/abguard/unleash}"
PACKAGE="$DIR/node_modules/unleash-server/package.json"

if [ -f "$PACKAGE" ] && grep -q '"version": "8\.' "$PACKAGE"; then
    exit 0
fi

if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
# unleash-server 8 declares Node >= 22; it runs on 20 (measured), not on older ones.
major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$major" -lt 20 ]; then
    echo "unleash.sh: unleash-server 8 needs Node.js >= 20 and npm; found: $(node --version 2>/dev/null || echo none)" >&2
    exit 1
fi

mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || echo '{"private": true}' >"$DIR/package.json"
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error unleash-server@8
