#!/usr/bin/env python3
"""One line per measurement from corvid-load JSON lines: benches/summarize.py [-v] results/*.jsonl

-v also prints each run of the presence-login measurements."""
import json
import sys

flags = [a for a in sys.argv[1:] if a.startswith("-")]
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
        print(f"{s} | load {d['loadavg_start']}")
        if m == "presence-login" and "-v" in flags:
            for r in d["per_run"]:
                print(f"    run {r['run']}: broadcast={r['t_broadcast_ms']}ms "
                      f"probes={r['t_probes_ms']}ms unavailable={r['t_unavailable_ms']}ms "
                      f"stanzas_out={r['stanzas_to_subject']}+{r['stanzas_to_contacts']} "
                      f"server_cpu={r['server_cpu_ms_presence']}ms "
                      f"(schedstat {r['server_cpu_sched_ms_presence']}ms)")
