"""The Markdown report of scripts/bench.sh: one side beside its baseline,
cell by cell, as medians over the rounds and per-round ratios.

    bench_report.py COMPARISON RESULTS_TSV OUT DATE NPROC CPU KERNEL REV PINNED SECS ELAPSED LOAD

COMPARISON is `raw` (wsloop beside the raw mio loops, `make bench`),
`tls` (wsloop's wss:// beside its own ws://, `scripts/bench.sh --tls`) or
`deflate` (wsloop with permessage-deflate beside without,
`scripts/bench.sh --deflate`; its table adds the wire bytes per message).
"""

import json
import sys

from bench_stats import fmt, median, per_round_ratios, read_results, summary

COMPARISONS = {
    "raw": {
        "side": "wsloop", "base": "raw", "side_label": "wsloop", "base_label": "raw loop",
        "ratio": "wsloop / raw",
        "title": "# wsloop load benchmark: latest run",
        "about": [
            "- produced by `make bench` (scripts/bench.sh); wsbench is examples/wsbench.rs, the raw",
            "  loops are examples/raw_echo.rs and examples/raw_fanout.rs",
        ],
        "rounds": "(wsloop's round i against the raw loop's round i, run back to back)",
        "better": "above 1 is better for wsloop on rates",
        "idle": "per heartbeat: a ping and its pong for wsloop, a probe byte and its reply for the raw loop.",
    },
    "tls": {
        "side": "wss", "base": "ws", "side_label": "wss://", "base_label": "ws://",
        "ratio": "wss / ws",
        "title": "# wsloop over TLS: latest run",
        "about": [
            "- produced by `scripts/bench.sh --tls`: the same `wsloop` binary (built with",
            "  `--features tls`) serves wss:// with a P-256 certificate from a test CA, then ws://,",
            "  to the same wsbench cell; wsbench's TLS client (rustls, `--tls --ca`) verifies the",
            "  chain and makes a full handshake per connection (no resumption)",
        ],
        "rounds": "(round i over TLS against round i in plain TCP, run back to back)",
        "better": "above 1 is better for TLS on rates (the target for echo 64 B is ≥ 0.60)",
        "idle": "per heartbeat: a ping and its pong.",
    },
    "deflate": {
        "side": "deflate", "base": "plain", "side_label": "deflate", "base_label": "plain",
        "ratio": "deflate / plain",
        "title": "# wsloop with permessage-deflate: latest run",
        "about": [
            "- produced by `make bench-deflate` (scripts/bench.sh --deflate): the same `wsloop`",
            "  binary (built with `--features deflate`) runs with `--deflate` (default threshold",
            "  128 B and level), then without, for the same wsbench cell; wsbench `--deflate`",
            "  offers what browsers offer and compresses every message it sends at zlib's",
            "  default level 6, as browsers do; payloads are wsbench's JSON kinds (`--payload`)",
            "- wire B/msg: bytes on the sockets (frames with headers and masks) per message,",
            "  out = per message wsbench sent (echo request, publish), in = per message it",
            "  received (echo reply, delivery to one subscriber). wsbench sends each message as",
            "  a frame compressed once with its stamps patched in (so that the client is never",
            "  the bottleneck): 10-25 B longer than the message compressed whole, as the details",
            "  say (`--deflate-full` compresses each message whole, at ~3 µs and more each)",
        ],
        "rounds": "(round i with deflate against round i without, run back to back)",
        "better": "above 1 is better for deflate on rates",
        "idle": "per heartbeat: a ping and its pong.",
        "wire": True,
    },
}


def metric(r):
    """(name, value) of a cell's headline figure."""
    mode = r.get("mode")
    if r.get("headline") == "p99":
        return "p99 round trip (µs)", r.get("lat_p99_us")
    if r.get("headline") == "connects":
        return "connections opened/s", r.get("connects_per_s")
    if mode == "echo" and r.get("conns") == 1:
        return "p50 round trip (µs)", r.get("lat_p50_us")
    if mode == "echo":
        return "round trips/s", r.get("rt_per_s")
    if mode == "broadcast":
        return "deliveries/s", r.get("deliveries_per_s")
    if r.get("hold_s", 0) >= 30:
        return "server CPU while idle (%)", r.get("server_cpu_pct")
    return "server RSS bytes/conn", r.get("rss_per_conn_bytes")


