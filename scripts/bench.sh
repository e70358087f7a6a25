#!/usr/bin/env bash
# Load benchmark of wsloop against the raw mio loops, cell by cell.
#
#   scripts/bench.sh            the fixed matrix (a few seconds per cell, under
#                               five minutes); writes docs/bench-latest.md
#   scripts/bench.sh --smoke    each wsbench mode for about a second against
#                               wsloop (and the raw loops), for CI; writes nothing
#   scripts/bench.sh --peers    wsloop beside other WebSocket servers (Bun, whose
#                               server is built on uWebSockets, and Node's `ws`)
#                               and the raw loops, same cells and client; installs
#                               them from npm into benches/peers/node_modules;
#                               writes docs/peers-latest.md
#   scripts/bench.sh --tls      wsloop's wss:// beside its own ws:// (one binary,
#                               built with --features tls; a test CA made with the
#                               openssl CLI): echo 64 B and 16 KiB, broadcast to
#                               1,000, idle connections (RSS and handshake rate);
#                               writes docs/bench-tls-latest.md. --smoke runs one
#                               TLS echo and one TLS broadcast cell too
#   scripts/bench.sh --deflate  wsloop with permessage-deflate beside without (one
#                               binary, built with --features deflate; wsbench
#                               --deflate compresses as browsers do): echo of a chat
#                               line, a ~200 B ticker and a 16 KiB JSON document,
#                               the ticker broadcast to 1,000, idle connections
#                               (RSS per connection); server CPU and wire bytes per
#                               message side by side; writes docs/bench-deflate-latest.md.
#                               --smoke runs one deflate echo and one deflate
#                               broadcast cell too
#
# Environment:
#   BENCH_SECS=3      measured seconds per cell (full matrix)
#   BENCH_REPS=3      rounds of each cell of the full matrix: wsloop and the
#                     raw loop alternate, and the report gives the median of
#                     the per-round ratios (this machine is shared and noisy)
#   BENCH_LONG=1      add the 60 s cell: 19,000 idle connections with 20 s
#                     pings, server CPU beside the raw loop's heartbeat probes
#                     (target: under 1%)
#   BENCH_PORT=21100  first loopback port (each run takes the next one; keep it
#                     below the ephemeral range, 32768+ on Linux)
#   BENCH_OUT=docs/bench-latest.md
#   BENCH_PIN=1       pin the server to CPU 0 and wsbench to CPU 1 (taskset;
#                     default on when taskset exists and there are 2+ CPUs)
#
# Each cell starts a fresh server (wsloop, then the raw loop), runs wsbench
# against it, and stops it by its PID. The one-connection latency cell is
# the exception: both servers run side by side and examples/latency_pair.rs
# alternates single round trips between them, so that the drift of a shared
# machine's wake-up latency hits both alike. Everything listens on and connects to
# 127.0.0.1 only, and every run is bounded by wsbench's --duration / --hold.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=full
case "${1:-}" in
  --smoke) MODE=smoke ;;
  --peers) MODE=peers ;;
  --tls) MODE=tls ;;
  --deflate) MODE=deflate ;;
  "") ;;
  *) echo "usage: scripts/bench.sh [--smoke | --peers | --tls | --deflate]" >&2; exit 2 ;;
esac

SECS="${BENCH_SECS:-3}"
REPS="${BENCH_REPS:-3}"
PORT="${BENCH_PORT:-21100}"
OUT="${BENCH_OUT:-docs/bench-latest.md}"
[ "$MODE" = peers ] && OUT="${BENCH_OUT:-docs/peers-latest.md}"
[ "$MODE" = tls ] && OUT="${BENCH_OUT:-docs/bench-tls-latest.md}"
[ "$MODE" = deflate ] && OUT="${BENCH_OUT:-docs/bench-deflate-latest.md}"
# What the report compares: wsloop with the raw loops, wss:// with ws://, or
# permessage-deflate with without.
COMPARE=raw
[ "$MODE" = tls ] && COMPARE=tls
[ "$MODE" = deflate ] && COMPARE=deflate
TARGET="${CARGO_TARGET_DIR:-target}"
WSLOOP="$TARGET/release/wsloop"
WSBENCH="$TARGET/release/examples/wsbench"
RAW_ECHO="$TARGET/release/examples/raw_echo"
RAW_FANOUT="$TARGET/release/examples/raw_fanout"
LATENCY_PAIR="$TARGET/release/examples/latency_pair"

