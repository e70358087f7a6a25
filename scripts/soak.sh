#!/usr/bin/env bash
# Soak test: 10,000 WebSocket connections with heartbeats and random traffic
# for ten minutes against one wsloop server; its RSS must stay flat and no
# connection slot may leak.
#
#   scripts/soak.sh                 the full run (600 s of load, about 11 min
#                                   in all); writes docs/soak-latest.md
#   SOAK_SECS=30 scripts/soak.sh    a quick check of the script itself
#
# Environment:
#   SOAK_SECS=600     seconds of load
#   SOAK_CONNS=10000  long-lived echo connections
#   SOAK_PORT=21900   loopback port (keep it below the ephemeral range, 32768+)
#   SOAK_SAMPLE=10    seconds between samples
#   SOAK_PING=5       the server's --ping-interval; SOAK_PONG=5 its --pong-timeout
#   SOAK_RSS_MARGIN=10  allowed RSS growth in percent (see the checks below)
#   SOAK_RSS_SLACK_KB=1024  ... or in KiB, whichever is larger
#   SOAK_OUT=docs/soak-latest.md
#   SOAK_PIN=1        pin the server to CPU 0 and the load to CPU 1 (taskset;
#                     default on when taskset exists and there are 2+ CPUs)
#
# The load, all started at once and run for SOAK_SECS:
#   - SOAK_CONNS echo connections (one wsbench process), one message in flight
#     each, text of a random size in 16..=512 B, each message after a random
#     pause uniform in 0..8 s (mean 4 s, so about SOAK_CONNS/4 messages/s).
#     A pause over the 5 s ping interval is common (3 in 8), so the server
#     pings these connections all the time and wsbench answers;
#   - 4 connections echoing binary messages of a random size in 16..=256 KiB,
#     each after a pause uniform in 0..0.1 s;
#   - churn, in a loop until the end: each round opens 100..400 connections
#     on a fresh path and, in turn,
#       a) holds them idle for a random 0.2..8 s, answering pings, then closes
#          them with 1000;
#       b) echoes random-size text or binary messages (1..4 in flight, 1 B..
#          4 KiB, random pauses) on half as many for 0.2..8 s, then closes;
#       c) holds them idle and kills the wsbench process (SIGKILL) once they
#          are all open: the server sees the sockets vanish (close code 1006);
#     plus, every round, one refused upgrade (no Sec-WebSocket-Key: 400) and
#     one plain GET /healthz.
# A sampler reads, every SOAK_SAMPLE seconds, the server's VmRSS and open
# descriptors from /proc, its CPU time from /proc/PID/stat and the counters of
# GET /metrics. At the end the load stops (every wsbench closes its
# connections), the script waits, and checks:
#   1. wsloop_connections_open returns to 0 within 15 s, and the server holds
#      as many descriptors as before the load (no leaked slot or socket);
#   2. the accounting closes: accepted_total = sum of closed_total{code}
#      + open + handshake_failures_total + http_requests_total + 1 (the
#      /metrics request being answered is accepted but not yet counted);
#      handshake failures = the refused upgrades sent; closes with code 1006 =
#      the connections of the killed wsbench processes; every other close
#      has code 1000 (a pong timeout would show as an extra 1006);
#   3. RSS: the samples taken under load after a warm-up (the first 60 s,
#      or a fifth of a shorter run, while the connections are opened) are
#      split into three consecutive thirds; the median of the last third
#      must be at most SOAK_RSS_MARGIN % or SOAK_RSS_SLACK_KB KiB (whichever
#      is larger) above the median of the first. (The server's RSS is a few
#      MiB, so the KiB floor keeps a couple of retained 256 KiB buffers from
#      deciding it; about 25,000 connections are accepted between the middles
#      of the two thirds of a full run, so a leak of some 50 bytes per
#      connection would still exceed it. The report also gives the change
#      per connection accepted in between.) Runs shorter than 300 s report
#      this check without judging it: the RSS is still warming up;
#   4. every wsbench run that was not killed exited 0 (no lost, wrong or
#      missing reply, no failed connect, no unexpected close).
# It exits 1 if a check fails. Everything is on 127.0.0.1; every process it
# starts is stopped by its PID (a trap does it on any exit).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${SOAK_SECS:-600}"
CONNS="${SOAK_CONNS:-10000}"
PORT="${SOAK_PORT:-21900}"
SAMPLE="${SOAK_SAMPLE:-10}"
PING="${SOAK_PING:-5}"
PONG="${SOAK_PONG:-5}"
MARGIN="${SOAK_RSS_MARGIN:-10}"
SLACK="${SOAK_RSS_SLACK_KB:-1024}"
OUT="${SOAK_OUT:-docs/soak-latest.md}"
TARGET="${CARGO_TARGET_DIR:-target}"
# The command as run, with the SOAK_* settings that were given.
COMMAND="$(env | grep '^SOAK_' | sort | tr '\n' ' ' || true)scripts/soak.sh"
[ "$PORT" -lt 32768 ] || { echo "soak: SOAK_PORT must be below 32768" >&2; exit 2; }
[ "$SECS" -ge 10 ] && [ "$SECS" -le 3600 ] || { echo "soak: SOAK_SECS in 10..3600" >&2; exit 2; }

