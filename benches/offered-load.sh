#!/usr/bin/env bash
# Delivered 1:1 msgs/s and p99 against the offered rate, for each server in turn: one
# `corvid-load latency` run per rate, each server started afresh for each point (through
# run-all.sh, so the conditions are the suite's: server on CPU 0, tool on CPU 1, 1,000 users).
# `benches/plot.py DIR FILE` then draws msgs-vs-offered.png from the lines.
#
#   benches/offered-load.sh [RESULTS_FILE]
#
# Knobs: SERVERS="corvid prosody ejabberd", RATES="1000 2000 5000 10000 20000 40000 80000",
# DURATION=10, and every knob of run-all.sh (CORVID, LOAD, MSG_TLS, MAM, ...).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/benches/results/offered-load-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
SERVERS="${SERVERS:-corvid prosody ejabberd}"
RATES="${RATES:-1000 2000 5000 10000 20000 40000 80000}"
export DURATION="${DURATION:-10}"
for server in $SERVERS; do
    for rate in $RATES; do
        RATE="$rate" SKIP="idle login throughput presence muc" \
            "$ROOT/benches/run-all.sh" "$server" "$OUT"
    done
done
echo "offered-load: $OUT"
