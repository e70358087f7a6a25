#!/usr/bin/env python3
"""Run the Autobahn TestSuite cases (via kosoku) against a wsloop binary.

Starts the server on a free loopback port in echo mode, runs the selected
cases, prints a summary by outcome, and exits non-zero if any case (or its
closing behaviour) FAILED or is UNIMPLEMENTED, so `make test` fails.
"""

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"autobahn: server exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("autobahn: server did not start listening")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True, help="path to the wsloop binary")
    parser.add_argument("--cases", nargs="+", default=["*"], help="case globs to include")
    parser.add_argument("--outdir", default="reports/autobahn")
    parser.add_argument("--parallelism", type=int, default=4)
    args = parser.parse_args()

    port = free_port()
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    server = subprocess.Popen(
        [args.server, "--listen", f"127.0.0.1:{port}", "--mode", "echo"], env=env
    )
    try:
        wait_for_port(port, server)
        kosoku = Path(sys.executable).parent / "kosoku"
        command = [str(kosoku), "-m", "fuzzingclient", f"127.0.0.1:{port}", "-o", args.outdir,
                   "-p", str(args.parallelism)]
        for case in args.cases:
            command += ["-i", case]
        started = time.monotonic()
        run = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.monotonic() - started
        if server.poll() is not None:
            print(f"autobahn: the server died during the run (status {server.returncode})")
            return 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()

    index_path = Path(args.outdir) / "index.json"
    if not index_path.exists():
        print(run.stdout[-4000:], run.stderr[-4000:])
        print("autobahn: kosoku wrote no index.json")
        return 1
    index = json.loads(index_path.read_text())
    results = {}
    for agent_cases in index.values():
        results.update(agent_cases)
    behaviors = collections.Counter(r["behavior"] for r in results.values())
    bad = {
        case: r for case, r in results.items()
        if r["behavior"] in ("FAILED", "UNIMPLEMENTED") or r.get("behaviorClose") == "FAILED"
    }
    non_strict = sorted(c for c, r in results.items() if r["behavior"] == "NON-STRICT")
    summary = ", ".join(f"{k} {v}" for k, v in sorted(behaviors.items()))
    print(f"autobahn: {len(results)} cases in {elapsed:.1f}s: {summary}")
    if non_strict:
        print("autobahn: NON-STRICT:", " ".join(non_strict))
    for case, r in sorted(bad.items()):
        print(f"autobahn: {case}: {r['behavior']} (close: {r.get('behaviorClose')})")
    passed = len(results) - len(bad)
    print(f"autobahn: {passed} passed, {len(bad)} failed")
    return 1 if bad or not results else 0


if __name__ == "__main__":
    sys.exit(main())