def wire(r):
    """"out / in" wire bytes per message, or None where not reported."""
    out, inb = r.get("wire_bytes_out_per_msg"), r.get("wire_bytes_in_per_msg")
    if out is None or inb is None:
        return None
    return out, inb


def wire_cell(runs):
    """The medians over the rounds of a side's wire bytes, as "out / in"."""
    pairs = [w for w in map(wire, runs) if w]
    if not pairs:
        return "–"
    return f"{fmt(median(o for o, _ in pairs))} / {fmt(median(i for _, i in pairs))}"


def detail(r, with_wire=False):
    if not r:
        return "–"
    mode = r.get("mode")
    bad = (r.get("errors") or 0) + (r.get("lost") or 0) + (r.get("connect_failed") or 0)
    bad += (r.get("duplicated") or 0) + (r.get("reordered") or 0)
    flag = "" if bad == 0 else f" **{bad} errors/lost**"
    if with_wire and wire(r):
        out, inb = wire(r)
        notes = []
        if r.get("compressed_in_pct") is not None:
            notes.append(f"{fmt(r['compressed_in_pct'], '%')} received compressed")
        if r.get("deflate_prepared_extra_bytes") is not None:
            notes.append(f"out includes {r['deflate_prepared_extra_bytes']:+.0f} B/msg of "
                         "wsbench's prepared frames")
        flag = (f", wire {fmt(out)}/{fmt(inb)} B/msg out/in"
                + (f" ({'; '.join(notes)})" if notes else "") + flag)
    if mode == "echo":
        return (f"{fmt(r.get('rt_per_s'))} rt/s, {fmt(r.get('mb_per_s'))} MB/s, p50/p99/p99.9 "
                f"{fmt(r.get('lat_p50_us'))}/{fmt(r.get('lat_p99_us'))}/{fmt(r.get('lat_p999_us'))} µs, "
                f"server CPU {fmt(r.get('server_cpu_pct'), '%')} ({fmt(r.get('server_ns_per_msg'))} ns/msg), "
                f"wsbench CPU {fmt(r.get('client_cpu_pct'), '%')}{flag}")
    if mode == "broadcast":
        return (f"{fmt(r.get('published_per_s'))} pub/s, {fmt(r.get('deliveries_per_s'))} deliveries/s, "
                f"p50/p99 {fmt(r.get('lat_p50_us'))}/{fmt(r.get('lat_p99_us'))} µs, "
                f"lost/dup/reord {r.get('lost')}/{r.get('duplicated')}/{r.get('reordered')}, "
                f"server CPU {fmt(r.get('server_cpu_pct'), '%')} ({fmt(r.get('server_ns_per_msg'))} ns/msg), "
                f"wsbench CPU {fmt(r.get('client_cpu_pct'), '%')}{flag}")
    return (f"{r.get('opened')} open, {fmt(r.get('connects_per_s'))} conn/s, "
            f"RSS {r.get('rss_before_kb')}→{r.get('rss_after_kb')} KiB = {fmt(r.get('rss_per_conn_bytes'))} B/conn, "
            f"held {fmt(r.get('hold_s'))} s at server CPU {fmt(r.get('server_cpu_pct'), '%')}, "
            f"{r.get('pings')} pings{flag}")


def ns_per_ping(r):
    # The pings of the hold (the CPU figure's window), where reported.
    pings = r.get("pings_in_hold", r.get("pings"))
    cpu, hold = r.get("server_cpu_pct"), r.get("hold_s")
    if cpu is None or not hold or not pings:
        return None
    return cpu / 100 * hold / pings * 1e9


def cpu_per_msg(r):
    # Idle cells: server CPU per heartbeat, if there were any.
    return ns_per_ping(r) if r.get("mode") == "connect" else r.get("server_ns_per_msg")


def with_connect_rows(rows, order):
    """A connect cell also gets a "connections opened/s" row (the TLS
    handshake rate, over TLS), from the same runs."""
    out_order = []
    for cell in order:
        out_order.append(cell)
        first = next(iter(rows[cell].values()))[0]
        if first.get("mode") == "connect" and first.get("hold_s", 0) < 30 and not first.get("headline"):
            rate = f"{cell}: connects"
            rows[rate] = {side: [dict(r, headline="connects") for r in runs]
                          for side, runs in rows[cell].items()}
            out_order.append(rate)
    return out_order


