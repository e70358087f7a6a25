#!/usr/bin/env bash
# End-to-end test of the demo page: headless Chromium (Debian's package),
# driven by playwright-core, against the release binary.
#
# Installs what is missing (Chromium via apt as root, playwright-core via
# npm), builds `wsloop` with the `tls` feature, then runs tests/e2e with
# node's test runner twice: over http:// and ws://, then over https:// and
# wss:// (WSLOOP_E2E_TLS=1: a throwaway certificate made with openssl).
# Both runs always happen; the script fails if either does.
# The screenshots land in artifacts/e2e-demo.png and artifacts/e2e-demo-tls.png.
#
# Honours CARGO_TARGET_DIR (default ./target); the binary is handed to the
# test as WSLOOP_BIN.
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

for tool in node npm cargo openssl; do
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

cargo build --release --features "tls deflate" --bin wsloop
target_dir="${CARGO_TARGET_DIR:-target}"
built="$(cd "$target_dir/release" && pwd)/wsloop"
[ -x "$built" ] || { echo "e2e: no binary at $built" >&2; exit 1; }
# Both runs test this build: a private copy, so a concurrent `cargo build`
# (other features, same target dir) cannot swap it between them.
bin_dir="$(mktemp -d "${TMPDIR:-/tmp}/wsloop-e2e-build-XXXXXX")"
trap 'rm -rf "$bin_dir"' EXIT
cp "$built" "$bin_dir/wsloop"
export WSLOOP_BIN="$bin_dir/wsloop"

mkdir -p artifacts
cd tests/e2e
status=0
# Plain with permessage-deflate offered (Chromium takes it), then TLS
# without it (the default: no compression).
for tls in 0 1; do
  deflate=$((1 - tls))
  if [ "$tls" = 1 ]; then mode="https:// + wss://"; else mode="http:// + ws:// + permessage-deflate"; fi
  echo "e2e: demo page over $mode ($WSLOOP_BIN)"
  if ! WSLOOP_E2E_TLS="$tls" WSLOOP_E2E_DEFLATE="$deflate" node --test --test-concurrency=1 demo.test.js; then
    echo "e2e: FAILED over $mode" >&2
    status=1
  fi
done
exit "$status"