echo "bench: building (release)"
# With TLS compiled in (smoke and --tls): wsloop serves wss:// when given a
# certificate, and wsbench gets its --tls client. Without a certificate the
# same binary serves plain ws:// on the plain path. Likewise with deflate
# (smoke and --deflate): wsloop offers permessage-deflate only with
# --deflate, and wsbench gets its --deflate client.
FEATURES=()
case "$MODE" in
  smoke) FEATURES=(--features "tls deflate") ;;
  tls) FEATURES=(--features tls) ;;
  deflate) FEATURES=(--features deflate) ;;
esac
cargo build --release --quiet "${FEATURES[@]}" --bin wsloop --example wsbench --example raw_echo \
  --example raw_fanout --example latency_pair

# The descriptor limit: the server of the idle cell needs 19,000 sockets.
ulimit -n 20000 2>/dev/null || true
FDS="$(ulimit -n)"
IDLE=19000
if [ "$FDS" != unlimited ] && [ "$FDS" -lt $((IDLE + 200)) ]; then
  IDLE=$((FDS - 200))
  echo "bench: ulimit -n is $FDS; the idle cell uses $IDLE connections" >&2
fi

PIN_SERVER=()
PIN_CLIENT=()
if [ "$MODE" != smoke ] && [ "${BENCH_PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0)
  PIN_CLIENT=(taskset -c 1)
fi

WORK="$(mktemp -d)"
# The running servers' PIDs (two during a paired run).
SERVER_PID=""
stop_server() {
  local pid
  for pid in $SERVER_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PID=""
}
cleanup() {
  stop_server
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$MODE" = smoke ] || [ "$MODE" = tls ]; then
  # A test CA and a P-256 server certificate it signed, for localhost and
  # 127.0.0.1: wsbench verifies the chain as a browser would.
  command -v openssl >/dev/null || { echo "bench: TLS cells need the openssl CLI" >&2; exit 1; }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=wsbench-test-ca -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/leaf.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$WORK/leaf.ext"
  openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/leaf.ext" -out "$WORK/cert.pem" 2>/dev/null
fi

# start_server PORT CMD...: starts a server pinned to CPU 0, waits for its
# port. Its PID is added to SERVER_PID and left in STARTED_PID.
start_server() {
  local port="$1"
  shift
  "${PIN_SERVER[@]}" "$@" >>"$WORK/server.log" 2>&1 &
  STARTED_PID=$!
  SERVER_PID="${SERVER_PID:+$SERVER_PID }$STARTED_PID"
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      sleep 0.1
      return 0
    fi
    kill -0 "$STARTED_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: server did not start: $*" >&2
  tail -5 "$WORK/server.log" >&2
  exit 1
}

FAILED=0
RUNS=0
export RUST_LOG=warn
# run CELL SIDE SERVER_KIND PING WSBENCH_ARGS...: one measurement. SERVER_KIND
# is echo | broadcast (wsloop modes), tls_echo | tls_broadcast (the same over
# wss://), deflate_echo | deflate_broadcast (the same with permessage-deflate
# offered by wsloop and asked for by wsbench) or raw_echo | raw_fanout.
run() {
  local cell="$1" side="$2" kind="$3" ping="$4"
  shift 4
  # A fresh port for every run: the TIME_WAIT entries a run leaves behind
  # never collide with the next run's connections.
  local port=$((PORT + RUNS)) client=()
  RUNS=$((RUNS + 1))
  case "$kind" in
    echo | broadcast)
      start_server "$port" "$WSLOOP" --listen "127.0.0.1:$port" --mode "$kind" \
        --ping-interval "$ping" --max-connections 100000
      ;;
    tls_echo | tls_broadcast)
      start_server "$port" "$WSLOOP" --listen "127.0.0.1:$port" --mode "${kind#tls_}" \
        --ping-interval "$ping" --max-connections 100000 \
        --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"
      client=(--tls --ca "$WORK/ca.pem")
      ;;
    deflate_echo | deflate_broadcast)
      start_server "$port" "$WSLOOP" --listen "127.0.0.1:$port" --mode "${kind#deflate_}" \
        --ping-interval "$ping" --max-connections 100000 --deflate
      client=(--deflate)
      ;;
    bun_echo | bun_broadcast)
      start_server "$port" "$BUN" benches/peers/bun_server.js "$port" "${kind#bun_}"
      ;;
    node_echo | node_broadcast)
      start_server "$port" node benches/peers/node_ws_server.js "$port" "${kind#node_}"
      ;;
    fastwebsockets_echo)
      start_server "$port" "$FASTWEBSOCKETS" "$port"
      ;;
    raw_echo | raw_fanout)
      client=(--raw)
      if [ "$kind" = raw_echo ] && [ "$ping" != 0 ]; then
        # The raw loop's stand-in for heartbeats: a probe byte per
        # connection per interval, and a reply byte read back.
        start_server "$port" "$RAW_ECHO" --listen "127.0.0.1:$port" --heartbeat "$ping"
      elif [ "$kind" = raw_echo ]; then
        start_server "$port" "$RAW_ECHO" --listen "127.0.0.1:$port"
      else
        start_server "$port" "$RAW_FANOUT" --listen "127.0.0.1:$port"
      fi
      ;;
  esac
  echo "bench: [$cell] $side: wsbench ${client[*]} $*" >&2
  local out status=0
  out="$("${PIN_CLIENT[@]}" "$WSBENCH" --addr "127.0.0.1:$port" --server-pid "$STARTED_PID" \
    --label "$cell/$side" --quiet "${client[@]}" "$@")" || status=$?
  stop_server
  printf '%s\n' "$out" | grep -v '^RESULT ' | sed 's/^/    /' >&2
  local result
  result="$(printf '%s\n' "$out" | grep '^RESULT ' | tail -1 | cut -d' ' -f2-)"
  if [ "$status" -ne 0 ] || [ -z "$result" ]; then
    echo "bench: [$cell] $side FAILED (exit $status)" >&2
    FAILED=1
  fi
  printf '%s\t%s\t%s\n' "$cell" "$side" "${result:-{\}}" >>"$WORK/results.tsv"
}

