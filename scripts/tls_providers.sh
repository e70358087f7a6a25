#!/usr/bin/env bash
# ring (`--features tls`) against AWS-LC (`--features tls-aws-lc`): clean
# build time and binary size, then each server in turn under the same
# wsbench client (the ring build's, which offers what browsers offer first)
# for BENCH_REPS rounds: echo 64 B, echo 16 KiB, 3,000 full handshakes
# with the server's RSS per connection, and the AWS-LC pair's post-quantum
# handshake (X25519MLKEM768). Loopback only; every server is stopped by
# its PID. Prints one line per run and a summary; docs/PERFORMANCE.md
# ("ring or AWS-LC") quotes it.
#
#   scripts/tls_providers.sh            (about 8 minutes on 2 CPUs, most of it building)
set -euo pipefail
cd "$(dirname "$0")/.."

REPS="${BENCH_REPS:-3}"
PORT="${BENCH_PORT:-23000}"
BASE="${CARGO_TARGET_DIR:-target}/tls-providers"
WORK="$(mktemp -d)"
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=providers-test-ca -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
  -keyout "$WORK/key.pem" -out "$WORK/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$WORK/leaf.ext"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
  -CAcreateserial -days 2 -extfile "$WORK/leaf.ext" -out "$WORK/cert.pem" 2>/dev/null

for provider in ring aws-lc; do
  features=tls
  [ "$provider" = aws-lc ] && features=tls-aws-lc
  dir="$BASE/$provider"
  rm -rf "$dir"
  start=$(date +%s)
  CARGO_TARGET_DIR="$dir" cargo build --release --quiet --features "$features" \
    --bin wsloop --example wsbench
  echo "providers: $provider: clean release build $(($(date +%s) - start)) s," \
    "wsloop $(stat -c %s "$dir/release/wsloop") bytes"
  cp "$dir/release/wsloop" "$WORK/wsloop-$provider"
  cp "$dir/release/examples/wsbench" "$WORK/wsbench-$provider"
done

PIN_SERVER=()
PIN_CLIENT=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0)
  PIN_CLIENT=(taskset -c 1)
fi
ulimit -n 20000 2>/dev/null || true

# cell NAME SERVER CLIENT WSBENCH_ARGS...: one run, one RESULT line.
cell() {
  local name="$1" server="$2" client="$3" port
  shift 3
  PORT=$((PORT + 1))
  port=$PORT
  RUST_LOG=error "${PIN_SERVER[@]}" "$WORK/wsloop-$server" --listen "127.0.0.1:$port" --mode echo \
    --ping-interval 0 --max-connections 100000 \
    --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" &
  PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  local result
  result="$("${PIN_CLIENT[@]}" "$WORK/wsbench-$client" --addr "127.0.0.1:$port" --server-pid "$PID" \
    --tls --ca "$WORK/ca.pem" --quiet "$@" | grep '^RESULT ' | cut -d' ' -f2-)"
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=""
  printf '%s\t%s\t%s\t%s\n' "$name" "$server" "$client" "$result" | tee -a "$WORK/results.tsv"
}

for _ in $(seq "$REPS"); do
  for server in ring aws-lc; do
    cell "echo 64 B" "$server" ring --mode echo --conns 100 --inflight 16 --size 64 --duration 3
    cell "echo 16 KiB" "$server" ring --mode echo --conns 10 --inflight 4 --size 16384 \
      --kind binary --duration 3
    cell "handshakes" "$server" ring --mode connect --conns 3000 --duration 30 --hold 0.5
  done
  cell "handshakes, X25519MLKEM768" aws-lc aws-lc --mode connect --conns 3000 --duration 30 --hold 0.5
done

python3 - "$WORK/results.tsv" <<'PY'
import json
import sys
from collections import defaultdict

runs = defaultdict(list)
for line in open(sys.argv[1]):
    name, server, client, result = line.rstrip("\n").split("\t", 3)
    runs[(name, server, client)].append(json.loads(result or "{}"))
for (name, server, client), results in runs.items():
    bad = sum((r.get("errors") or 0) + (r.get("connect_failed") or 0) for r in results)
    if name.startswith("handshakes"):
        figures = ", ".join(f"{r.get('connects_per_s', 0):,.0f}/s {r.get('rss_per_conn_bytes', 0):,.0f} B/conn"
                            for r in results)
    else:
        figures = ", ".join(f"{r.get('server_ns_per_msg') or 0:,.0f} ns/msg" for r in results)
    print(f"providers: {name}, server {server}, client {client}: {figures}"
          + (f" ({bad} errors)" if bad else ""))
PY
