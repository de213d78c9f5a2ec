#!/usr/bin/env python3
"""One line per measurement from corvid-load JSON lines: benches/summarize.py results/*.jsonl"""
import json
import sys

for path in sys.argv[1:]:
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
        print(f"{s} | load {d['loadavg_start']}")
