#!/usr/bin/env bash
# Runs wsloop's cargo-fuzz targets (fuzz/fuzz_targets/*.rs) with libFuzzer.
#
#   scripts/fuzz.sh                      every target for FUZZ_TIME seconds (default 600)
#   scripts/fuzz.sh --smoke              every target for 25 s (CI)
#   scripts/fuzz.sh [--time S] TARGET... the named targets only
#   scripts/fuzz.sh --repro TARGET FILE  runs one input (e.g. a crash artifact)
#   scripts/fuzz.sh --tmin TARGET FILE   minimises a crashing input
#
# Needs only rustup's stable toolchain and a C++ compiler: cargo-fuzz is
# installed if missing, and RUSTC_BOOTSTRAP=1 lets stable rustc take the
# -Z flags cargo-fuzz passes (sanitizer, coverage instrumentation).
#
# Seeds are read from fuzz/corpus/TARGET (kept in git, never written);
# new inputs go to fuzz/corpus-run/TARGET, crashes to fuzz/artifacts/TARGET,
# the libFuzzer output to fuzz/logs/TARGET.log. Exits non-zero on a crash.
#
# Environment: FUZZ_TIME (seconds per target), FUZZ_SANITIZER (address,
# the default, or none), FUZZ_ARGS (extra libFuzzer flags), CARGO.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
CARGO=${CARGO:-cargo}
TARGETS=(handshake decoder connection inflate)
SANITIZER=${FUZZ_SANITIZER:-address}
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

time_per_target=${FUZZ_TIME:-600}
mode=run
chosen=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --smoke) time_per_target=${FUZZ_TIME:-25}; shift ;;
        --time) time_per_target=$2; shift 2 ;;
        --repro) mode=repro; shift ;;
        --tmin) mode=tmin; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) chosen+=("$1"); shift ;;
    esac
done

# Per-target libFuzzer flags. -max_len bounds the input; -timeout is per
# input. The dictionary holds HTTP and RFC 6455 tokens.
flags_for() {
    local common=(-rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1)
    case $1 in
        handshake) echo "${common[@]} -dict=dict/websocket.dict -max_len=10000 -timeout=10" ;;
        decoder) echo "${common[@]} -max_len=8192 -timeout=10" ;;
        connection) echo "${common[@]} -dict=dict/websocket.dict -max_len=8192 -timeout=10" ;;
        inflate) echo "${common[@]} -max_len=16384 -timeout=10" ;;
        *) echo "fuzz.sh: unknown target $1 (targets: ${TARGETS[*]})" >&2; exit 2 ;;
    esac
}

# libfuzzer-sys compiles libFuzzer (C++) from source.
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "fuzz.sh: installing g++" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
    else
        echo "fuzz.sh: a C++ compiler (g++) is needed to build libFuzzer" >&2
        exit 1
    fi
fi
if ! "$CARGO" fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    "$CARGO" install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

binary() {
    echo "target/x86_64-unknown-linux-gnu/release/$1"
}

build() {
    "$CARGO" fuzz build --sanitizer "$SANITIZER" "$@"
}

if [[ $mode != run ]]; then
    [[ ${#chosen[@]} -eq 2 ]] || { echo "usage: fuzz.sh --$mode TARGET FILE" >&2; exit 2; }
    target=${chosen[0]}
    file=$(cd "$OLDPWD" && realpath "${chosen[1]}")
    build "$target"
    if [[ $mode == repro ]]; then
        # shellcheck disable=SC2046
        exec "$(binary "$target")" $(flags_for "$target") "$file"
    fi
    exec "$CARGO" fuzz tmin --sanitizer "$SANITIZER" "$target" "$file" -- $(flags_for "$target")
fi

[[ ${#chosen[@]} -gt 0 ]] || chosen=("${TARGETS[@]}")
for target in "${chosen[@]}"; do flags_for "$target" >/dev/null; done

build
mkdir -p logs
summary=()
failed=()
for target in "${chosen[@]}"; do
    mkdir -p "corpus-run/$target" "artifacts/$target"
    log="logs/$target.log"
    echo "fuzz.sh: $target for ${time_per_target}s (log: fuzz/$log)" >&2
    started=$SECONDS
    # shellcheck disable=SC2046
    if "$(binary "$target")" $(flags_for "$target") ${FUZZ_ARGS:-} \
        -max_total_time="$time_per_target" -artifact_prefix="artifacts/$target/" \
        "corpus-run/$target" "corpus/$target" >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        failed+=("$target")
        tail -n 60 "$log" >&2
    fi
    elapsed=$((SECONDS - started))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
    summary+=("$(printf '%-11s %-6s %6ss %12s %8s %6s %7s %12s %6s' "$target" "$status" "$elapsed" \
        "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "${corp:--}" "${rss:--}")")
done

printf '%-11s %-6s %7s %12s %8s %6s %7s %12s %6s\n' target status time execs exec/s cov ft corpus rss_mb
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: crash in: ${failed[*]}; inputs are in fuzz/artifacts/<target>/;" \
        "reproduce with scripts/fuzz.sh --repro TARGET FILE" >&2
    exit 1
fi
