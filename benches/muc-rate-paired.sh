#!/usr/bin/env bash
# MUC 1x100 at a fixed rate, several corvid builds interleaved: one run of each build per round,
# the order reversed every other round, so that a drift of the machine over the minutes of a
# comparison (it happens here: p50s creep up by 20 % over ten minutes) falls on every build
# alike instead of on whichever ran last. Each run on a fresh database and a fresh server.
#
#   CORVIDS="before=/tmp/corvid-a after=/tmp/corvid-b" benches/muc-rate-paired.sh [RESULTS_FILE]
#
# Server on CPU 0, corvid-load on CPU 1. Knobs: REPS=4 (rounds), RATE=5000 (deliveries/s in all),
# DURATION=20, CORVIDS (label=binary ...), LOAD. Each line is corvid-load's muc-fanout line with
# the build's label and the server's CPU time over the run (user + system, ms).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/benches/results/muc-rate-paired-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
LOAD="${LOAD:-$TARGET/release/corvid-load}"
CORVIDS="${CORVIDS:?label=binary pairs, e.g. CORVIDS=\"a=/tmp/corvid-a b=/tmp/corvid-b\"}"
REPS="${REPS:-4}"
RATE="${RATE:-5000}"
DURATION="${DURATION:-20}"
CFG="$ROOT/benches/corvid-bench.toml"
DIR=/tmp/corvid-bench # the configuration's database and certificate live here
TICKS=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)"

wait_port() { local i; for i in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/7222) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

one_run() { # label binary
    local label=$1 bin=$2 pid before after line
    rm -rf "$DIR"; mkdir -p "$DIR"
    for i in $(seq 1 100); do echo "m$i pw"; done | "$bin" user import -c "$CFG" >/dev/null 2>&1
    taskset -c 0 "$bin" serve -c "$CFG" >"$DIR/stdout.log" 2>&1 &
    pid=$!
    wait_port || { echo "$label did not start (see $DIR/stdout.log)" >&2; kill "$pid"; return 1; }
    sleep 2
    before=$(cpu_ticks "$pid")
    line=$(taskset -c 1 "$LOAD" muc-fanout --server 127.0.0.1:7222 --domain bench.test --tls none \
        --user-prefix m --rooms 1 --occupants 100 --senders 10 --rate "$RATE" \
        --duration "$DURATION" --warmup 2 --concurrency 50 --label "$label" 2>/dev/null | tail -1)
    after=$(cpu_ticks "$pid")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null
    [ -n "$line" ] || { echo "$label: no result" >&2; return 1; }
    echo "${line%\}},\"server_cpu_ms\":$(( (after - before) * 1000 / TICKS ))}" >>"$OUT"
    echo "$label: delivery $(echo "$line" | grep -o '"latency":{[^}]*}' | grep -o '"p99_ms":[0-9.]*')" >&2
}

read -r -a builds <<<"$CORVIDS"
for ((rep = 1; rep <= REPS; rep++)); do
    order=("${builds[@]}")
    if ((rep % 2 == 0)); then
        order=()
        for ((i = ${#builds[@]} - 1; i >= 0; i--)); do order+=("${builds[i]}"); done
    fi
    echo "== round $rep $(date -u +%T) (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    for b in "${order[@]}"; do one_run "${b%%=*}" "${b#*=}"; done
done
echo "== done: $OUT" >&2
