# wsloop — build, test, benchmark and fuzz entry points.
# `make test` is the whole test suite (what .ci/run calls).

CARGO ?= cargo
VENV  ?= .venv
PY    := $(VENV)/bin/python

.PHONY: run test lint unit autobahn autobahn-tls autobahn-deflate tls-e2e deflate-e2e e2e bench bench-smoke bench-peers bench-tls bench-deflate bench-codec fuzz fuzz-smoke clean

run:
	$(CARGO) run --release

# Every optional feature is built and tested on as well as off: `tls`
# (rustls on ring), `tls-aws-lc` (the same on AWS-LC) and `deflate`
# (permessage-deflate), one set at a time.
FEATURE_SETS ?= tls tls-aws-lc deflate

test: lint unit autobahn autobahn-tls autobahn-deflate tls-e2e deflate-e2e bench-smoke fuzz-smoke e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --all-features

unit:
	$(CARGO) test --all-targets
	$(CARGO) test --doc
	for features in $(FEATURE_SETS); do \
	  $(CARGO) test --all-targets --features "$$features" && \
	  $(CARGO) test --doc --features "$$features" || exit 1; \
	done

$(VENV)/.installed:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet kosoku websockets
	touch $@

autobahn: $(VENV)/.installed
	$(CARGO) build --release --bin wsloop
	$(PY) scripts/autobahn.py --server target/release/wsloop --cases '1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '9.*' '10.*'

# The same cases through TLS: kosoku speaks no TLS, so socat bridges it.
autobahn-tls: $(VENV)/.installed
	$(CARGO) build --release --features tls --bin wsloop
	$(PY) scripts/autobahn.py --tls --server target/release/wsloop --outdir reports/autobahn-tls --cases '1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '9.*' '10.*'

# permessage-deflate on: its cases (12.* and 13.*, 216) and 1.*-10.* again.
autobahn-deflate: $(VENV)/.installed
	$(CARGO) build --release --features deflate --bin wsloop
	$(PY) scripts/autobahn.py --deflate --server target/release/wsloop --outdir reports/autobahn-deflate --cases '1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '9.*' '10.*' '12.*' '13.*'

# wss:// and https:// against real clients: Python websockets, openssl
# s_client (TLS 1.2 and 1.3), certificate reload, graceful shutdown.
tls-e2e: $(VENV)/.installed
	bash scripts/tls_e2e.sh

# permessage-deflate against Python websockets and Node ws clients.
deflate-e2e: $(VENV)/.installed
	bash scripts/deflate_e2e.sh

e2e:
	bash scripts/e2e.sh

# Load benchmarks (release build, server and load generator pinned to
# separate cores); writes docs/bench-latest.md. BENCH_LONG=1 adds the 60 s
# idle-heartbeat cell.
bench:
	bash scripts/bench.sh

# One-second run of each wsbench mode against the server (part of CI).
bench-smoke:
	bash scripts/bench.sh --smoke

# wsloop beside Bun (uWebSockets inside) and Node's ws, installed from npm
# into benches/peers; writes docs/peers-latest.md.
bench-peers:
	bash scripts/bench.sh --peers

# wss:// beside ws:// on the same binary; writes docs/bench-tls-latest.md.
bench-tls:
	bash scripts/bench.sh --tls

# permessage-deflate beside without on the same binary (JSON payloads; server
# CPU and wire bytes per message); writes docs/bench-deflate-latest.md.
bench-deflate:
	bash scripts/bench.sh --deflate

bench-codec:
	$(CARGO) bench --bench codec

# Long local fuzzing run: every target for 10 minutes (FUZZ_TIME=seconds).
fuzz:
	bash scripts/fuzz.sh

# Every fuzz target for 25 s; fails on any crash, including a seed that
# regressed (part of CI).
fuzz-smoke:
	bash scripts/fuzz.sh --smoke

clean:
	$(CARGO) clean
	rm -rf $(VENV) reports artifacts tests/e2e/node_modules benches/peers/node_modules fuzz/target fuzz/corpus-run fuzz/artifacts fuzz/logs
