"""Writes the side-by-side report of `scripts/bench.sh --peers`.

Usage: peers_report.py RESULTS.tsv OUT.md DATE NPROC CPU REVISION SECS REPS ELAPSED VERSIONS

RESULTS.tsv has one line per run: cell, side (one of SIDES)
and wsbench's RESULT JSON. Every figure is a median over the rounds; a ratio
is the median of the per-round ratios (each side's round i against the
other's round i, run minutes apart at most), with their range.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_stats import fmt, median, per_round_ratios, read_results, summary  # noqa: E402

SIDES = ("wsloop", "bun", "node-ws", "fastwebsockets", "raw")


def headline(r):
    """(name, value, higher_is_better) of a run's headline figure."""
    mode = r.get("mode")
    if mode == "echo":
        return "round trips/s", r.get("rt_per_s"), True
    if mode == "broadcast":
        return "deliveries/s", r.get("deliveries_per_s"), True
    return "server RSS bytes/conn", r.get("rss_per_conn_bytes"), False


def main():
    tsv, out, date, nproc, cpu, rev, secs, reps, elapsed, versions = sys.argv[1:]
    cells, order = read_results(tsv)

    lines = [
        "# wsloop beside other WebSocket servers: latest run",
        "",
        f"- date: {date}; revision: {rev}; {secs} s per measured cell, {reps} rounds, "
        f"whole run {elapsed} s",
        f"- machine: {nproc} CPUs, {cpu}; every server pinned to CPU 0, wsbench to CPU 1",
        f"- peers: {versions}; Bun's WebSocket server is built on uWebSockets",
        "- produced by `make bench-peers` (scripts/bench.sh --peers): the same wsbench",
        "  traffic against each server in turn, round after round",
        "",
        "Each cell: the headline figure per server (median over rounds), its ratio to the",
        "raw mio loop and to wsloop (median of per-round ratios, range in brackets), and",
        "the server's CPU time per message (all its threads) where it applies.",
        "",
    ]
    for cell in order:
        runs = cells[cell]
        first = next(r for side in SIDES for r in runs.get(side, []))
        name, _, higher = headline(first)
        lines += [
            f"## {cell}",
            "",
            f"| server | {name} | / raw loop | / wsloop | server CPU ns/msg | notes |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for side in SIDES:
            results = runs.get(side, [])
            if not results:
                continue
            value = median(headline(r)[1] for r in results)
            cpu_ns = median(r.get("server_ns_per_msg") for r in results)
            bad = sum(
                (r.get(k) or 0)
                for r in results
                for k in ("errors", "lost", "duplicated", "reordered", "connect_failed")
            )
            notes = []
            if bad:
                notes.append(f"**{bad} errors/lost**")
            if first.get("mode") == "broadcast":
                p99 = median(r.get("lat_p99_us") for r in results)
                notes.append(f"p99 fan-out {fmt(p99 / 1000 if p99 else None)} ms")
            elif first.get("mode") == "echo":
                p99 = median(r.get("lat_p99_us") for r in results)
                notes.append(f"p99 {fmt(p99)} µs")
            mine = runs.get(side, [])
            value_of = lambda r: headline(r)[1]  # noqa: E731
            vs_raw = per_round_ratios(mine, runs.get("raw", []), value_of)
            vs_ws = per_round_ratios(mine, runs.get("wsloop", []), value_of)
            lines.append(
                f"| {side} | {fmt(value)} | {summary(vs_raw) if side != 'raw' else '1'} | "
                f"{summary(vs_ws) if side != 'wsloop' else '1'} | "
                f"{fmt(cpu_ns) if first.get('mode') != 'connect' else '–'} | {', '.join(notes)} |"
            )
        lines.append("")
        if not higher:
            lines += ["Lower is better in this cell.", ""]
    lines += ["## Raw results", "", "```"]
    for cell in order:
        for side, results in cells[cell].items():
            for r in results:
                lines.append(f"{side}\tRESULT " + json.dumps(r, separators=(",", ":")))
    lines += ["```", ""]
    open(out, "w").write("\n".join(lines))
    print("\n".join(l for l in lines if l.startswith("|") or l.startswith("## ")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