def main():
    comparison, tsv, out, date, nproc, cpu, kernel, rev, pinned, secs, elapsed, load = sys.argv[1:]
    c = COMPARISONS[comparison]
    side, base = c["side"], c["base"]
    # rows[cell][side] is the list of that side's results, one per round.
    rows, order = read_results(tsv)
    order = with_connect_rows(rows, order)

    def ratios(cell, value):
        return per_round_ratios(rows[cell].get(side, []), rows[cell].get(base, []), value)

    with_wire = c.get("wire", False)
    wire_head = f" wire B/msg out / in, {c['side_label']} | {c['base_label']} |" if with_wire else ""
    wire_rule = "---:|---:|" if with_wire else ""
    lines = [
        c["title"],
        "",
        f"- date: {date}; revision: {rev}; {secs} s per measured cell, whole run {elapsed} s",
        f"- machine: {nproc} CPUs, {cpu}, Linux {kernel}; load average at the end: {load}",
        f"- pinning: {pinned}",
        "- the machine may be shared with other jobs: compare the ratio column (both sides",
        "  ran minutes apart under the same conditions), not absolute figures across runs",
        *c["about"],
        "",
        f"| cell | headline metric | {c['side_label']} | {c['base_label']} | {c['ratio']} (rounds) "
        f"| server CPU ns/msg, {c['side_label']} | {c['base_label']} | {c['ratio']} (rounds) |"
        + wire_head,
        "|---|---|---:|---:|---:|---:|---:|---:|" + wire_rule,
    ]
    table_at = len(lines) - 2
    for cell in order:
        a, b = rows[cell].get(side, []), rows[cell].get(base, [])
        name, _ = metric((a or b)[0])
        lines.append(f"| {cell} | {name} | {fmt(median(metric(r)[1] for r in a))} "
                     f"| {fmt(median(metric(r)[1] for r in b))} "
                     f"| {summary(ratios(cell, lambda r: metric(r)[1]))} "
                     f"| {fmt(median(cpu_per_msg(r) for r in a))} "
                     f"| {fmt(median(cpu_per_msg(r) for r in b))} "
                     f"| {summary(ratios(cell, cpu_per_msg))} |"
                     + (f" {wire_cell(a)} | {wire_cell(b)} |" if with_wire else ""))
    lines += [
        "",
        "Values are medians over the rounds; a ratio is the median of the per-round ratios",
        f"{c['rounds']}, with their range.",
    ]
    if comparison == "deflate":
        for cell in order:
            a, b = rows[cell].get(side, []), rows[cell].get(base, [])
            if cell.endswith(": connects") or not a or a[0].get("mode") != "connect":
                continue
            da = median(r.get("rss_per_conn_bytes") for r in a)
            db = median(r.get("rss_per_conn_bytes") for r in b)
            if da is not None and db is not None:
                lines.append(f"{cell}: server RSS per connection with deflate minus without: "
                             f"{fmt(da - db)} B (medians; the target is at most 16 B).")
    if comparison == "raw":
        lines += [
            "The paired latency cell runs both servers at once: examples/latency_pair.rs sends one",
            "round trip to each in turn on one client, so each round's ratio compares samples",
            "taken under the same conditions (its server CPU is per round trip, and its",
            "\"wsbench CPU\" is not measured).",
        ]
    lines += [
        f"Ratios: {c['better']}; below 1 is better on latency, memory",
        "and CPU. \"server CPU ns/msg\" is the server's CPU time (all threads, from",
        "/proc/PID/task/*/schedstat) over the measured window divided by the round trips or",
        "deliveries completed in it: on a shared machine it is steadier than the rates, which",
        "depend on how much CPU the two processes were given. In the idle heartbeat cell it is",
        c["idle"],
        "",
        "## Details",
        "",
    ]
    for cell in order:
        if cell.endswith(": p99") and cell[:-5] + ": p50" in rows:
            lines.append(f"- **{cell}**: the runs of the p50 row above")
            continue
        if cell.endswith(": connects"):
            continue
        lines.append(f"- **{cell}**")
        for s in (side, base):
            for i, r in enumerate(rows[cell].get(s, []), 1):
                lines.append(f"  - {s}, round {i}: {detail(r, with_wire)}")
    lines += ["", "## Raw results", "", "```"]
    for cell in order:
        if cell.endswith(": connects"):
            continue
        for results in rows[cell].values():
            for r in results:
                lines.append("RESULT " + json.dumps(r, separators=(",", ":"), ensure_ascii=False))
    lines += ["```", ""]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines[table_at:table_at + 2 + len(order)]))


if __name__ == "__main__":
    main()
