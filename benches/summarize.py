#!/usr/bin/env python3
"""One line per measurement from corvid-load JSON lines: benches/summarize.py [-v] results/*.jsonl

-v also prints each run of the presence-login measurements.
--muc prints, for the muc-fanout lines, one table row per (server, shape, kind) with the median
over the repeats (and the individual values)."""
import json
import sys

flags = [a for a in sys.argv[1:] if a.startswith("-")]
muc = {}
for path in [a for a in sys.argv[1:] if not a.startswith("-")]:
    for line in open(path):
        d = json.loads(line)
        m = d["mode"]
        s = f"{d['label']:9} {m:10} tls={d['tls']:8} n={d['users']:5} "
        if m == "idle":
            s += (f"kB/session={(d['bytes_per_session'] or 0) / 1024:.1f} "
                  f"rss {d['server_rss_before_kb']}->{d['server_rss_after_kb']} kB "
                  f"held={d['sessions_held']}")
        elif m == "login-rate":
            s += (f"logins/s={d['logins_per_s']} p50={d['login_time']['p50_ms']}ms "
                  f"p99={d['login_time']['p99_ms']}ms failed={d['logins_failed']} "
                  f"server_cpu={d['server_cpu_pct']}% tool_cpu={d['tool_cpu_pct']}%")
        elif m == "throughput":
            s += (f"msgs/s={d['msgs_per_s']:.0f} peak1s={d['peak_1s_msgs_per_s']} "
                  f"lost={d['lost_measured']} server_cpu={d['server_cpu_pct']}% "
                  f"tool_cpu={d['tool_cpu_pct']}%")
        elif m == "latency":
            s += (f"rate={d['rate']:.0f} p50={d['latency']['p50_ms']}ms "
                  f"p99={d['latency']['p99_ms']}ms max={d['latency']['max_ms']}ms "
                  f"sent={d['sent_measured']} recv={d['received_measured']} "
                  f"server_cpu={d['server_cpu_pct']}% tool_cpu={d['tool_cpu_pct']}%")
        elif m == "presence-login":
            s += (f"contacts={d['contacts']} runs={d['runs']} (median:) "
                  f"broadcast={d['t_broadcast_ms']}ms probes={d['t_probes_ms']}ms "
                  f"unavailable={d['t_unavailable_ms']}ms "
                  f"stanzas_out={d['stanzas_to_subject']}+{d['stanzas_to_contacts']} "
                  f"bytes_out={d['bytes_to_subject']}+{d['bytes_to_contacts']} "
                  f"server_cpu={d['server_cpu_ms_presence']}ms "
                  f"(schedstat {d['server_cpu_sched_ms_presence']}ms, "
                  f"logout {d['server_cpu_sched_ms_unavailable']}ms) "
                  f"timed_out={d['runs_timed_out']}")
        elif m == "muc-fanout":
            s = f"{d['label']:9} {m:10} {d['rooms']}x{d['occupants']:<4} {d['kind']:4} "
            if d["kind"] == "rate":
                s += f"rate={d['rate']:.0f} "
            else:
                s += f"senders={d['senders_per_room']}/room window={d['window']} "
            s += (f"deliveries/s={d['deliveries_per_s']:.0f} lost={d['lost_measured']}"
                  f"/{d['expected_measured']} gaps={d['seq_gaps']} dups={d['seq_dups']} "
                  f"p50={d['latency']['p50_ms']}ms p99={d['latency']['p99_ms']}ms "
                  f"max={d['latency']['max_ms']}ms server_cpu={d['server_cpu_pct']}% "
                  f"(schedstat {d['server_cpu_sched_pct']}%) tool_cpu={d['tool_cpu_pct']}% "
                  f"setup={d['setup_s']}s failed={d['occupants_failed']}")
            src = path.rsplit("/", 1)[-1].removesuffix(".jsonl")
            muc.setdefault((f"{d['label']} ({src})", f"{d['rooms']}x{d['occupants']}", d["kind"]), []).append(d)
        print(f"{s} | load {d['loadavg_start']}")
        if m == "presence-login" and "-v" in flags:
            for r in d["per_run"]:
                print(f"    run {r['run']}: broadcast={r['t_broadcast_ms']}ms "
                      f"probes={r['t_probes_ms']}ms unavailable={r['t_unavailable_ms']}ms "
                      f"stanzas_out={r['stanzas_to_subject']}+{r['stanzas_to_contacts']} "
                      f"server_cpu={r['server_cpu_ms_presence']}ms "
                      f"(schedstat {r['server_cpu_sched_ms_presence']}ms)")


def fmt(x):
    return f"{x:.2f}" if x < 100 else f"{x:,.0f}"


def busy(d):
    b = d.get("cpu_busy_pct") or []
    return "/".join(f"{x:.0f}" for x in b[:2]) if len(b) >= 2 else "-"


def med(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


if "--muc" in flags and muc:
    print()
    print("| server | rooms x occupants | measurement | runs | deliveries/s (median; runs) | lost | "
          "p50 / p99 / max ms (median) | server CPU % (median) | tool CPU % | load avg at start | CPU0/CPU1 busy % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    order = lambda kv: (kv[0][0], int(kv[0][1].split("x")[0]), kv[0][1], kv[0][2])
    for (label, shape, kind), ds in sorted(muc.items(), key=order):
        rates = [d["deliveries_per_s"] for d in ds]
        lost = sum(d["lost_measured"] for d in ds)
        exp = sum(d["expected_measured"] for d in ds)
        lat = " / ".join(fmt(med([d["latency"][k] for d in ds])) for k in ("p50_ms", "p99_ms", "max_ms"))
        what = "max" if kind == "max" else f"at {ds[0]['rate']:.0f}/s"
        print(f"| {label} | {shape} | {what} | {len(ds)} | {med(rates):,.0f} ({', '.join(f'{r:,.0f}' for r in rates)}) "
              f"| {lost} of {exp} | {lat} | {med([d['server_cpu_pct'] or 0 for d in ds]):.0f} "
              f"| {med([d['tool_cpu_pct'] or 0 for d in ds]):.0f} "
              f"| {', '.join(d['loadavg_start'].split()[0] for d in ds)} "
              f"| {', '.join(busy(d) for d in ds)} |")
