#!/usr/bin/env python3
"""Writes the result tables of docs/benchmarks.md from the reports in docs/bench/results.

Each table sits between `<!-- table:NAME -->` and `<!-- /table -->` in the document and is
replaced whole, so the numbers in the prose's tables are always those of the last run.
Usage: scripts/bench-tables.py [docs/benchmarks.md] [docs/bench/results]
"""

import json
import re
import sys
from pathlib import Path

doc = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks.md")
results = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/bench/results")


def load(name):
    path = results / f"{name}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else [data]


def verified(step):
    return all(step.get(k, 0) == 0 for k in ("lost", "duplicated", "out_of_order", "refused", "broken"))


def ms(x):
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def chat_table(name):
    steps = load(name)
    if not steps:
        return f"(no report: `{name}.json` is missing; run `scripts/bench.sh`)"
    rows = [
        "| rate (msg/s) | deliveries/s | ack p50 / p99 (ms) | deliver p50 / p99 / p99.9 (ms) "
        "| server cores | verified |",
        "|---:|---:|---:|---:|---:|:---|",
    ]
    for s in steps:
        cores = (s.get("server") or {}).get("cores", 0)
        ok = "yes" if verified(s) else f"no (lost {s['lost']}, refused {s['refused']}, broken {s.get('broken', 0)})"
        rows.append(
            f"| {s['target_rate']:,.1f} | {s['deliveries_per_second']:,.0f} "
            f"| {ms(s['ack']['p50_ms'])} / {ms(s['ack']['p99_ms'])} "
            f"| {ms(s['deliver']['p50_ms'])} / {ms(s['deliver']['p99_ms'])} / {ms(s['deliver']['p999_ms'])} "
            f"| {cores:.2f} | {ok} |"
        )
    first = steps[0]
    rows.append("")
    rows.append(
        f"{first['conversations']} conversations of {first['members']} members, "
        f"{first['duration_secs']:.0f} s per rate."
    )
    return "\n".join(rows)


def best(name, bound):
    """The highest verified step whose deliver p99 is within `bound` ms."""
    steps = load(name) or []
    good = [s for s in steps if verified(s) and s["deliver"]["p99_ms"] <= bound]
    return max(good, key=lambda s: s["deliveries_per_second"], default=None)


def comparison(servers, per_second, column):
    """Each server's best step within its bound, and Chattr's rate over the peer's.

    `servers` is [(report, label, bound in ms)], Chattr first; `per_second` picks the
    compared number from a step, shown in a column named `column`.
    """
    rows = [
        f"| server | best rate within the bound | {column} | deliver p99 (ms) | server cores "
        "| Chattr ÷ peer | Chattr ÷ peer at ≤ the peer's p99 |",
        "|:---|---:|---:|---:|---:|---:|---:|",
    ]
    chattr = best(servers[0][0], servers[0][2])
    for name, label, bound in servers:
        b = best(name, bound)
        if b is None:
            rows.append(f"| {label} | none verified within {bound} ms | | | | | |")
            continue
        ratio = equal = ""
        if name != servers[0][0] and chattr:
            ratio = f"{per_second(chattr) / per_second(b):,.1f}×"
            # Chattr's best rate whose p99 is no worse than the peer's at its best.
            fair = best(servers[0][0], b["deliver"]["p99_ms"])
            equal = (
                f"{per_second(fair) / per_second(b):,.1f}× ({per_second(fair):,.0f} at "
                f"p99 {ms(fair['deliver']['p99_ms'])} ms)"
                if fair
                else "none"
            )
        cores = (b.get("server") or {}).get("cores", 0)
        rows.append(
            f"| {label} | {b['target_rate']:,.1f} msg/s (p99 ≤ {bound} ms) | {per_second(b):,.0f} "
            f"| {ms(b['deliver']['p99_ms'])} | {cores:.2f} | {ratio} | {equal} |"
        )
    return "\n".join(rows)


def peers_table():
    servers = [
        ("chattr-fanout-peer-size", "Chattr (embedded)", 50),
        ("ejabberd-fanout", "ejabberd (MUC, MAM on PostgreSQL)", 50),
        ("synapse-fanout", "Synapse (PostgreSQL)", 1000),
    ]
    return comparison(servers, lambda s: s["deliveries_per_second"], "deliveries/s")


