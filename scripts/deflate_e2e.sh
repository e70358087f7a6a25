#!/usr/bin/env bash
# permessage-deflate end to end, against clients that share no code with
# the server: Python's websockets (scripts/deflate_clients.py: its default
# offer, a 9-bit server window, a broadcast to deflate and plain clients)
# and Node's ws (tests/e2e/deflate_client.js).
#
# Builds the deflate binary and runs a copy of it (a concurrent cargo build
# cannot swap it mid-run) on a port the kernel picks; every wait is bounded
# and the server is killed by its PID on any way out. VENV (default .venv)
# is the virtualenv with `websockets`, created if missing; `ws` is installed
# with npm into tests/e2e if missing; CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

say() { echo "deflate-e2e: $*"; }
die() { echo "deflate-e2e: FAIL $*" >&2; exit 1; }

for tool in cargo python3 node npm timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if [ ! -x "$PY" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
fi
"$PY" -c 'import websockets' 2>/dev/null || "$PY" -m pip install --quiet websockets
if [ ! -d tests/e2e/node_modules/ws ]; then
  say "npm install (tests/e2e)"
  (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error)
fi

cargo build --release --features deflate --bin wsloop

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$TARGET_DIR/release/wsloop" "$work/wsloop"
RUST_LOG=info "$work/wsloop" --listen 127.0.0.1:0 --deflate --ticker-interval 0 \
  --ping-interval 0 >"$work/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 100); do
  port="$(sed -n 's/.*listening on ws:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.log" | head -1)"
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "the server exited"; }
  sleep 0.05
done
[ -n "$port" ] || die "the server did not say its port"
say "server pid $server_pid on ws://127.0.0.1:$port (--deflate)"

status=0
timeout 120 "$PY" scripts/deflate_clients.py --port "$port" || status=1
(cd tests/e2e && timeout 30 node deflate_client.js "$port") || status=1
if grep -q "panicked" "$work/server.log"; then
  cat "$work/server.log" >&2
  die "the server panicked"
fi
kill -0 "$server_pid" 2>/dev/null || die "the server died during the checks"
[ "$status" -eq 0 ] || die "some checks failed (above)"
say "all checks passed"
