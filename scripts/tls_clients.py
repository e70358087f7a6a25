#!/usr/bin/env python3
"""The client side of scripts/tls_e2e.sh: a running `wsloop --tls-cert ...`
checked with TLS clients that share no code with it (Python's websockets and
ssl modules, http.client, the openssl CLI).

Every TLS client verifies the certificate chain against a CA and the host
name (the test CA, except where a wrong one is the point), so a passing check
means a real client would accept the server.
The checks run in order, each bounded in time; the last two change the
server (a certificate reload, then SIGTERM), and the last leaves it exited.
Prints one `tls-e2e: ok  ...` line per passed check and exits 1 at the
first failure, naming it.
"""

import argparse
import asyncio
import http.client
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

# One wait for one message or reply; loopback answers in milliseconds.
TIMEOUT = 5.0
# A whole check, the 16 MiB round trip included.
CHECK_TIMEOUT = 30.0
# The server's default --max-message-size: a message of exactly this many
# bytes is allowed.
MAX_MESSAGE = 16 * 1024 * 1024

# RFC 6455's own example key, so the expected accept value is the RFC's too.
UPGRADE_REQUEST = (
    "GET /echo HTTP/1.1\r\n"
    "Host: localhost\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n"
).encode()
EXPECTED_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
RESPONSE_HEAD = re.compile(rb"^HTTP/1\.1 .*?\r\n\r\n", re.M | re.S)

TLS_FAILURES = "wsloop_tls_handshake_failures_total"


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def ok(what: str) -> None:
    print(f"tls-e2e: ok  {what}", flush=True)


@dataclass(frozen=True)
class Setup:
    port: int
    pid: int
    ca: Path
    wrong_ca: Path
    # The files the server was started with; the reload check overwrites
    # them with next_cert and next_key.
    cert: Path
    key: Path
    next_cert: Path
    next_key: Path

    @property
    def tls(self) -> ssl.SSLContext:
        return client_context(self.ca)


def client_context(cafile: Path) -> ssl.SSLContext:
    """Verifies the chain against `cafile` only, and the host name."""
    return ssl.create_default_context(cafile=str(cafile))


def wss(s: Setup, path: str, tls: ssl.SSLContext | None = None, **options: Any) -> connect:
    # proxy=None: websockets would otherwise follow an https_proxy variable
    # away from loopback.
    return connect(
        f"wss://localhost:{s.port}{path}",
        ssl=tls or s.tls,
        proxy=None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        **options,
    )


async def recv(ws: ClientConnection, timeout: float = TIMEOUT) -> str | bytes:
    try:
        async with asyncio.timeout(timeout):
            return await ws.recv()
    except TimeoutError:
        raise CheckFailed(f"nothing received on {ws.request.path} within {timeout:g} s") from None


async def recv_json(ws: ClientConnection) -> Any:
    return json.loads(await recv(ws))


async def assert_echo(ws: ClientConnection, message: str | bytes) -> None:
    await ws.send(message)
    echoed = await recv(ws)
    expect(echoed == message, f"sent {message!r}, got back {echoed!r}")


def tls_version(ws: ClientConnection) -> str:
    return ws.transport.get_extra_info("ssl_object").version()


def peer_serial(peercert: dict[str, Any]) -> int:
    return int(peercert["serialNumber"], 16)


def cert_file_serial(path: Path) -> int:
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-serial"],
        check=True, capture_output=True, text=True, timeout=TIMEOUT,
    ).stdout
    return int(out.strip().removeprefix("serial="), 16)


