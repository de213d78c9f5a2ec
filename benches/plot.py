#!/usr/bin/env python3
"""Draws the curves of benches/README.md from corvid-load's JSON lines.

    benches/plot.py OUT_DIR FILE.jsonl [FILE.jsonl ...]

Reads every line; groups them by `label` (the server's name, given to corvid-load with
--label) and writes, when the input has such lines:

  OUT_DIR/rss-vs-sessions.png    `idle-curve` lines: server RSS (MB) and RSS per session (kB)
                                 against the number of idle sessions, one line per label and TLS
                                 mode.
  OUT_DIR/msgs-vs-offered.png    `latency` lines: delivered msgs/s and p99 latency against the
                                 offered rate, one line per label (through the medians where a
                                 rate was run more than once, each run drawn as a faint dot).

Needs matplotlib (`pip install matplotlib`); nothing in the build or the tests needs it.
"""

import json
import sys
from collections import defaultdict
from statistics import median

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_lines(paths):
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    yield json.loads(line)


def rss_curve(lines, out):
    series = defaultdict(list)
    for r in lines:
        if r.get("mode") != "idle-curve":
            continue
        key = f"{r.get('label') or '?'} ({r.get('tls')}, {r.get('concurrency')} in flight)"
        series[key].append((r["sessions"], r["server_rss_kb"], r["bytes_per_session"]))
    if not series:
        return False
    fig, (total, per) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, points in sorted(series.items()):
        points.sort()
        xs = [p[0] for p in points]
        total.plot(xs, [p[1] / 1024 for p in points], marker="o", label=key)
        per.plot(xs, [p[2] / 1024 for p in points], marker="o", label=key)
    total.set_xlabel("idle sessions")
    total.set_ylabel("server RSS (MB)")
    total.set_title("RSS against sessions")
    per.set_xlabel("idle sessions")
    per.set_ylabel("RSS per session above the empty server (kB)")
    per.set_title("RSS per session")
    per.set_yscale("log")
    for ax in (total, per):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}/rss-vs-sessions.png", dpi=110)
    return True


def offered_curve(lines, out):
    series = defaultdict(list)
    for r in lines:
        if r.get("mode") != "latency":
            continue
        p99 = (r.get("latency") or {}).get("p99_ms")
        series[r.get("label") or "?"].append(
            (r["rate"], r.get("delivered_msgs_per_s", 0), p99)
        )
    if not series:
        return False
    fig, (rate, tail) = plt.subplots(1, 2, figsize=(12, 4.5))
    top = max(p[0] for points in series.values() for p in points)
    rate.plot([0, top], [0, top], color="grey", linestyle=":", label="offered")
    for key, points in sorted(series.items()):
        # Several runs at one rate: the line joins their medians, every run is a faint dot
        # (one run's p99 can be ten times its neighbours' on a shared machine).
        by_rate = defaultdict(list)
        for p in points:
            by_rate[p[0]].append(p)
        xs = sorted(by_rate)
        line = rate.plot(xs, [median(p[1] for p in by_rate[x]) for x in xs], marker="o", label=key)
        colour = line[0].get_color()
        tail.plot(xs, [median(p[2] for p in by_rate[x]) for x in xs], marker="o", label=key, color=colour)
        if any(len(runs) > 1 for runs in by_rate.values()):
            rate.scatter([p[0] for p in points], [p[1] for p in points], color=colour, alpha=0.3, s=12)
            tail.scatter([p[0] for p in points], [p[2] for p in points], color=colour, alpha=0.3, s=12)
    rate.set_xlabel("offered msgs/s")
    rate.set_ylabel("delivered msgs/s")
    rate.set_title("1:1 delivered against offered")
    tail.set_xlabel("offered msgs/s")
    tail.set_ylabel("p99 latency (ms)")
    tail.set_yscale("log")
    tail.set_title("p99 latency against offered")
    for ax in (rate, tail):
        ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    rate.set_yscale("log")
    fig.tight_layout()
    fig.savefig(f"{out}/msgs-vs-offered.png", dpi=110)
    return True


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = sys.argv[1]
    lines = list(read_lines(sys.argv[2:]))
    drawn = [name for name, f in (("rss", rss_curve), ("offered", offered_curve)) if f(lines, out)]
    print("drew:", ", ".join(drawn) or "nothing (no idle-curve or latency lines)")


if __name__ == "__main__":
    main()