# pair CELL WS_KIND RAW_KIND ARGS...: wsloop, then the raw loop, same traffic.
pair() {
  local cell="$1" ws="$2" rawkind="$3" rounds=1 round
  shift 3
  [ "$MODE" = full ] && rounds="$REPS"
  for round in $(seq "$rounds"); do
    run "$cell" wsloop "$ws" 0 "$@"
    run "$cell" raw "$rawkind" 0 "$@"
  done
}

# tls_pair CELL echo|broadcast ARGS...: wsloop over wss://, then over ws://,
# same binary and traffic.
tls_pair() {
  local cell="$1" kind="$2" rounds=1 round
  shift 2
  [ "$MODE" = tls ] && rounds="$REPS"
  for round in $(seq "$rounds"); do
    run "$cell" wss "tls_$kind" 0 "$@"
    run "$cell" ws "$kind" 0 "$@"
  done
}

# deflate_pair CELL echo|broadcast ARGS...: wsloop with permessage-deflate
# negotiated, then without, same binary and traffic.
deflate_pair() {
  local cell="$1" kind="$2" rounds=1 round
  shift 2
  [ "$MODE" = deflate ] && rounds="$REPS"
  for round in $(seq "$rounds"); do
    run "$cell" deflate "deflate_$kind" 0 "$@"
    run "$cell" plain "$kind" 0 "$@"
  done
}

# peers CELL echo|broadcast ARGS...: wsloop, Bun, Node's ws, fastwebsockets
# (echo only: it has no fan-out) and the raw loop in turn, BENCH_REPS rounds.
peers() {
  local cell="$1" what="$2" round rawkind=raw_echo
  shift 2
  [ "$what" = broadcast ] && rawkind=raw_fanout
  for round in $(seq "$REPS"); do
    run "$cell" wsloop "$what" 0 "$@"
    run "$cell" bun "bun_$what" 0 "$@"
    run "$cell" node-ws "node_$what" 0 "$@"
    if [ "$what" = echo ]; then
      run "$cell" fastwebsockets fastwebsockets_echo 0 "$@"
    fi
    run "$cell" raw "$rawkind" 0 "$@"
  done
}

