#!/usr/bin/env bash
# buf (npm's @bufbuild/buf ships the binary) for `make check`: buf lint and buf breaking against the
# released API's descriptor (protos/released/). Installed into $ABGUARD_BUF_DIR (default
# ~/.cache/abguard/buf), never into the repository; does nothing when that version is there.
set -euo pipefail

VERSION=1.75.0
DIR="${ABGUARD_BUF_DIR:-$HOME/.cache/abguard/buf}"
BIN="$DIR/node_modules/.bin/buf"

if [ -x "$BIN" ] && [ "$("$BIN" --version)" = "$VERSION" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || echo '{"private": true}' >"$DIR/package.json"
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "@bufbuild/buf@$VERSION"
"$BIN" --version
