#!/usr/bin/env bash
# A fixed-rate run (MUC 1x100 or 1:1), several corvid variants interleaved: one run of each
# variant per round, the order reversed every other round, so that a drift of the machine over
# the minutes of a comparison (it happens here: p50s creep up by 20 % over ten minutes) falls
# on every variant alike instead of on whichever ran last. Each run on a fresh database and a
# fresh server.
#
#   CORVIDS="before=/tmp/corvid-a after=/tmp/corvid-b" benches/rate-paired.sh [RESULTS_FILE]
#   MODE=1to1 RATE=2000 CORVIDS="on=/tmp/corvid off=/tmp/corvid+/tmp/nomam.toml" benches/rate-paired.sh F
#
# A variant is label=binary, or label=binary+extra.toml: the extra file's lines are appended to
# benches/corvid-bench.toml (e.g. "[mam]" / "enabled = false"). Server on CPU 0, corvid-load on
# CPU 1. Knobs: MODE=muc (1x100, 10 senders, RATE deliveries/s in all) or 1to1 (USERS=1000
# users in pairs, RATE msgs/s in all), REPS=4 (rounds), RATE (5000 muc, 2000 1to1),
# DURATION=20, LOAD. Each line is corvid-load's line with the variant's label and the server's
# CPU time over the run (user + system, ms).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/benches/results/rate-paired-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
LOAD="${LOAD:-$TARGET/release/corvid-load}"
CORVIDS="${CORVIDS:?label=binary pairs, e.g. CORVIDS=\"a=/tmp/corvid-a b=/tmp/corvid-b\"}"
MODE="${MODE:-muc}"
REPS="${REPS:-4}"
USERS="${USERS:-1000}"
DURATION="${DURATION:-20}"
case "$MODE" in
    muc) RATE="${RATE:-5000}" ;;
    1to1) RATE="${RATE:-2000}" ;;
    *) echo "MODE is muc or 1to1" >&2; exit 2 ;;
esac
DIR=/tmp/corvid-bench # the configuration's database and certificate live here
CFG="$DIR/paired.toml"
TICKS=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)"

wait_port() { local i; for i in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/7222) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # label
    if [ "$MODE" = muc ]; then
        taskset -c 1 "$LOAD" muc-fanout --server 127.0.0.1:7222 --domain bench.test --tls none \
            --user-prefix m --rooms 1 --occupants 100 --senders 10 --rate "$RATE" \
            --duration "$DURATION" --warmup 2 --concurrency 50 --label "$1"
    else
        taskset -c 1 "$LOAD" latency --server 127.0.0.1:7222 --domain bench.test --tls none \
            --users "$USERS" --rate "$RATE" --duration "$DURATION" --warmup 2 --label "$1"
    fi
}

one_run() { # label binary[+extra.toml]
    local label=$1 bin=${2%%+*} extra= pid before after line prefix=u count=$USERS
    [[ "$2" == *+* ]] && extra=${2#*+}
    [ "$MODE" = muc ] && { prefix=m; count=100; }
    rm -rf "$DIR"; mkdir -p "$DIR"
    { cat "$ROOT/benches/corvid-bench.toml"; [ -n "$extra" ] && { echo; cat "$extra"; }; } >"$CFG"
    for i in $(seq 1 "$count"); do echo "$prefix$i pw"; done | "$bin" user import -c "$CFG" >/dev/null 2>&1
    taskset -c 0 "$bin" serve -c "$CFG" >"$DIR/stdout.log" 2>&1 &
    pid=$!
    wait_port || { echo "$label did not start (see $DIR/stdout.log)" >&2; kill "$pid"; return 1; }
    sleep 2
    before=$(cpu_ticks "$pid")
    line=$(measure "$label" 2>/dev/null | tail -1)
    after=$(cpu_ticks "$pid")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null
    [ -n "$line" ] || { echo "$label: no result" >&2; return 1; }
    echo "${line%\}},\"server_cpu_ms\":$(( (after - before) * 1000 / TICKS ))}" >>"$OUT"
    echo "$label: $(echo "$line" | grep -o '"latency":{[^}]*}' | grep -o '"p99_ms":[0-9.]*'), server CPU $(( (after - before) * 1000 / TICKS )) ms" >&2
}

read -r -a variants <<<"$CORVIDS"
for ((rep = 1; rep <= REPS; rep++)); do
    order=("${variants[@]}")
    if ((rep % 2 == 0)); then
        order=()
        for ((i = ${#variants[@]} - 1; i >= 0; i--)); do order+=("${variants[i]}"); done
    fi
    echo "== round $rep $(date -u +%T) (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    for v in "${order[@]}"; do one_run "${v%%=*}" "${v#*=}"; done
done
echo "== done: $OUT" >&2