# paired CELL SECS: wsloop and the raw loop side by side, one 64-byte round
# trip to each in turn (examples/latency_pair.rs). Each round is one paired
# run; the report shows its p50 and its p99 as two rows.
paired() {
  local cell="$1" secs="$2" rounds=1 round
  [ "$MODE" = full ] && rounds="$REPS"
  for round in $(seq "$rounds"); do
    local ws_port=$((PORT + RUNS)) raw_port=$((PORT + RUNS + 1)) ws_pid raw_pid
    RUNS=$((RUNS + 2))
    start_server "$ws_port" "$WSLOOP" --listen "127.0.0.1:$ws_port" --mode echo --ping-interval 0
    ws_pid="$STARTED_PID"
    start_server "$raw_port" "$RAW_ECHO" --listen "127.0.0.1:$raw_port"
    raw_pid="$STARTED_PID"
    echo "bench: [$cell] round $round: latency_pair, both servers side by side" >&2
    local out status=0
    out="$("${PIN_CLIENT[@]}" "$LATENCY_PAIR" --ws "127.0.0.1:$ws_port" --raw "127.0.0.1:$raw_port" \
      --ws-pid "$ws_pid" --raw-pid "$raw_pid" --label "$cell" --duration "$secs")" || status=$?
    stop_server
    printf '%s\n' "$out" | grep -v '^RESULT ' | sed 's/^/    /' >&2
    local side result
    for side in wsloop raw; do
      result="$(printf '%s\n' "$out" | grep "^RESULT $side " | tail -1 | cut -d' ' -f3-)"
      if [ "$status" -ne 0 ] || [ -z "$result" ]; then
        echo "bench: [$cell] $side FAILED (exit $status)" >&2
        FAILED=1
      fi
      printf '%s\t%s\t%s\n' "$cell: p50" "$side" "${result:-{\}}" >>"$WORK/results.tsv"
      printf '%s\t%s\t%s\n' "$cell: p99" "$side" "${result:+{\"headline\":\"p99\",${result#\{}}" \
        >>"$WORK/results.tsv"
    done
  done
}

: >"$WORK/results.tsv"
if [ "$MODE" = smoke ]; then
  pair "smoke echo" echo raw_echo --mode echo --conns 4 --inflight 4 --size 64 --duration 1
  pair "smoke broadcast" broadcast raw_fanout --mode broadcast --conns 20 --size 64 --duration 1
  pair "smoke connect" echo raw_echo --mode connect --conns 200 --sources 2 --duration 5 --hold 0.5
  run "smoke pings" wsloop echo 0.2 --mode connect --conns 20 --duration 5 --hold 1
  run "smoke pings" raw raw_echo 0.2 --mode connect --conns 20 --duration 5 --hold 1
  paired "smoke paired latency" 1
  tls_pair "smoke tls echo" echo --mode echo --conns 4 --inflight 4 --size 64 --duration 1
  tls_pair "smoke tls broadcast" broadcast --mode broadcast --conns 20 --size 64 --duration 1
  deflate_pair "smoke deflate echo" echo --mode echo --conns 4 --inflight 4 --payload ticker \
    --duration 1
  deflate_pair "smoke deflate broadcast" broadcast --mode broadcast --conns 20 --payload ticker \
    --duration 1
  if [ "$FAILED" -ne 0 ]; then
    echo "bench-smoke: FAILED" >&2
    exit 1
  fi
  echo "bench-smoke: ok ($(wc -l <"$WORK/results.tsv") results)"
  exit 0
fi

if [ "$MODE" = peers ]; then
  BUN=benches/peers/node_modules/.bin/bun
  if [ ! -x "$BUN" ] || [ ! -d benches/peers/node_modules/ws ]; then
    echo "bench: installing the peer servers (npm: bun, ws) into benches/peers"
    npm install --prefix benches/peers --no-audit --no-fund --loglevel=error
  fi
  FASTWEBSOCKETS="$TARGET/peers/release/fastwebsockets-peer"
  echo "bench: building the fastwebsockets peer (benches/peers/fastwebsockets)"
  CARGO_TARGET_DIR="$TARGET/peers" cargo build --release --quiet \
    --manifest-path benches/peers/fastwebsockets/Cargo.toml
  echo "bench: peers: bun $("$BUN" --version), node $(node --version)"
  START=$(date +%s)
  peers "echo 64 B, 100 conns x 16" echo --mode echo --conns 100 --inflight 16 --size 64 \
    --duration "$SECS"
  peers "echo 16 KiB, 10 conns x 4" echo --mode echo --conns 10 --inflight 4 --size 16384 \
    --kind binary --duration "$SECS"
  peers "broadcast 64 B to 1,000" broadcast --mode broadcast --conns 1000 --size 64 --window 64 \
    --duration "$SECS"
  peers "10,000 idle conns" echo --mode connect --conns 10000 --sources 2 --duration 30 --hold 1
  ELAPSED=$(($(date +%s) - START))
  python3 scripts/peers_report.py "$WORK/results.tsv" "$OUT" "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo 'no commit')" "$SECS" "$REPS" "$ELAPSED" \
    "bun $("$BUN" --version), node $(node --version) with ws $(node -p 'require("./benches/peers/node_modules/ws/package.json").version'), fastwebsockets $(sed -n 's/^fastwebsockets = "\(.*\)"/\1/p' benches/peers/fastwebsockets/Cargo.toml) on a current-thread tokio runtime"
  echo "bench: wrote $OUT"
  [ "$FAILED" -eq 0 ] || { echo "bench: some runs FAILED (see above)" >&2; exit 1; }
  exit 0
