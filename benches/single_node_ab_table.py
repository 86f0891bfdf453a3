#!/usr/bin/env python3
"""The table of benches/single_node_ab.sh: one row per measure, before and after per store,
each cell the rounds' values (median first when there are several).

    python3 benches/single_node_ab_table.py OUT_DIR
"""
import glob
import json
import statistics
import sys

rows = {}
for path in sorted(glob.glob(f"{sys.argv[1]}/*.jsonl")):
    for line in open(path):
        r = json.loads(line)
        key = (r["store"], r["build"])
        if r["test"] == "ingest":
            measures = {
                f"ingest {r['conc']} client(s), events/s": r["events_per_s"],
                f"ingest {r['conc']} client(s), p99 ms": r["latency"]["p99_ms"],
                f"ingest {r['conc']} client(s), server cores": r["cpu"]["server_cores"],
                f"ingest {r['conc']} client(s), PostgreSQL cores": r["cpu"]["postgres_cores"],
            }
        elif r["test"] == "fanout":
            lost = r["missed"] + r["duplicates"]
            measures = {
                f"fan-out {r['subs']} subscribers, p50 ms": r["all_subs_latency"]["p50_ms"],
                f"fan-out {r['subs']} subscribers, p99 ms": r["all_subs_latency"]["p99_ms"],
                f"fan-out {r['subs']} subscribers, POST p99 ms": r["post_latency"]["p99_ms"],
                f"fan-out {r['subs']} subscribers, missed + duplicated": lost,
            }
        elif r["test"] == "rss_after_fanout":
            measures = {"RSS 12 s after the fan-out runs, MiB": r["rss_kib"] / 1024}
        elif r["test"] == "rss_after_fanout_30s":
            measures = {"RSS 30 s after the fan-out runs, MiB": r["rss_kib"] / 1024}
        else:
            continue
        for m, v in measures.items():
            rows.setdefault(m, {}).setdefault(key, []).append(v)


def cell(vs):
    if not vs:
        return "—"
    fmt = (lambda v: f"{v:,.0f}") if max(vs) >= 100 else (lambda v: f"{v:.2f}")
    if len(vs) == 1:
        return fmt(vs[0])
    return f"{fmt(statistics.median(vs))} ({', '.join(fmt(v) for v in vs)})"


cols = [(s, b) for s in ("sqlite", "pg") for b in ("before", "after")]
print("| measure | " + " | ".join(f"{s} {b}" for s, b in cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for m, by in rows.items():
    if "PostgreSQL cores" in m and not any(v for k, vs in by.items() for v in vs):
        continue
    print(f"| {m} | " + " | ".join(cell(by.get(c, [])) for c in cols) + " |")
