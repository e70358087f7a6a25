#!/usr/bin/env bash
# wss:// and https:// end to end, against TLS clients that share no code
# with the server: Python's websockets, ssl and http.client, and the
# openssl CLI (s_client over TLS 1.2 and 1.3).
#
# Builds the TLS binary and runs a copy of it (a concurrent cargo build
# cannot swap it mid-run), makes a throwaway CA, a second CA that signed
# nothing and two server certificates (different keys and serials, for the
# reload) with the openssl CLI, starts the server on a port the kernel picks,
# and lets scripts/tls_clients.py run the checks, the last of which sends
# SIGTERM; this script then checks the exit status. Every wait is bounded;
# the server is killed by its PID on any way out.
#
# VENV (default .venv) is the virtualenv with `websockets`, created if
# missing; CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# The client checks take a few seconds; this only stops a hung run.
CLIENT_TIMEOUT=45

say() { echo "tls-e2e: $*"; }
die() { echo "tls-e2e: FAIL $*" >&2; exit 1; }

for tool in openssl cargo python3 timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if [ ! -x "$PY" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$PY" -c 'import websockets' 2>/dev/null; then
  say "installing websockets into $VENV"
  "$PY" -m pip install --quiet websockets
fi

cargo build --release --features tls --bin wsloop

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
started=$SECONDS

# --- certificates ------------------------------------------------------------

run_openssl() {
  openssl "$@" >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; die "openssl $1 failed"; }
}
ec_key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

make_ca() { # NAME
  run_openssl req -x509 "${ec_key[@]}" -days 2 -subj "/CN=wsloop tls-e2e $1" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$work/$1.key" -out "$work/$1.pem"
}

cat >"$work/leaf.ext" <<'EOF'
subjectAltName = DNS:localhost, IP:127.0.0.1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
EOF
make_leaf() { # NAME SERIAL: a server certificate signed by the test CA
  run_openssl req -new "${ec_key[@]}" -subj /CN=localhost -keyout "$work/$1.key" -out "$work/$1.csr"
  run_openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -set_serial "$2" -days 2 -extfile "$work/leaf.ext" -out "$work/$1.pem"
}

make_ca ca
make_ca wrong-ca
make_leaf first 0x1001
make_leaf second 0x2002
# The server reads these; the reload check moves `second` onto them.
cp "$work/first.pem" "$work/server.pem"
cp "$work/first.key" "$work/server.key"

# --- the server --------------------------------------------------------------

cp "$TARGET_DIR/release/wsloop" "$work/wsloop"
RUST_LOG=info "$work/wsloop" --listen 127.0.0.1:0 \
  --tls-cert "$work/server.pem" --tls-key "$work/server.key" >"$work/server.log" 2>&1 &
server_pid=$!

show_server_log() {
  echo "tls-e2e: server log (last 30 lines):" >&2
  tail -n 30 "$work/server.log" >&2
}

# Port 0: the kernel picks a free port, which the server logs once it listens.
port=""
for _ in $(seq 100); do
  port="$(sed -n 's#.*listening on wss://127\.0\.0\.1:\([0-9][0-9]*\) .*#\1#p' "$work/server.log")"
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { show_server_log; die "the server exited at startup"; }
  sleep 0.1
done
[ -n "$port" ] || { show_server_log; die "the server did not start listening within 10 s"; }
say "server pid $server_pid on wss://127.0.0.1:$port"

# --- the checks --------------------------------------------------------------

set +e
timeout --kill-after=5 "$CLIENT_TIMEOUT" "$PY" -u scripts/tls_clients.py \
  --port "$port" --pid "$server_pid" --ca "$work/ca.pem" --wrong-ca "$work/wrong-ca.pem" \
  --cert "$work/server.pem" --key "$work/server.key" \
  --next-cert "$work/second.pem" --next-key "$work/second.key" | tee "$work/checks.log"
clients=${PIPESTATUS[0]}
set -e
passed="$(grep -c '^tls-e2e: ok' "$work/checks.log" || true)"
if [ "$clients" -ne 0 ]; then
  [ "$clients" -eq 124 ] && echo "tls-e2e: FAIL the client checks took over ${CLIENT_TIMEOUT} s" >&2
  show_server_log
  say "$passed passed, 1 failed"
  exit 1
fi

# The last check saw the process exit; its status is ours to read.
status=0
wait "$server_pid" || status=$?
server_pid=""
if [ "$status" -ne 0 ]; then
  show_server_log
  die "the server exited with status $status after SIGTERM, expected 0"
fi
if grep -q 'panicked' "$work/server.log"; then
  show_server_log
  die "the server log reports a panic"
fi
say "ok  the server exited with status 0 after SIGTERM, no panic logged"
passed=$((passed + 1))

say "checks took $((SECONDS - started)) s (build excluded)"
say "$passed passed, 0 failed"