def pairs_peers_table():
    servers = [
        ("chattr-pairs", "Chattr (embedded, 500 pairs)", 50),
        ("ejabberd-pairs", "ejabberd (100 pairs)", 50),
        ("synapse-pairs", "Synapse (100 pairs)", 1000),
    ]
    return comparison(servers, lambda s: s["achieved_rate"], "messages/s")


def failure_lines(r):
    """The report's failures by reason (idle and reconnect reports count them), if any."""
    counts = r.get("failures") or {}
    if not counts:
        return ""
    worst = sorted(counts.items(), key=lambda kv: -kv[1])
    return "\n\nWhy they failed:\n\n" + "\n".join(f"- {n:,} × `{reason}`" for reason, n in worst)


def single_table(name):
    r = (load(name) or [None])[0]
    if r is None:
        return f"(no report: `{name}.json` is missing; run `scripts/bench.sh`)"
    return single_table_of(r) + failure_lines(r)


def single_table_of(r):
    srv = r.get("server") or {}
    if r["scenario"] == "idle":
        per = r["bytes_per_connection"] or 0
        return (
            "| connections | opened | failed | dropped | memory per connection | server RSS |\n"
            "|---:|---:|---:|---:|---:|---:|\n"
            f"| {r['connections']:,} | {r['opened']:,} | {r['failed']} | {r['dropped']} "
            f"| {per:,.0f} B ({per / 1024:.2f} KiB) "
            f"| {srv.get('rss_start_bytes', 0) / 2**20:.0f} → {srv.get('rss_end_bytes', 0) / 2**20:.0f} MiB |"
        )
    if r["scenario"] == "reconnect":
        return (
            "| sockets | resumed | failed | retried | lost / duplicated / out of order | all resumed after "
            "| per socket p50 / p99 | server cores |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            f"| {r['sockets']:,} | {r['resumed']:,} | {r['failed']} | {r.get('retries', 0):,} "
            f"| {r['lost']} / {r['duplicated']} / {r['out_of_order']} | {r['all_resumed_secs']:.2f} s "
            f"| {r['resume']['p50_ms'] / 1000:.2f} / {r['resume']['p99_ms'] / 1000:.2f} s | {srv.get('cores', 0):.2f} |"
        )
    if r["scenario"] == "login":
        return (
            "| logins | failed | logins/s | latency p50 / p99 (ms) | in flight | server cores |\n"
            "|---:|---:|---:|---:|---:|---:|\n"
            f"| {r['logins']} | {r['failed']} | {r['logins_per_second']:.1f} "
            f"| {ms(r['latency']['p50_ms'])} / {ms(r['latency']['p99_ms'])} | {r['concurrency']} "
            f"| {srv.get('cores', 0):.2f} |"
        )
    if r["scenario"] == "idle-wide":
        parts = r.get("parts") or [{}]
        opening = max(p.get("open_secs", 0) for p in parts)
        held = min(p.get("hold_secs", 0) for p in parts)
        return (
            "| gateways | connections | opened | failed | dropped | all open after | held |\n"
            "|---:|---:|---:|---:|---:|---:|---:|\n"
            f"| {r['gateways']} | {r['connections']:,} | {r['opened']:,} | {r['failed']} | {r['dropped']} "
            f"| {opening:.0f} s | {held:.0f} s |"
        )
    return "(unknown report)"


tables = {
    "pairs": lambda: chat_table("chattr-pairs"),
    "fanout": lambda: chat_table("chattr-fanout"),
    "fanout-peer-size": lambda: chat_table("chattr-fanout-peer-size"),
    "ejabberd-fanout": lambda: chat_table("ejabberd-fanout"),
    "synapse-fanout": lambda: chat_table("synapse-fanout"),
    "ejabberd-pairs": lambda: chat_table("ejabberd-pairs"),
    "synapse-pairs": lambda: chat_table("synapse-pairs"),
    "persist": lambda: chat_table("distributed-persist"),
    "peers": peers_table,
    "pairs-peers": pairs_peers_table,
    "idle": lambda: single_table("chattr-idle"),
    "reconnect": lambda: single_table("chattr-reconnect"),
    "distributed-reconnect": lambda: single_table("distributed-reconnect"),
    "login": lambda: single_table("chattr-login"),
    "wide": lambda: single_table("distributed-idle-wide"),
}

text = doc.read_text()
for name, make in tables.items():
    pattern = re.compile(rf"(<!-- table:{re.escape(name)} -->\n).*?(<!-- /table -->)", re.S)
    text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), text)
doc.write_text(text)