fi

START=$(date +%s)
if [ "$MODE" = tls ]; then
  tls_pair "echo 64 B, 100 conns x 16" echo \
    --mode echo --conns 100 --inflight 16 --size 64 --duration "$SECS"
  tls_pair "echo 16 KiB, 10 conns x 4" echo \
    --mode echo --conns 10 --inflight 4 --size 16384 --kind binary --duration "$SECS"
  tls_pair "broadcast 64 B to 1,000" broadcast \
    --mode broadcast --conns 1000 --size 64 --window 64 --duration "$SECS"
  # Every connection makes a full TLS handshake (no resumption).
  tls_pair "$IDLE idle conns" echo \
    --mode connect --conns "$IDLE" --sources 4 --duration 60 --hold 1
elif [ "$MODE" = deflate ]; then
  # wsbench compresses every message it sends at zlib's default level, as
  # browsers do; wsloop (default flags) compresses what it sends from 128 B
  # up, so the chat line's replies go out uncompressed.
  deflate_pair "echo chat line (79 B), 100 conns x 16" echo \
    --mode echo --conns 100 --inflight 16 --payload chat --duration "$SECS"
  deflate_pair "echo ticker (200 B), 100 conns x 16" echo \
    --mode echo --conns 100 --inflight 16 --payload ticker --duration "$SECS"
  deflate_pair "echo JSON 16 KiB, 10 conns x 4" echo \
    --mode echo --conns 10 --inflight 4 --payload json16k --duration "$SECS"
  deflate_pair "broadcast ticker (200 B) to 1,000" broadcast \
    --mode broadcast --conns 1000 --payload ticker --window 64 --duration "$SECS"
  # Target: RSS per connection within 16 B of the connections without it.
  deflate_pair "$IDLE idle conns" echo \
    --mode connect --conns "$IDLE" --sources 4 --duration 30 --hold 1
else
  pair "echo 64 B, 100 conns x 16" echo raw_echo \
    --mode echo --conns 100 --inflight 16 --size 64 --duration "$SECS"
  paired "echo 64 B, 1 conn x 1, paired" "$SECS"
  pair "echo 16 KiB, 10 conns x 4" echo raw_echo \
    --mode echo --conns 10 --inflight 4 --size 16384 --kind binary --duration "$SECS"
  pair "broadcast 64 B to 1,000" broadcast raw_fanout \
    --mode broadcast --conns 1000 --size 64 --window 64 --duration "$SECS"
  pair "broadcast 64 B to 10,000" broadcast raw_fanout \
    --mode broadcast --conns 10000 --size 64 --window 64 --duration "$SECS"
  # Four loopback source addresses: the kernel's search for a free ephemeral
  # port of one address made connecting 19,000 sockets client-bound.
  pair "$IDLE idle conns" echo raw_echo \
    --mode connect --conns "$IDLE" --sources 4 --duration 30 --hold 1
  if [ "${BENCH_LONG:-0}" = 1 ]; then
    # Connections opened at 950/s over 20 s, so their heartbeats come spread
    # out as with real clients rather than in one burst. The raw loop sends
    # a probe byte per connection per interval and reads a reply byte.
    idle_cell="$IDLE idle, 20 s pings, 60 s"
    for side in "wsloop echo" "raw raw_echo"; do
      # shellcheck disable=SC2086 # two words on purpose: side and server kind
      run "$idle_cell" $side 20 --mode connect --conns "$IDLE" --sources 4 \
        --connect-rate 950 --duration 30 --hold 60
    done
  fi
fi
ELAPSED=$(($(date +%s) - START))

# The report: a Markdown table of wsloop beside its baseline, cell by cell.
CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
REV="$(git rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
if ! git diff --quiet HEAD -- 2>/dev/null; then
  REV="$REV + uncommitted changes"
fi
PINNED="no"
[ ${#PIN_SERVER[@]} -gt 0 ] && PINNED="server on CPU 0, wsbench on CPU 1 (taskset)"
mkdir -p "$(dirname "$OUT")"
python3 scripts/bench_report.py "$COMPARE" "$WORK/results.tsv" "$OUT" "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  "$(nproc)" "$CPU_MODEL" "$(uname -r)" "$REV" "$PINNED" "$SECS" "$ELAPSED" "$(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench: wrote $OUT"
if [ "$FAILED" -ne 0 ]; then
  echo "bench: some runs FAILED (see above)" >&2
  exit 1
fi
