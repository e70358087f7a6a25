#!/usr/bin/env bash
# End-to-end test of the demo page: headless Chromium (Debian's package),
# driven by playwright-core, against the release binary.
#
# Installs what is missing (Chromium via apt as root, playwright-core via
# npm), builds `wsloop`, then runs tests/e2e with node's test runner.
# The screenshot lands in artifacts/e2e-demo.png.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "e2e: $CHROMIUM is missing; install Debian's chromium package (as root: apt-get install chromium)" >&2
    exit 1
  fi
  echo "e2e: installing chromium"
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

for tool in node npm cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "e2e: $tool is required" >&2; exit 1; }
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "e2e: Node 20 or newer is required (found $(node --version))" >&2
  exit 1
fi

if [ ! -d tests/e2e/node_modules/playwright-core ]; then
  echo "e2e: npm install (tests/e2e)"
  # No browser download: the test drives the system Chromium.
  (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error)
fi

cargo build --release --bin wsloop

mkdir -p artifacts
cd tests/e2e
exec node --test --test-concurrency=1 demo.test.js
