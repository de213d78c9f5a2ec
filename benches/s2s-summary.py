#!/usr/bin/env python3
"""Print the federation results of benches/s2s-bench.sh as a Markdown table.

    benches/s2s-summary.py benches/results/s2s-DATE.jsonl [--since UNIX_TIME]

Rows are labels (server/mode[/variant]); ratios are against the faster of the two anchors
(Prosody, ejabberd) with the same certificate mode, measured in the same file: for msgs/s
higher is better (ratio = x / best), for times lower is better (ratio = best / x, so > 1 means
faster than the anchor in both cases).
"""
import json
import statistics
import sys
from collections import defaultdict


def main():
    path = sys.argv[1]
    since = 0
    if "--since" in sys.argv:
        since = int(sys.argv[sys.argv.index("--since") + 1])
    rows = defaultdict(lambda: defaultdict(list))
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        if r.get("unix_time", 0) < since:
            continue
        lab = r.get("label", "?")
        m = r.get("mode")
        if m == "s2s-setup":
            rows[lab]["setup"].append(r["setup_ms"])
            rows[lab]["first"].append(r["first_delivery_ms"])
            rows[lab]["rev"].append(r["reverse_first_delivery_ms"])
        elif m == "s2s-throughput":
            rows[lab]["tput"].append(r["msgs_per_s"])
            rows[lab]["tput_lost"].append(r["sent_total"] - r["received_total"])
            rows[lab]["tput_cpu"].append((r.get("server_cpu_pct"), r.get("peer_server_cpu_pct")))
        elif m == "s2s-latency":
            rows[lab]["p50"].append(r["latency"]["p50_ms"])
            rows[lab]["p99"].append(r["latency"]["p99_ms"])
            rows[lab]["lat_lost"].append(r["lost_measured"])

    def med(lab, k):
        v = rows.get(lab, {}).get(k) or []
        return statistics.median(v) if v else None

    metrics = [
        ("tput", "msgs/s (window)", True),
        ("p50", "p50 ms @rate", False),
        ("p99", "p99 ms @rate", False),
        ("setup", "set-up ms (median)", False),
        ("rev", "reverse first ms", False),
    ]
    print("| label | " + " | ".join(h for _, h, _ in metrics) + " | undelivered (tput/lat) | set-up runs |")
    print("|---" * (len(metrics) + 3) + "|")
    for lab in sorted(rows):
        mode = lab.split("/")[1] if "/" in lab else ""
        anchors = [f"prosody/{mode}", f"ejabberd/{mode}"]
        cells = []
        for k, _, higher in metrics:
            x = med(lab, k)
            if x is None:
                cells.append("")
                continue
            a = [med(an, k) for an in anchors if med(an, k) is not None]
            best = (max(a) if higher else min(a)) if a else None
            ratio = ""
            if best and x and not lab.startswith(("prosody/", "ejabberd/")):
                ratio = f" ({x / best:.2f}x)" if higher else f" ({best / x:.2f}x)"
            fmt = f"{x:,.0f}" if k == "tput" else f"{x:.2f}"
            cells.append(fmt + ratio)
        lost = f"{sum(rows[lab]['tput_lost'])}/{sum(rows[lab]['lat_lost'])}"
        runs = len(rows[lab]["setup"])
        print(f"| {lab} | " + " | ".join(cells) + f" | {lost} | {runs} |")


if __name__ == "__main__":
    main()
