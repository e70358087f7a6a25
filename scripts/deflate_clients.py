"""permessage-deflate end to end against Python's websockets (scripts/deflate_e2e.sh).

Connects to a wsloop started with --deflate on 127.0.0.1:PORT (playground
mode) and checks, with clients that share no code with the server:

- the default websockets offer (`permessage-deflate; client_max_window_bits`)
  is accepted with client_no_context_takeover asked of the client, and
  messages from a chat line to a 16 KiB JSON document and a 1 MiB one echo
  intact, 1,000 ticker updates in order;
- an offer limiting the server to a 9-bit window is answered with
  server_max_window_bits=9, and long messages still inflate (a stream
  compressed with a larger window would not, in a 9-bit inflater);
- a broadcast to deflate and plain clients alike delivers identical messages;
- a client that offers nothing opens uncompressed.

Prints one line per check; exits 1 on the first failure.
"""

import argparse
import asyncio
import json
import sys

import websockets
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)

TIMEOUT = 10.0


def json_doc(size: int) -> str:
    """A JSON document of about `size` bytes: objects with repeating keys."""
    rows, n = [], 0
    while sum(len(r) for r in rows) + 2 * len(rows) < size:
        rows.append(json.dumps({"id": n, "sym": f"S{n % 50:03}", "px": 100 + n % 17 * 0.25,
                                "side": "buy" if n % 3 else "sell", "note": "ok"}))
        n += 1
    return "[" + ",".join(rows) + "]"


def deflate_of(ws) -> PerMessageDeflate | None:
    for ext in ws.protocol.extensions:
        if isinstance(ext, PerMessageDeflate):
            return ext
    return None


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def echo_default_offer(base: str) -> str:
    async with websockets.connect(f"{base}/echo", max_size=None) as ws:
        answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        ext = deflate_of(ws)
        assert ext is not None, f"not negotiated: {answer!r}"
        assert "client_no_context_takeover" in answer, answer
        assert ext.local_no_context_takeover, "the client is asked not to keep context"
        for text in ['{"type":"chat","payload":"hi"}', json_doc(200), json_doc(16 * 1024),
                     json_doc(1 << 20)]:
            await ws.send(text)
            got = await recv(ws)
            assert got == text, f"{len(text)}-byte echo differs ({len(got)} bytes back)"
        binary = json_doc(5000).encode() * 3
        await ws.send(binary)
        assert await recv(ws) == binary
        ticks = [json.dumps({"type": "tick", "seq": i, "px": 100 + i % 9}) * 3 for i in range(1000)]
        for t in ticks:
            await ws.send(t)
        for i, t in enumerate(ticks):
            assert await recv(ws) == t, f"tick {i} out of order or altered"
    return f"default offer accepted ({answer}); echo 30 B to 1 MiB intact, 1000 in order"


async def nine_bit_window(base: str) -> str:
    offer = ClientPerMessageDeflateFactory(server_max_window_bits=9)
    async with websockets.connect(f"{base}/echo", extensions=[offer], compression=None,
                                  max_size=None) as ws:
        answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "server_max_window_bits=9" in answer, answer
        ext = deflate_of(ws)
        assert ext is not None and ext.remote_max_window_bits == 9, answer
        text = json_doc(64 * 1024)
        await ws.send(text)
        assert await recv(ws) == text
    return f"server_max_window_bits=9 answered ({answer}); a 64 KiB message inflates in 9 bits"


async def mixed_broadcast(base: str) -> str:
    deflating = [await websockets.connect(f"{base}/broadcast", max_size=None) for _ in range(2)]
    plain = await websockets.connect(f"{base}/broadcast", compression=None, max_size=None)
    sender = await websockets.connect(f"{base}/broadcast", max_size=None)
    try:
        assert all(deflate_of(ws) for ws in deflating + [sender])
        assert deflate_of(plain) is None
        # Each new member's join is not announced on /broadcast; give the
        # loop a moment to have them all registered, then send.
        await asyncio.sleep(0.2)
        messages = [json_doc(300), "short", json_doc(20_000)]
        for m in messages:
            await sender.send(m)
        for ws in deflating + [plain]:
            for m in messages:
                assert await recv(ws) == m
    finally:
        for ws in deflating + [plain, sender]:
            await ws.close()
    return "a broadcast reaches 2 deflate clients and 1 plain client identically, not the sender"


async def no_offer(base: str) -> str:
    async with websockets.connect(f"{base}/echo", compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send("plain")
        assert await recv(ws) == "plain"
    return "a client offering nothing opens uncompressed"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    base = f"ws://127.0.0.1:{args.port}"
    failed = 0
    for check in (echo_default_offer, nine_bit_window, mixed_broadcast, no_offer):
        try:
            print(f"deflate-e2e: ok  {await asyncio.wait_for(check(base), 60)}", flush=True)
        except Exception as e:  # noqa: BLE001 - report any failure and go on
            failed += 1
            print(f"deflate-e2e: FAIL {check.__name__}: {type(e).__name__}: {e}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
