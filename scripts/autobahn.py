#!/usr/bin/env python3
"""Run the Autobahn TestSuite cases (via kosoku) against a wsloop binary.

Starts the server on a free loopback port in echo mode, runs the selected
cases, prints a summary by outcome, and exits non-zero if any case (or its
closing behaviour) FAILED or is UNIMPLEMENTED, so `make test` fails.

With --tls the server serves wss:// with a throwaway self-signed certificate
(made with the openssl CLI in the outdir). kosoku speaks no TLS, so socat
bridges it: kosoku -> plain TCP -> socat -> TLS -> wsloop. Results are judged
exactly as in the plain run. Every process the script starts is killed by
its PID (socat's forked children with it: socat leads its own process group),
also when the run fails or the script is interrupted.
"""

import argparse
import collections
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Generous: the plain run of cases 1.* to 10.* takes well under a minute.
KOSOKU_TIMEOUT = 900.0


def free_port() -> int:
    """A loopback port that was free a moment ago, below the kernel's
    ephemeral range: while nothing listens there yet, a probe cannot be
    given the same port as its own end and connect to itself."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.randrange(10_000, max(low, 10_001))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    sys.exit(f"autobahn: no free port below {low}")


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"autobahn: {what} exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"autobahn: {what} did not start listening on port {port}")


def make_cert(outdir: Path) -> tuple[Path, Path]:
    """A throwaway self-signed P-256 certificate for localhost/127.0.0.1."""
    cert, key = outdir / "tls-cert.pem", outdir / "tls-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def stop(proc: subprocess.Popen | None, group: bool = False) -> None:
    """SIGTERM the process (its group if it leads one), SIGKILL after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass
    if group:
        # The group may outlive its leader (a forked child still bridging).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="path to the wsloop binary")
    parser.add_argument("--cases", nargs="+", default=["*"], help="case globs to include")
    parser.add_argument("--outdir", default="reports/autobahn")
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--tls", action="store_true",
                        help="serve wss:// (self-signed) and bridge kosoku to it through socat")
    parser.add_argument("--deflate", action="store_true",
                        help="offer permessage-deflate (a build with the `deflate` feature)")
    parser.add_argument("--socat-options", default="",
                        help="extra socat options before the addresses, e.g. '-t 5' (with --tls)")
    args = parser.parse_args()

    # SIGTERM/SIGHUP from make or a shell: unwind through the finally below.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))

    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    index_path = outdir / "index.json"
    index_path.unlink(missing_ok=True)  # never judge a previous run's results

    port = free_port()
    server_cmd = [args.server, "--listen", f"127.0.0.1:{port}", "--mode", "echo"]
    if args.deflate:
        # Every message compressed: kosoku fails a case on any uncompressed
        # echo over a compressed connection ("Strings must be encoded
        # before hashing"), though RFC 7692 lets each message choose.
        server_cmd += ["--deflate", "--deflate-threshold", "0"]
    if args.tls:
        if shutil.which("socat") is None:
            sys.exit("autobahn: --tls needs socat (Debian: apt-get install socat)")
        cert, key = make_cert(outdir)
        server_cmd += ["--tls-cert", str(cert), "--tls-key", str(key)]
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn,rustls=error"))

    server = socat = None
    try:
        server = subprocess.Popen(server_cmd, env=env)
        wait_for_port(port, server, "the server")
        target = port
        if args.tls:
            bridge = free_port()
            socat_cmd = (["socat"] + args.socat_options.split()
                         + [f"TCP-LISTEN:{bridge},bind=127.0.0.1,fork,reuseaddr",
                            f"OPENSSL:127.0.0.1:{port},verify=0"])
            print("autobahn: TLS bridge:", " ".join(socat_cmd), flush=True)
            socat = subprocess.Popen(socat_cmd, start_new_session=True)
            wait_for_port(bridge, socat, "socat")
            target = bridge
        kosoku = Path(sys.executable).parent / "kosoku"
        command = [str(kosoku), "-m", "fuzzingclient", f"127.0.0.1:{target}", "-o", args.outdir,
                   "-p", str(args.parallelism)]
        for case in args.cases:
            command += ["-i", case]
        started = time.monotonic()
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=KOSOKU_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"autobahn: kosoku did not finish within {KOSOKU_TIMEOUT:.0f}s")
            return 1
        elapsed = time.monotonic() - started
        if server.poll() is not None:
            print(f"autobahn: the server died during the run (status {server.returncode})")
            return 1
        if socat is not None and socat.poll() is not None:
            print(f"autobahn: socat died during the run (status {socat.returncode})")
            return 1
    finally:
        stop(socat, group=True)
        stop(server)

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
    mode = " over TLS (socat bridge)" if args.tls else ""
    if args.deflate:
        mode += " with permessage-deflate"
    print(f"autobahn: {len(results)} cases{mode} in {elapsed:.1f}s: {summary}")
    if non_strict:
        print("autobahn: NON-STRICT:", " ".join(non_strict))
    for case, r in sorted(bad.items()):
        print(f"autobahn: {case}: {r['behavior']} (close: {r.get('behaviorClose')})")
    passed = len(results) - len(bad)
    print(f"autobahn: {passed} passed, {len(bad)} failed")
    return 1 if bad or not results else 0


if __name__ == "__main__":
    sys.exit(main())
