#!/usr/bin/env bash
# Idle-session memory: server RSS against the number of idle sessions, for corvid (with each
# allocator asked for) and the anchors, one JSON line per step (`corvid-load idle-curve`).
#
#   benches/memory-bench.sh [RESULTS_FILE]
#
# Each (server, allocator, TLS mode, logins in flight) combination gets a freshly started server;
# users are logged in in steps (STEPS), and after each step the tool holds every session for
# SETTLE seconds and reads the server's RSS. Server on CPU $SERVER_CPU, tool on CPU $TOOL_CPU.
#
# Knobs (environment): SERVERS="corvid prosody ejabberd", ALLOCATORS="default" (corvid only; any
# of default, glibc-arena1, jemalloc, mimalloc: the last two through LD_PRELOAD of Debian's
# libjemalloc2 / libmimalloc2.0, to compare without rebuilding), STEPS="1000,2000,5000,10000,19000",
# TLS_MODES="none starttls", CONCURRENCY_LIST="50 100", SETTLE=10, CARGO_TARGET_DIR (release
# build of corvid and corvid-load), ANCHORS (path of shared/anchors/anchors.sh).
#
# The process's open-file limit caps a step: this machine's hard limit is 20,000 (and the
# container lacks CAP_SYS_RESOURCE to raise it), so the last step defaults to 19,000.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/benches/results/memory-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
SERVERS="${SERVERS:-corvid prosody ejabberd}"
ALLOCATORS="${ALLOCATORS:-default}"
STEPS="${STEPS:-1000,2000,5000,10000,19000}"
TLS_MODES="${TLS_MODES:-none starttls}"
CONCURRENCY_LIST="${CONCURRENCY_LIST:-50 100}"
SETTLE="${SETTLE:-10}"
SERVER_CPU="${SERVER_CPU:-0}"
TOOL_CPU="${TOOL_CPU:-1}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
LOAD="${LOAD:-$TARGET/release/corvid-load}"
CORVID="${CORVID:-$TARGET/release/corvid}"
ANCHORS="${ANCHORS:-$ROOT/../shared/anchors/anchors.sh}"
# corvid runs from its own directory and port, so this script can run beside benches/run-all.sh.
DIR=/tmp/corvid-mem
PORT=7322
CFG=$DIR/corvid.toml
LAST_STEP=${STEPS##*,}

export SERVER_CPU
die() { echo "memory-bench.sh: $*" >&2; exit 1; }
log() { echo "== $(date -u +%H:%M:%S) $* (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }
ulimit -n "$(ulimit -Hn)"
[ -x "$LOAD" ] && [ -x "$CORVID" ] || die "build first: cargo build --release -p corvid -p corvid-load"
mkdir -p "$(dirname "$OUT")" "$DIR"

wait_port() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

corvid_setup() {
    sed -e "s#/tmp/corvid-bench#$DIR#g" -e "s/^port = 7222/port = $PORT/" \
        "$ROOT/benches/corvid-bench.toml" > "$CFG"
    local have=0
    [ -s "$DIR/users.count" ] && have=$(cat "$DIR/users.count")
    if [ "$have" -lt "$LAST_STEP" ]; then
        for ((i = have + 1; i <= LAST_STEP; i++)); do echo "u$i pw"; done |
            "$CORVID" user import -c "$CFG" >/dev/null
        echo "$LAST_STEP" > "$DIR/users.count"
    fi
}
corvid_start() { # allocator
    local env=()
    case "$1" in
        default) ;;
        glibc-arena1) env=(MALLOC_ARENA_MAX=1) ;;
        jemalloc) env=(LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2) ;;
        mimalloc) env=(LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2) ;;
        *) die "unknown allocator $1" ;;
    esac
    env "${env[@]}" taskset -c "$SERVER_CPU" "$CORVID" serve -c "$CFG" >"$DIR/stdout.log" 2>&1 &
    echo $! > "$DIR/corvid.pid"
    wait_port "$PORT" 30 || die "corvid did not open $PORT (see $DIR/stdout.log)"
    sleep 2
}
corvid_stop() {
    local p
    p=$(cat "$DIR/corvid.pid" 2>/dev/null) || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    rm -f "$DIR/corvid.pid"
}

curve() { # server label port pid tls concurrency
    log "$2: idle-curve $STEPS, tls $5, $6 in flight"
    taskset -c "$TOOL_CPU" "$LOAD" idle-curve --server "127.0.0.1:$3" --domain bench.test \
        --label "$2" --out "$OUT" --pid "$4" --steps "$STEPS" --tls "$5" --concurrency "$6" \
        --settle "$SETTLE" || echo "memory-bench.sh: $2 $5 $6 failed" >&2
}

trap 'corvid_stop; for s in prosody ejabberd; do [[ " $SERVERS " == *" $s "* ]] && "$ANCHORS" stop $s >/dev/null 2>&1; done; true' EXIT
for server in $SERVERS; do
    for tls in $TLS_MODES; do
        for c in $CONCURRENCY_LIST; do
            case "$server" in
                corvid)
                    corvid_setup
                    for alloc in $ALLOCATORS; do
                        corvid_start "$alloc"
                        label=corvid
                        [ "$alloc" = default ] || label="corvid-$alloc"
                        curve corvid "$label" "$PORT" "$(cat "$DIR/corvid.pid")" "$tls" "$c"
                        corvid_stop
                    done
                    ;;
                prosody | ejabberd)
                    port=5222
                    [ "$server" = ejabberd ] && port=6222
                    "$ANCHORS" start "$server" >&2
                    "$ANCHORS" users "$server" "$LAST_STEP" >&2
                    # Restarted after creating the users, so the baseline is a fresh server's.
                    "$ANCHORS" stop "$server" >&2
                    "$ANCHORS" start "$server" >&2
                    sleep 3
                    curve "$server" "$server" "$port" "$("$ANCHORS" pid "$server")" "$tls" "$c"
                    "$ANCHORS" stop "$server" >&2
                    ;;
                *) die "unknown server $server" ;;
            esac
        done
    done
done
log "done: $OUT"