def https_get(s: Setup, host: str, path: str) -> tuple[int, str]:
    # http.client rather than urllib: no proxy variables consulted.
    conn = http.client.HTTPSConnection(host, s.port, context=s.tls, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def tls_failures(s: Setup) -> int:
    status, text = https_get(s, "localhost", "/metrics")
    expect(status == 200, f"GET /metrics: status {status}")
    found = re.search(rf"^{TLS_FAILURES} (\d+)$", text, re.M)
    expect(found is not None, f"/metrics has no {TLS_FAILURES} sample")
    return int(found.group(1))


# --- wss with Python's websockets --------------------------------------------


async def check_echo(s: Setup) -> None:
    async with wss(s, "/echo") as ws:
        await assert_echo(ws, "héllo over wss")
        await assert_echo(ws, bytes(range(256)))
        ok(f"wss echo of a text and a binary message ({tls_version(ws)})")


async def check_large_message(s: Setup) -> None:
    blob = os.urandom(MAX_MESSAGE)
    async with wss(s, "/echo", max_size=None) as ws:
        await ws.send(blob)
        echoed = await recv(ws, timeout=CHECK_TIMEOUT)
    expect(isinstance(echoed, bytes), f"a 16 MiB binary message came back as {type(echoed).__name__}")
    expect(len(echoed) == len(blob), f"16 MiB sent, {len(echoed)} bytes came back")
    expect(echoed == blob, "the 16 MiB message came back with different bytes")
    ok("wss echo of a 16 MiB binary message, intact")


async def check_order(s: Setup) -> None:
    sent = [f"message {i}" for i in range(1000)]
    async with wss(s, "/echo") as ws:
        for message in sent:
            await ws.send(message)
        received = [await recv(ws) for _ in sent]
    for i, (mine, echoed) in enumerate(zip(sent, received)):
        expect(mine == echoed, f"echo #{i} was {echoed!r}, expected {mine!r}")
    ok("wss: 1000 messages sent back to back came back in order")


async def check_broadcast(s: Setup) -> None:
    async with wss(s, "/broadcast") as a, wss(s, "/broadcast") as b, wss(s, "/broadcast") as c:
        await a.send("from a")
        for name, ws in (("b", b), ("c", c)):
            got = await recv(ws)
            expect(got == "from a", f"/broadcast client {name} got {got!r}, expected 'from a'")
        # b sent after it had a's message, so a copy of a's message sent back
        # to a would be queued ahead of b's: a's next message shows whether
        # it got its own, without waiting for something not to happen.
        await b.send("from b")
        for name, ws in (("a", a), ("c", c)):
            got = await recv(ws)
            expect(got == "from b", f"/broadcast client {name} got {got!r}, expected 'from b'")
    ok("wss /broadcast: 3 clients, each message reaches the 2 others and not its sender")


def presence(kind: str, name: str, room: str, members: Any) -> dict[str, Any]:
    return {"type": kind, "payload": {"name": name, "room": room, "members": members}}


async def check_chat(s: Setup) -> None:
    async with wss(s, "/chat/room1?name=alice") as alice:
        got = await recv_json(alice)
        expect(got == presence("welcome", "alice", "room1", ["alice"]), f"alice's welcome: {got}")
        async with wss(s, "/chat/room1?name=bob") as bob:
            got = await recv_json(bob)
            got["payload"]["members"].sort()
            expect(got == presence("welcome", "bob", "room1", ["alice", "bob"]), f"bob's welcome: {got}")
            got = await recv_json(alice)
            expect(got == presence("join", "bob", "room1", 2), f"alice's notice of bob: {got}")
            async with wss(s, "/chat/room2?name=carol") as carol:
                got = await recv_json(carol)
                expect(got == presence("welcome", "carol", "room2", ["carol"]), f"carol's welcome: {got}")

                await alice.send(json.dumps({"type": "chat", "payload": "hi"}))
                got = await recv_json(bob)
                expected = {"type": "chat", "payload": {"from": "alice", "text": "hi"}}
                expect(got == expected, f"bob got {got}, expected {expected}")
                # Pinged after bob had the line: had alice (the sender) or
                # carol (another room) been sent it, it would come before
                # the pong.
                for name, ws in (("alice", alice), ("carol", carol)):
                    await ws.send(json.dumps({"type": "ping", "payload": name}))
                    got = await recv_json(ws)
                    expect(got == {"type": "pong", "payload": name}, f"{name} got {got} before her pong")
        got = await recv_json(alice)
        expect(got == presence("leave", "bob", "room1", 1), f"alice's notice of bob leaving: {got}")
    ok("wss /chat: a chat frame reaches the room-mate as {from, text}, not the sender "
       "nor room2; welcome, join, pong and leave frames as documented")


async def expect_verify_failure(s: Setup, why: str, tls: ssl.SSLContext, **options: Any) -> str:
    try:
        async with wss(s, "/echo", tls=tls, **options):
            pass
    except ssl.SSLCertVerificationError as e:
        expect("certificate verify failed" in str(e), f"{why}: {e}")
        return e.verify_message
    raise CheckFailed(f"{why}: the handshake succeeded")


async def check_wrong_ca(s: Setup) -> None:
    async with wss(s, "/echo") as bystander:
        reason = await expect_verify_failure(s, "a client trusting another CA", client_context(s.wrong_ca))
        # The positive checks mean something only if the host name is
        # checked too: the certificate names localhost and 127.0.0.1 only.
        mismatch = await expect_verify_failure(
            s, "a client expecting another host name", s.tls, server_hostname="wss.example")
        await assert_echo(bystander, "still served")
    async with wss(s, "/echo") as fresh:
        await assert_echo(fresh, "new connections too")
    ok(f"a client trusting another CA fails to verify ({reason}), one expecting another "
       f"name too ({mismatch}); the server serves open and new connections after")


# --- https with http.client ---------------------------------------------------


async def check_https(s: Setup) -> None:
    status, body = await asyncio.to_thread(https_get, s, "localhost", "/healthz")
    expect((status, body) == (200, "ok\n"), f"GET https://localhost/healthz: {status} {body!r}")
    # By IP address: the certificate's IP SAN is verified as well.
    status, body = await asyncio.to_thread(https_get, s, "127.0.0.1", "/metrics")
    expect(status == 200, f"GET https://127.0.0.1/metrics: status {status}")
    expect(TLS_FAILURES in body, f"/metrics lacks {TLS_FAILURES}")
    ok(f"https GET /healthz and /metrics: 200, metrics include {TLS_FAILURES}")


# --- openssl s_client -------------------------------------------------------


def s_client_upgrade(s: Setup, version: str) -> str:
    """An upgrade request typed into `openssl s_client`; returns its stdout."""
    command = [
        "openssl", "s_client", "-connect", f"127.0.0.1:{s.port}",
        "-servername", "localhost", "-verify_hostname", "localhost",
        "-verify_return_error", "-CAfile", str(s.ca), "-alpn", "http/1.1",
        "-tls" + version.replace(".", "_"),
        # Lines starting with Q, R or k are s_client commands otherwise.
        "-nocommands",
    ]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out = b""
    try:
        proc.stdin.write(UPGRADE_REQUEST)
        proc.stdin.flush()
        # s_client hangs up at the end of its input, so stdin stays open
        # until the response head is in (or 5 s passed: the checks below
        # then say what is missing); communicate() closes it.
        deadline = time.monotonic() + TIMEOUT
        while not RESPONSE_HEAD.search(out):
            ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                break
            out += chunk
        rest, err = proc.communicate(timeout=TIMEOUT)
        out += rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    expect(proc.returncode == 0, f"s_client exited {proc.returncode}: {err.decode()[-500:]}")
    return out.decode(errors="replace")


async def check_s_client(s: Setup, version: str) -> None:
    out = await asyncio.to_thread(s_client_upgrade, s, version)
    wanted = {
        "101 response": r"^HTTP/1\.1 101 ",
        "accept key": rf"^Sec-WebSocket-Accept: {re.escape(EXPECTED_ACCEPT)}\r?$",
        # The negotiated version; s_client prints "Protocol  : ..." only in
        # session blocks, which TLS 1.3 shows only once a ticket arrives.
        "negotiated version": rf"^New, TLSv{re.escape(version)}, Cipher is ",
        "ALPN": r"^ALPN protocol: http/1\.1$",
        # Indented inside the session block over TLS 1.2.
        "verification": r"^\s*Verify return code: 0 \(ok\)$",
    }
    shown = re.sub(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", "[certificate]",
                   out, flags=re.S)
    for what, pattern in wanted.items():
        expect(re.search(pattern, out, re.M | re.I) is not None,
               f"s_client TLSv{version}: no {what} line /{pattern}/ in:\n{shown}")
    protocols = set(re.findall(r"^\s*Protocol\s*: (\S+)$", out, re.M))
    expect(protocols <= {f"TLSv{version}"}, f"s_client TLSv{version}: session says {protocols}")
    ok(f"openssl s_client -tls{version.replace('.', '_')}: 101 with the RFC accept key, "
       f"TLSv{version}, ALPN http/1.1, verify return code 0")


async def check_s_client_tls12(s: Setup) -> None:
    await check_s_client(s, "1.2")


async def check_s_client_tls13(s: Setup) -> None:
    await check_s_client(s, "1.3")


# --- not TLS on the TLS port --------------------------------------------------


def raw_exchange(s: Setup, data: bytes) -> bytes:
    """Sends `data` over plain TCP; returns what came back until the server
    closed (a timeout means it kept the connection open: a failure)."""
    received = b""
    with socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # closed with our bytes unread: a close all the same
    return received


async def check_not_tls(s: Setup) -> None:
    # Starts with 0x00, no TLS record type, like the garbage of tests/tls.rs.
    garbage = bytes(i * 7919 % 256 for i in range(3000))
    attempts = {"plain HTTP": b"GET / HTTP/1.1\r\n\r\n", "garbage": garbage}
    before = await asyncio.to_thread(tls_failures, s)
    seen = []
    async with wss(s, "/echo") as bystander:
        for what, data in attempts.items():
            reply = await asyncio.to_thread(raw_exchange, s, data)
            expect(b"HTTP/" not in reply, f"{what} got a plain HTTP answer: {reply[:80]!r}")
            expect(reply == b"" or reply[0] == 0x15,
                   f"{what}: neither a TLS alert record nor a bare close: {reply[:80]!r}")
            seen.append(f"{what}: {'alert' if reply else 'closed'}")
        await assert_echo(bystander, "unaffected")
    after = await asyncio.to_thread(tls_failures, s)
    expect(after - before >= len(attempts),
           f"{TLS_FAILURES} went from {before} to {after} after {len(attempts)} failed handshakes")
    ok(f"not TLS on the TLS port ({', '.join(seen)}); {TLS_FAILURES} {before} -> {after}")


# --- certificate reload -------------------------------------------------------


def served_serial(s: Setup) -> int:
    """The serial of the certificate a new handshake presents."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT) as sock:
        with s.tls.wrap_socket(sock, server_hostname="localhost") as tls:
            return peer_serial(tls.getpeercert())


async def check_reload(s: Setup) -> None:
    old, new = cert_file_serial(s.cert), cert_file_serial(s.next_cert)
    expect(old != new, f"both certificates have serial {old:x}")
    async with wss(s, "/echo") as a:
        first = peer_serial(a.transport.get_extra_info("peercert"))
        expect(first == old, f"connection A got serial {first:x}, expected {old:x}")
        # os.replace swaps each file whole, so the reload never reads half a
        # PEM; both are in place before the signal.
        os.replace(s.next_cert, s.cert)
        os.replace(s.next_key, s.key)
        os.kill(s.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5.0
        while (serial := await asyncio.to_thread(served_serial, s)) != new:
            expect(time.monotonic() < deadline,
                   f"5 s after SIGHUP new handshakes still get serial {serial:x}, not {new:x}")
            await asyncio.sleep(0.1)
        await assert_echo(a, "A outlived the reload")
    async with wss(s, "/echo") as b:
        await assert_echo(b, "a wss handshake with the new certificate")
    ok(f"SIGHUP reload: new handshakes present serial {new:x}, connection A (serial {old:x}) still echoes")


# --- graceful shutdown --------------------------------------------------------


def open_raw_websocket(s: Setup) -> tuple[ssl.SSLSocket, bytes]:
    """A WebSocket on a bare ssl socket; returns it and any bytes read past
    the 101 response head."""
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT)
    # suppress_ragged_eofs=False: a FIN without close_notify then raises
    # SSLEOFError instead of reading as b"" like a clean close.
    tls = s.tls.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)
    tls.sendall(UPGRADE_REQUEST)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(4096)
        expect(chunk != b"", f"closed during the upgrade, after {head!r}")
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    expect(head.startswith(b"HTTP/1.1 101 "), f"the raw upgrade got {head[:80]!r}")
    return tls, rest


def close_code_then_close_notify(tls: ssl.SSLSocket, buffered: bytes) -> int:
    """Reads the server's close frame, answers it, and expects the TLS
    stream to end with close_notify; returns the close code."""
    frame = buffered
    while len(frame) < 2 or len(frame) < 2 + (frame[1] & 0x7F):
        chunk = tls.recv(4096)
        expect(chunk != b"", f"the stream ended before a whole close frame: {frame!r}")
        frame += chunk
    expect(frame[0] == 0x88 and 2 <= (frame[1] & 0x7F) <= 125,
           f"expected an unmasked close frame with a code, got {frame[:16]!r}")
    code = int.from_bytes(frame[2:4], "big")
    # Our close, masked as a client's must be (RFC 6455 5.3).
    mask = os.urandom(4)
    tls.sendall(bytes([0x88, 0x82]) + mask + bytes(b ^ m for b, m in zip(frame[2:4], mask)))
    try:
        tail = tls.recv(4096)
    except ssl.SSLEOFError as e:
        raise CheckFailed(f"the TLS stream ended without close_notify: {e}") from e
    expect(tail == b"", f"data after the close frame: {tail[:40]!r}")
    tls.close()
    return code


async def close_code(ws: ClientConnection) -> int | None:
    try:
        message = await recv(ws)
    except ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None
    raise CheckFailed(f"got {message!r} instead of a close")


def wait_for_exit(pidfd: int, since: float, limit: float) -> float:
    """Seconds from `since` until the process behind `pidfd` exited."""
    remaining = since + limit - time.monotonic()
    readable, _, _ = select.select([pidfd], [], [], max(remaining, 0.0))
    expect(readable != [], f"the server was still running {limit:.0f} s after SIGTERM")
    return time.monotonic() - since


async def check_shutdown(s: Setup) -> None:
    # A pidfd (opened before the signal) becomes readable when the process
    # exits, child of ours or not; the exit status is the shell's to check.
    pidfd = os.pidfd_open(s.pid)
    try:
        async with wss(s, "/echo") as one, wss(s, "/broadcast") as two:
            await assert_echo(one, "before shutdown")
            raw, buffered = await asyncio.to_thread(open_raw_websocket, s)
            os.kill(s.pid, signal.SIGTERM)
            signalled = time.monotonic()
            codes = await asyncio.gather(close_code(one), close_code(two))
            raw_code = await asyncio.to_thread(close_code_then_close_notify, raw, buffered)
        expect(codes == [1001, 1001], f"websockets clients saw close codes {codes}, expected 1001")
        expect(raw_code == 1001, f"the raw ssl client saw close code {raw_code}, expected 1001")
        took = await asyncio.to_thread(wait_for_exit, pidfd, signalled, 10.0)
    finally:
        os.close(pidfd)
    ok(f"SIGTERM: 2 websockets clients and a raw ssl one got close 1001, the raw one then "
       f"close_notify (not a bare FIN); the server exited {took * 1000:.0f} ms after the signal")


CHECKS: list[Callable[[Setup], Awaitable[None]]] = [
    check_echo,
    check_large_message,
    check_order,
    check_broadcast,
    check_chat,
    check_wrong_ca,
    check_https,
    check_s_client_tls12,
    check_s_client_tls13,
    check_not_tls,
    check_reload,
    check_shutdown,  # last: the server is gone after it
]


async def run(s: Setup) -> int:
    for number, check in enumerate(CHECKS, 1):
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await check(s)
        except Exception as e:  # any error fails the run, named and explained
            what = str(e) if isinstance(e, CheckFailed) else repr(e)
            print(f"tls-e2e: FAIL check {number} ({check.__name__}): {what}", file=sys.stderr, flush=True)
            return 1
    return 0


def parse_args() -> Setup:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the server's, for SIGHUP and SIGTERM")
    parser.add_argument("--ca", type=Path, required=True, help="the CA that signed both certificates")
    parser.add_argument("--wrong-ca", type=Path, required=True, help="a CA that signed neither")
    parser.add_argument("--cert", type=Path, required=True, help="the server's --tls-cert file")
    parser.add_argument("--key", type=Path, required=True, help="the server's --tls-key file")
    parser.add_argument("--next-cert", type=Path, required=True, help="moved onto --cert to test reload")
    parser.add_argument("--next-key", type=Path, required=True, help="moved onto --key to test reload")
    return Setup(**vars(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(asyncio.run(run(parse_args())))