echo "soak: building (release)"
cargo build --release --quiet --bin wsloop --example wsbench
# The revision the binaries were built from (taken now: commits may land
# during the run).
REV="$(git rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
if ! git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
  REV="$REV + uncommitted changes in src/"
fi
if ! git diff --quiet HEAD -- examples 2>/dev/null; then
  REV="$REV + uncommitted changes in examples/ (wsbench)"
fi

ulimit -n 20000
if [ "$(ulimit -n)" -lt $((CONNS + 1000)) ]; then
  echo "soak: ulimit -n is $(ulimit -n), too low for $CONNS connections" >&2
  exit 2
fi

WORK="$(mktemp -d)"
# Private copies: a rebuild of target/ during the run cannot change them.
cp "$TARGET/release/wsloop" "$TARGET/release/examples/wsbench" "$WORK/"
WSLOOP="$WORK/wsloop"
WSBENCH="$WORK/wsbench"

PIN_SERVER=()
PIN_CLIENT=()
PINNED="no"
if [ "${SOAK_PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0)
  PIN_CLIENT=(taskset -c 1)
  PINNED="server on CPU 0, all wsbench processes on CPU 1 (taskset)"
fi

SERVER_PID=""
SAMPLER_PID=""
ECHO_PID=""
BIG_PID=""
CHURN_PID=""
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
cleanup() {
  touch "$WORK/stop"
  local pid
  for pid in "$CHURN_PID" "$ECHO_PID" "$BIG_PID" "$SAMPLER_PID" "$SERVER_PID"; do
    if alive "$pid"; then
      kill "$pid" 2>/dev/null || true
      { wait "$pid"; } 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { printf '%s' "$EPOCHREALTIME"; }
# elapsed: seconds since the load started, with two decimals.
elapsed() { awk -v a="$(now)" -v b="$T0" 'BEGIN { printf "%.2f", a - b }'; }
# rand_ms LO HI: a random whole number of milliseconds in LO..HI, as seconds.
rand_secs() {
  local ms=$(($1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1)))
  printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}
metrics() { curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" || true; }
# metric TEXT NAME: a counter's value (0 when absent).
metric() { printf '%s\n' "$1" | awk -v k="$2" '$1 == k { v = $2 } END { print v + 0 }'; }
# closed TEXT CODE: closes with CODE; "other" sums codes besides 1000/1006;
# "all" sums them all.
closed() {
  printf '%s\n' "$1" | awk -v want="$2" '
    /^wsloop_connections_closed_total\{/ {
      match($1, /"[0-9]+"/); code = substr($1, RSTART + 1, RLENGTH - 2)
      if (want == "all" || code == want || (want == "other" && code != 1000 && code != 1006)) s += $2
    }
    END { print s + 0 }'
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0; }
fds() { find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat" 2>/dev/null || echo 0; }

# sample_row PHASE PREV_TICKS PREV_TIME: one CSV row on stdout.
sample_row() {
  local phase="$1" ticks0="$2" t0="$3" m t ticks
  m="$(metrics)"
  t="$(now)"
  ticks="$(cpu_ticks)"
  local cpu
  cpu="$(awk -v a="$ticks" -v b="$ticks0" -v x="$t" -v y="$t0" \
    'BEGIN { d = x - y; if (y > 0 && d > 0.5) printf "%.1f", (a - b) / 100 / d * 100; else printf "" }')"
  printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' \
    "$(awk -v a="$t" -v b="$T0" 'BEGIN { printf "%.1f", a - b }')" "$phase" \
    "$(rss_kb)" "$(fds)" "$(metric "$m" wsloop_connections_open)" \
    "$(metric "$m" wsloop_connections_accepted_total)" "$(closed "$m" 1000)" \
    "$(closed "$m" 1006)" "$(closed "$m" other)" \
    "$(metric "$m" wsloop_handshake_failures_total)" "$(metric "$m" wsloop_http_requests_total)" \
    "$(metric "$m" wsloop_messages_received_total)" "$(metric "$m" wsloop_messages_sent_total)" \
    "$(metric "$m" wsloop_bytes_received_total)" "$(metric "$m" wsloop_bytes_sent_total)" \
    "$(metric "$m" wsloop_dropped_backpressure_total)" "$cpu"
}
CSV_HEAD="t_s,phase,rss_kb,fds,open,accepted,closed_1000,closed_1006,closed_other,hs_failures,http_requests,msgs_in,msgs_out,bytes_in,bytes_out,dropped,cpu_pct"

# The sampler: a row every SAMPLE seconds (on the clock, no drift) until the
# stop file appears; the phase is "load" until the load_done file appears.
sampler() {
  local k=1 ticks t phase
  ticks="$(cpu_ticks)"
  t="$(now)"
  while [ ! -e "$WORK/stop" ]; do
    local due
    due="$(awk -v b="$T0" -v k="$k" -v s="$SAMPLE" 'BEGIN { printf "%.3f", b + k * s }')"
    while [ ! -e "$WORK/stop" ] && awk -v d="$due" -v n="$(now)" 'BEGIN { exit !(n < d) }'; do
      sleep 0.2
    done
    [ -e "$WORK/stop" ] && break
    phase=load
    [ -e "$WORK/load_done" ] && phase=after
    sample_row "$phase" "$ticks" "$t" >>"$WORK/samples.csv"
    ticks="$(cpu_ticks)"
    t="$(now)"
    tail -1 "$WORK/samples.csv" | awk -F, '{ printf "soak: [%6.1fs] RSS %s KiB, open %s, accepted %s, closed %s+%s+%s, CPU %s%%\n", $1, $3, $5, $6, $7, $8, $9, $17 }' >&2
    k=$((k + 1))
  done
}

# The server.
export RUST_LOG=warn
SERVER_ARGS=(--listen "127.0.0.1:$PORT" --mode echo --ping-interval "$PING" --pong-timeout "$PONG")
"${PIN_SERVER[@]}" "$WSLOOP" "${SERVER_ARGS[@]}" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
  if curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/healthz"; then
    break
  fi
  alive "$SERVER_PID" || break
  sleep 0.05
done
if ! curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/healthz"; then
  echo "soak: the server did not start" >&2
  tail -5 "$WORK/server.log" >&2
  exit 1
fi
LOAD_START_AVG="$(cut -d' ' -f1-3 /proc/loadavg)"
DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
T0="$(now)"
echo "$CSV_HEAD" >"$WORK/samples.csv"
sample_row baseline 0 0 >>"$WORK/samples.csv"
FDS_BEFORE="$(fds)"

# The load.
ECHO_ARGS=(--addr "127.0.0.1:$PORT" --path /soak/echo --mode echo --conns "$CONNS"
  --inflight 1 --size 16 --size-max 512 --pause 4 --duration "$SECS" --progress)
BIG_ARGS=(--addr "127.0.0.1:$PORT" --path /soak/big --mode echo --conns 4 --inflight 1
  --size 16384 --size-max 262144 --kind binary --pause 0.05 --duration "$SECS" --quiet)
echo "soak: $SECS s of load on 127.0.0.1:$PORT; server: wsloop ${SERVER_ARGS[*]}"
"${PIN_CLIENT[@]}" "$WSBENCH" "${ECHO_ARGS[@]}" --server-pid "$SERVER_PID" \
  >"$WORK/echo.out" 2>"$WORK/echo.err" &
ECHO_PID=$!
"${PIN_CLIENT[@]}" "$WSBENCH" "${BIG_ARGS[@]}" >"$WORK/big.out" 2>"$WORK/big.err" &
BIG_PID=$!
sampler &
SAMPLER_PID=$!

# The churn, in this shell until the deadline.
DEADLINE="$(awk -v b="$T0" -v s="$SECS" 'BEGIN { printf "%.3f", b + s }')"
before_deadline() { awk -v d="$DEADLINE" -v n="$(now)" 'BEGIN { exit !(n < d - 1) }'; }
ROUNDS=0
CHURN_FAILED=0
KILLED_RUNS=0
KILLED_CONNS=0
REFUSED_SENT=0
REFUSED_WRONG=0
: >"$WORK/churn.results"
while before_deadline; do
  ROUNDS=$((ROUNDS + 1))
  n=$((100 + RANDOM % 301))
  hold="$(rand_secs 200 8000)"
  path="/soak/churn/$ROUNDS"
  case $((ROUNDS % 3)) in
    1)
      "${PIN_CLIENT[@]}" "$WSBENCH" --addr "127.0.0.1:$PORT" --path "$path" --mode connect \
        --conns "$n" --duration 10 --hold "$hold" --quiet >"$WORK/churn.out" 2>&1 &
      ;;
    2)
      kinds=(text binary)
      "${PIN_CLIENT[@]}" "$WSBENCH" --addr "127.0.0.1:$PORT" --path "$path" --mode echo \
        --conns $((n / 2)) --inflight $((1 + RANDOM % 4)) --size 1 --size-max 4096 \
        --kind "${kinds[RANDOM % 2]}" --pause "$(rand_secs 1 2000)" --duration "$hold" \
        --quiet >"$WORK/churn.out" 2>&1 &
      ;;
    0)
      "${PIN_CLIENT[@]}" "$WSBENCH" --addr "127.0.0.1:$PORT" --path "$path" --mode connect \
        --conns "$n" --duration 10 --hold 8 --progress >"$WORK/churn.out" 2>"$WORK/churn.err" &
      ;;
  esac
  CHURN_PID=$!
  # One refused upgrade (no Sec-WebSocket-Key) and one plain request.
  code="$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' -H 'Connection: Upgrade' \
    -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' "http://127.0.0.1:$PORT/soak/bad")" || true
  REFUSED_SENT=$((REFUSED_SENT + 1))
  [ "$code" = 400 ] || REFUSED_WRONG=$((REFUSED_WRONG + 1))
  curl -s --max-time 5 -o /dev/null "http://127.0.0.1:$PORT/healthz" || true
  if [ $((ROUNDS % 3)) = 0 ]; then
    # Kill it once every connection is open (the "holding" progress line).
    opened=""
    for _ in $(seq 150); do
      opened="$(awk '/holding/ { v = $NF } END { print v }' "$WORK/churn.err" 2>/dev/null)"
      [ -n "$opened" ] && break
      alive "$CHURN_PID" || break
      sleep 0.1
    done
    sleep "$(rand_secs 0 1500)"
    if [ -n "$opened" ] && alive "$CHURN_PID"; then
      kill -KILL "$CHURN_PID"
      { wait "$CHURN_PID"; } 2>/dev/null || true
      KILLED_RUNS=$((KILLED_RUNS + 1))
      KILLED_CONNS=$((KILLED_CONNS + opened))
    else
      echo "soak: churn round $ROUNDS: not all connections opened in time" >&2
      { wait "$CHURN_PID"; } 2>/dev/null || true
      CHURN_FAILED=$((CHURN_FAILED + 1))
    fi
  else
    status=0
    wait "$CHURN_PID" || status=$?
    grep '^RESULT ' "$WORK/churn.out" | cut -d' ' -f2- >>"$WORK/churn.results" || true
    if [ "$status" -ne 0 ]; then
      CHURN_FAILED=$((CHURN_FAILED + 1))
      echo "soak: churn round $ROUNDS failed (exit $status):" >&2
      grep -v '^RESULT ' "$WORK/churn.out" | sed 's/^/    /' >&2
    fi
  fi
  CHURN_PID=""
done
echo "soak: churn done after $ROUNDS rounds at $(elapsed) s; waiting for the echo load to end"

# The long runs end on their own (duration + connect, drain and close time);
# give them two minutes at most.
# wait_bounded PID: sets WAIT_STATUS (124 if it had to be stopped).
wait_bounded() {
  local pid="$1" limit
  WAIT_STATUS=0
  limit="$(awk -v d="$DEADLINE" 'BEGIN { printf "%.3f", d + 120 }')"
  while alive "$pid" && awk -v d="$limit" -v n="$(now)" 'BEGIN { exit !(n < d) }'; do
    sleep 0.2
  done
  if alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    { wait "$pid"; } 2>/dev/null || true
    WAIT_STATUS=124
    return
  fi
  wait "$pid" || WAIT_STATUS=$?
}
wait_bounded "$ECHO_PID"
ECHO_STATUS=$WAIT_STATUS
ECHO_PID=""
wait_bounded "$BIG_PID"
BIG_STATUS=$WAIT_STATUS
BIG_PID=""
touch "$WORK/load_done"
LOAD_END="$(elapsed)"
echo "soak: load over at $LOAD_END s (echo exit $ECHO_STATUS, big exit $BIG_STATUS); settling"

# Settle, then wait (15 s at most) for the open gauge to reach 0.
sleep 5
OPEN_END=-1
for _ in $(seq 15); do
  m="$(metrics)"
  OPEN_END="$(metric "$m" wsloop_connections_open)"
  [ "$OPEN_END" = 0 ] && break
  sleep 1
done
OPEN_ZERO_AT="$(elapsed)"
sleep 1
FDS_END="$(fds)"
FINAL="$(metrics)"
touch "$WORK/stop"
{ wait "$SAMPLER_PID"; } 2>/dev/null || true
SAMPLER_PID=""
sample_row final 0 0 >>"$WORK/samples.csv"
LOAD_END_AVG="$(cut -d' ' -f1-3 /proc/loadavg)"
kill "$SERVER_PID" 2>/dev/null || true
SERVER_STATUS=0
wait "$SERVER_PID" || SERVER_STATUS=$?
SERVER_PID=""

# The report and the checks.
CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
grep '^RESULT ' "$WORK/echo.out" | tail -1 | cut -d' ' -f2- >"$WORK/echo.json" || true
grep '^RESULT ' "$WORK/big.out" | tail -1 | cut -d' ' -f2- >"$WORK/big.json" || true
grep -v '^RESULT ' "$WORK/echo.out" >"$WORK/echo.txt" || true
grep -v '^RESULT ' "$WORK/big.out" >"$WORK/big.txt" || true
printf '%s\n' "$FINAL" | grep -v '^#' >"$WORK/final.prom" || true
mkdir -p "$(dirname "$OUT")"
status=0
python3 - "$WORK" "$OUT" <<PY || status=$?
import csv, json, os, statistics, sys

work, out = sys.argv[1:]
env = {
    "secs": $SECS, "conns": $CONNS, "sample": $SAMPLE, "margin": $MARGIN, "slack": $SLACK,
    "date": "$DATE", "nproc": "$(nproc)", "cpu": "$CPU_MODEL", "kernel": "$(uname -r)",
    "rev": "$REV", "pinned": "$PINNED", "load_start": "$LOAD_START_AVG",
    "load_end": "$LOAD_END_AVG", "command": "$COMMAND",
    "server": "wsloop ${SERVER_ARGS[*]}",
    "echo_args": "wsbench ${ECHO_ARGS[*]}", "big_args": "wsbench ${BIG_ARGS[*]}",
    "echo_status": $ECHO_STATUS, "big_status": $BIG_STATUS, "server_status": $SERVER_STATUS,
    "rounds": $ROUNDS, "churn_failed": $CHURN_FAILED, "killed_runs": $KILLED_RUNS,
    "killed_conns": $KILLED_CONNS, "refused_sent": $REFUSED_SENT,
    "refused_wrong": $REFUSED_WRONG, "open_end": $OPEN_END, "open_zero_at": $OPEN_ZERO_AT,
    "load_end_s": $LOAD_END, "fds_before": $FDS_BEFORE, "fds_end": $FDS_END,
}
rows = list(csv.DictReader(open(os.path.join(work, "samples.csv"))))
num = lambda r, k: float(r[k]) if r[k] not in ("", None) else None
final = {}
for line in open(os.path.join(work, "final.prom")):
    parts = line.split()
    if len(parts) == 2:
        final[parts[0]] = int(float(parts[1]))
def load_json(name):
    try:
        return json.loads(open(os.path.join(work, name)).read())
    except Exception:
        return {}
echo, big = load_json("echo.json"), load_json("big.json")
churn = [json.loads(l) for l in open(os.path.join(work, "churn.results")) if l.strip()]
server_log = open(os.path.join(work, "server.log")).read().splitlines()

secs = env["secs"]
warm = min(60.0, secs / 5)
load = [r for r in rows if r["phase"] == "load"]
# The samples after the warm-up, split by count into three consecutive thirds.
steady_rows = [r for r in load if num(r, "t_s") >= warm]
steady = [num(r, "rss_kb") for r in steady_rows]
k = len(steady) // 3
first, middle, last = steady[:k], steady[k:len(steady) - k], steady[len(steady) - k:]
between = (num(steady_rows[len(steady) - 1 - k // 2], "accepted") - num(steady_rows[k // 2], "accepted")) if k else 0
med = lambda v: statistics.median(v) if v else None
checks = []
def check(name, ok, detail):
    checks.append((name, ok, detail))

closed = {k: v for k, v in final.items() if k.startswith("wsloop_connections_closed_total")}
closed_sum = sum(closed.values())
c1006 = final.get('wsloop_connections_closed_total{code="1006"}', 0)
c1000 = final.get('wsloop_connections_closed_total{code="1000"}', 0)
accepted = final.get("wsloop_connections_accepted_total", -1)
open_now = final.get("wsloop_connections_open", -1)
hs = final.get("wsloop_handshake_failures_total", 0)
http = final.get("wsloop_http_requests_total", 0)
accounted = closed_sum + open_now + hs + http + 1

check("open connections return to 0", env["open_end"] == 0 and open_now == 0,
      f"wsloop_connections_open = {open_now} at {env['open_zero_at']:.0f} s "
      f"({env['open_zero_at'] - env['load_end_s']:.0f} s after the load ended)")
check("server descriptors back to the pre-load count", env["fds_end"] == env["fds_before"],
      f"{env['fds_before']} before the load, {env['fds_end']} after")
check("accepted = closed + open + handshake failures + HTTP requests + 1", accepted == accounted,
      f"{accepted:,} accepted; {closed_sum:,} closed + {open_now} open + {hs:,} refused "
      f"+ {http:,} HTTP + 1 = {accounted:,}")
check("handshake failures = refused upgrades sent", hs == env["refused_sent"] and env["refused_wrong"] == 0,
      f"{hs:,} counted, {env['refused_sent']:,} sent ({env['refused_wrong']} not answered 400)")
check("closes with 1006 = connections of killed clients", c1006 == env["killed_conns"],
      f"{c1006:,} closed with 1006, {env['killed_conns']:,} connections in {env['killed_runs']} killed wsbench runs")
check("every other close is 1000", closed_sum == c1000 + c1006,
      ", ".join(f"{k.split('=')[1].strip('}').strip(chr(34))}: {v:,}" for k, v in closed.items()))
judged = secs >= 300
if first and last:
    limit = med(first) + max(med(first) * env["margin"] / 100, env["slack"])
    check(f"RSS: median of the last third <= median of the first third "
          f"+ max({env['margin']}%, {env['slack']} KiB)",
          med(last) <= limit or not judged,
          ("" if judged else "not judged, the run is shorter than 300 s: ") +
          f"first third ({len(first)} samples from {warm:.0f} s) {med(first):,.0f} KiB, last third ({len(last)} samples) {med(last):,.0f} KiB "
          f"(limit {limit:,.0f} KiB; {(med(last) / med(first) - 1) * 100:+.1f}%, "
          f"{(med(last) - med(first)) * 1024 / max(between, 1):+.0f} B per connection accepted "
          f"between the middles of the two thirds, {between:,.0f})")
else:
    check("RSS samples in the first and last thirds", not judged,
          ("" if judged else "not judged, the run is shorter than 300 s: ") + "too few samples")
bad_echo = [(n, r) for n, r in (("10k echo", echo), ("large messages", big))
            if not r or r.get("errors") or r.get("lost") or r.get("connect_failed")]
check("wsbench runs all clean", env["echo_status"] == 0 and env["big_status"] == 0
      and env["churn_failed"] == 0 and not bad_echo,
      f"echo exit {env['echo_status']}, large-message exit {env['big_status']}, "
      f"{env['churn_failed']} failed churn rounds of {env['rounds']}")
failed = [c for c in checks if not c[1]]

opens = [num(r, "open") for r in load]
cpus = [num(r, "cpu_pct") for r in load if num(r, "cpu_pct") is not None]
churn_opened = sum(r.get("opened", 0) or 0 for r in churn if r.get("mode") == "connect")
churn_echo_conns = sum(r.get("conns", 0) for r in churn if r.get("mode") == "echo")
churn_pings = sum(r.get("pings", 0) or 0 for r in churn)
churn_rts = sum(r.get("round_trips", 0) or 0 for r in churn if r.get("mode") == "echo")
pings = (echo.get("pings") or 0) + (big.get("pings") or 0) + churn_pings
fmt = lambda v: "–" if v is None else f"{v:,.0f}"
warn_lines = [l for l in server_log if " WARN " in l or " ERROR " in l or "panic" in l]

L = [
    "# wsloop soak test: latest run",
    "",
    f"- date: {env['date']}; built from revision {env['rev']}",
    f"- machine: {env['nproc']} CPUs, {env['cpu']}, Linux {env['kernel']}; load average "
    f"{env['load_start']} at the start, {env['load_end']} at the end (the machine is shared: "
    "other jobs, such as fuzzers, may have run at the same time)",
    f"- pinning: {env['pinned']}",
    f"- command: \`{env['command']}\` ({secs} s of load, a sample every {env['sample']} s)",
    f"- server: \`{env['server']}\`",
    f"- {env['conns']:,} echo connections: \`{env['echo_args']}\`",
    f"- large messages: \`{env['big_args']}\`",
    f"- churn: {env['rounds']} rounds of 100..400 connections on fresh paths (idle hold of 0.2..8 s, "
    "random-size echo on half as many, or SIGKILL of the client once all are open), plus one "
    "refused upgrade and one GET /healthz per round; see scripts/soak.sh",
    "",
    "## Summary",
    "",
    f"- server RSS (median): first third {fmt(med(first))} KiB, middle third {fmt(med(middle))} KiB, "
    f"last third {fmt(med(last))} KiB; max {fmt(max((num(r, 'rss_kb') for r in load), default=None))} KiB; "
    f"{fmt(num(rows[0], 'rss_kb'))} KiB before the load, {fmt(num(rows[-1], 'rss_kb'))} KiB after it",
    f"- open connections: max {fmt(max(opens, default=None))} in the samples, {open_now} at the end",
    f"- connections accepted: {accepted:,} (churn: {churn_opened:,} idle connections in the finished "
    f"rounds, {churn_echo_conns:,} echo connections, {env['killed_conns']:,} killed)",
    f"- messages: {final.get('wsloop_messages_received_total', 0):,} received and "
    f"{final.get('wsloop_messages_sent_total', 0):,} sent by the server "
    f"({final.get('wsloop_bytes_received_total', 0) / 1e9:.2f} GB in, "
    f"{final.get('wsloop_bytes_sent_total', 0) / 1e9:.2f} GB out); round trips checked by wsbench: "
    f"{echo.get('round_trips', 0):,} on the {env['conns']:,} connections "
    f"(p50 {echo.get('lat_p50_us', 0):.0f} µs, p99 {echo.get('lat_p99_us', 0):.0f} µs, "
    f"max {echo.get('lat_max_us', 0) / 1000:.1f} ms), {big.get('round_trips', 0):,} large "
    f"({big.get('mb_per_s', 0):.1f} MB/s each way, p99 {big.get('lat_p99_us', 0) / 1000:.1f} ms), "
    f"{churn_rts:,} in churn rounds",
    f"- pings answered by wsbench: {pings:,} ({echo.get('pings', 0):,} on the long-lived connections)",
    f"- server CPU: mean {statistics.mean(cpus) if cpus else 0:.1f}%, max {max(cpus, default=0):.1f}% of one core",
    f"- messages dropped for backpressure: {final.get('wsloop_dropped_backpressure_total', 0)}; "
    f"handler panics: {final.get('wsloop_handler_panics_total', 0)}; server exit status {env['server_status']}; "
    f"{len(warn_lines)} warnings or errors in the server log",
    "",
    "## Checks",
    "",
    "| check | outcome | detail |",
    "|---|---|---|",
]
for name, ok, detail in checks:
    outcome = "–" if detail.startswith("not judged") else "pass" if ok else "**FAIL**"
    L.append(f"| {name} | {outcome} | {detail} |")
L += [
    "",
    "The RSS criterion compares medians so one sample taken while a 256 KiB message was",
    "queued does not decide it; the first third leaves out the warm-up, when the",
    f"{env['conns']:,} connections are still being opened. The accounting identity holds",
    "because every accepted connection ends up in exactly one of: closed (by code), open,",
    "a refused or timed-out upgrade, or a plain HTTP request; the \`+ 1\` is the final",
    "/metrics request itself. A peer that hangs up before finishing its upgrade request",
    "is in none of them, and the soak load makes none.",
    "",
    "## Samples",
    "",
    "t is seconds since the load started; closed columns are running totals; CPU is the",
    "server's share of one core since the previous sample.",
    "",
    "| t (s) | phase | RSS (KiB) | fds | open | accepted | closed 1000 | closed 1006 | other | refused "
    "| HTTP | msgs in | msgs out | MB in | MB out | CPU % |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for r in rows:
    L.append("| " + " | ".join([
        r["t_s"], r["phase"], fmt(num(r, "rss_kb")), r["fds"], fmt(num(r, "open")),
        fmt(num(r, "accepted")), fmt(num(r, "closed_1000")), fmt(num(r, "closed_1006")),
        r["closed_other"], fmt(num(r, "hs_failures")), fmt(num(r, "http_requests")),
        fmt(num(r, "msgs_in")), fmt(num(r, "msgs_out")),
        f"{num(r, 'bytes_in') / 1e6:,.1f}", f"{num(r, 'bytes_out') / 1e6:,.1f}",
        r["cpu_pct"] or "–"]) + " |")
L += ["", "## wsbench output", "", "\`\`\`"]
for name in ("echo.txt", "big.txt"):
    L += [l for l in open(os.path.join(work, name)).read().splitlines()]
L += ["\`\`\`", ""]
if warn_lines:
    L += ["## Server warnings", "", "\`\`\`"] + warn_lines[:20] + ["\`\`\`", ""]
L += ["## Final /metrics", "", "\`\`\`"] + open(os.path.join(work, "final.prom")).read().splitlines() + ["\`\`\`", ""]
open(out, "w").write("\n".join(L))
for name, ok, detail in checks:
    outcome = "--  " if detail.startswith("not judged") else "ok  " if ok else "FAIL"
    print(f"soak: {outcome} {name}: {detail}")
sys.exit(1 if failed else 0)
PY
echo "soak: wrote $OUT"
if [ "$status" -ne 0 ]; then
  echo "soak: FAILED" >&2
  exit 1
fi
echo "soak: ok"
