# wsloop — build, test, benchmark and fuzz entry points.
# `make test` is the whole test suite (what .ci/run calls).

CARGO ?= cargo
VENV  ?= .venv
PY    := $(VENV)/bin/python

.PHONY: run test lint unit autobahn e2e bench fuzz clean

run:
	$(CARGO) run --release

test: lint unit autobahn e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test --all-targets
	$(CARGO) test --doc

$(VENV)/.installed:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet kosoku websockets
	touch $@

autobahn: $(VENV)/.installed
	$(CARGO) build --release --bin wsloop
	$(PY) scripts/autobahn.py --server target/release/wsloop --cases '1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '9.*' '10.*'

e2e:
	bash scripts/e2e.sh

clean:
	$(CARGO) clean
	rm -rf $(VENV) reports artifacts tests/e2e/node_modules
