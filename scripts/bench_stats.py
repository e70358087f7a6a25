"""Figures shared by the benchmark reports (the one scripts/bench.sh writes
and scripts/peers_report.py): the results file, medians over rounds,
per-round ratios and their summary, and number formatting."""

import json


def read_results(tsv):
    """The runs of a results file (one line per run: cell, side, wsbench's
    RESULT JSON) as ({cell: {side: [result per round]}}, [cells in order])."""
    rows, order = {}, []
    for line in open(tsv):
        cell, side, result = line.rstrip("\n").split("\t", 2)
        if cell not in rows:
            rows[cell] = {}
            order.append(cell)
        rows[cell].setdefault(side, []).append(json.loads(result))
    return rows, order


def median(values):
    """The median of the values that are not None, or None if there are none."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def fmt(v, unit=""):
    """A figure for a table: thousands separators from 100 up, "–" for None."""
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}{unit}"
    return f"{v:.1f}{unit}"


def per_round_ratios(runs, baseline_runs, value):
    """value(run i) / value(baseline run i) for each round both have."""
    out = []
    for run, base in zip(runs, baseline_runs):
        a, b = value(run), value(base)
        if a is not None and b:
            out.append(a / b)
    return out


def summary(ratios):
    """The median ratio, and the rounds' range when there are several."""
    if not ratios:
        return "–"
    text = f"{median(ratios):.2f}"
    if len(ratios) > 1:
        text += f" ({min(ratios):.2f}–{max(ratios):.2f})"
    return text
