#!/usr/bin/env bash
# corvid as a cluster of three nodes (issue 12): cross-node against same-node 1:1 messaging,
# MUC fan-out with the occupants spread over the nodes, logins across the cluster.
#
#   benches/cluster-bench.sh [RESULTS_FILE]
#
# Three release-build nodes n1..n3 on 127.0.0.21-23:$PORT share PostgreSQL ($PG_URL, schema
# $SCHEMA, selected through the URL's `options=-c search_path=...`) and Redis ($REDIS_URL, keys
# under "$KEY_PREFIX:"). Users u1..uN and m1..m$MUC_OCCUPANTS (password pw) are created with
# `corvid user import` before the nodes start (remembered in $W/users.count). The corvid-load
# tool logs user K in to node (K-1) mod 3 (`--servers`): with --cross-node every sender's
# recipient is on the next node, with --same-node on its own node (the same users, the same
# number of senders and receivers per node either way).
#
# The nodes run pinned to CPU $SERVER_CPU (all three), the tool to CPU $TOOL_CPU; Redis and
# PostgreSQL are the machine's, not pinned. Around every measurement the script reads the
# CPU time of the three nodes and of the redis-server process (/proc/PID/stat) and Redis's
# total_commands_processed, and adds to the tool's JSON line: nodes_cpu_s, redis_cpu_s,
# redis_commands, and per message delivered (every delivery of the run, warm-up included):
# nodes_cpu_us_per_msg, redis_cpu_us_per_msg, redis_commands_per_msg. (Redis is shared: other
# clients' commands during the run count too; REDIS_PRIVATE=1 starts a redis-server of the
# script's own on $REDIS_PORT instead.)
#
# Knobs (environment): USERS=600 (300 pairs), WINDOW=10, DURATION=15, WARMUP=5, RATE=2000
# (latency runs), LAT_DURATION=15, LOGINS=1500, CONCURRENCY=50, MUC_OCCUPANTS=100,
# MUC_SENDERS=10, MUC_WINDOW=5, MUC_RATE=5000, MUC_DURATION=15, REPEAT=1,
# SKIP="" (any of throughput latency muc login), QUIET_WAIT=60 (seconds to wait for other
# engineers' compilers before each measurement), SMOKE=1 (a few seconds each, to check that
# everything runs), FRESH=1 (drop the schema and the users first), PG_URL, SCHEMA,
# REDIS_URL, KEY_PREFIX, PORT=7222, W=/tmp/cluster-bench, SERVER_CPU=0, TOOL_CPU=1,
# LOAD, CORVID.
#
# A check that everything runs (debug builds, a few seconds per measurement, figures
# meaningless): SMOKE=1 LOAD=target/debug/corvid-load CORVID=target/debug/corvid \
#     W=/tmp/cluster-smoke benches/cluster-bench.sh /tmp/cluster-smoke.jsonl
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/benches/results/cluster-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
LOAD="${LOAD:-$TARGET/release/corvid-load}"
CORVID="${CORVID:-$TARGET/release/corvid}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
SCHEMA="${SCHEMA:-corvid_bench}"
REDIS_PRIVATE="${REDIS_PRIVATE:-0}"
REDIS_PORT="${REDIS_PORT:-6391}"
if [ "$REDIS_PRIVATE" = 1 ]; then
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
else
    REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/}"
fi
KEY_PREFIX="${KEY_PREFIX:-bench}"
PORT="${PORT:-7222}"
W="${W:-/tmp/cluster-bench}"
SERVER_CPU="${SERVER_CPU:-0}"
TOOL_CPU="${TOOL_CPU:-1}"
USERS="${USERS:-600}"
WINDOW="${WINDOW:-10}"
DURATION="${DURATION:-15}"
WARMUP="${WARMUP:-5}"
RATE="${RATE:-2000}"
LAT_DURATION="${LAT_DURATION:-15}"
LOGINS="${LOGINS:-1500}"
CONCURRENCY="${CONCURRENCY:-50}"
MUC_OCCUPANTS="${MUC_OCCUPANTS:-100}"
MUC_SENDERS="${MUC_SENDERS:-10}"
MUC_WINDOW="${MUC_WINDOW:-5}"
MUC_RATE="${MUC_RATE:-5000}"
MUC_DURATION="${MUC_DURATION:-15}"
REPEAT="${REPEAT:-1}"
SKIP="${SKIP:-}"
QUIET_WAIT="${QUIET_WAIT:-60}"
QUIET_BUSY="${QUIET_BUSY:-20}"
if [ "${SMOKE:-0}" = 1 ]; then
    USERS=60 DURATION=3 WARMUP=1 LAT_DURATION=3 RATE=300 LOGINS=150 MUC_DURATION=3 QUIET_WAIT=0
fi
NODES=3
IPS=(127.0.0.21 127.0.0.22 127.0.0.23)
SERVERS="$(printf '%s:'"$PORT"',' "${IPS[@]}")"
SERVERS="${SERVERS%,}"
RUN_START=$(date -u +%s)

die() { echo "cluster-bench.sh: $*" >&2; exit 1; }
log() { echo "== $(date -u +%H:%M:%S) $* (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }
skipped() { [[ " $SKIP " == *" $1 "* ]]; }

for tool in psql redis-cli python3 taskset; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
[ -x "$LOAD" ] || (cd "$ROOT" && cargo build --release -p corvid-load)
[ -x "$CORVID" ] || (cd "$ROOT" && cargo build --release --bin corvid)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$W" "$(dirname "$OUT")"

# ---- Redis
redis_host_port() { # from REDIS_URL
    local hp="${REDIS_URL#redis://}"
    hp="${hp%%/*}"
    hp="${hp##*@}"
    echo "$hp"
}
REDIS_HP="$(redis_host_port)"
REDIS_HOST="${REDIS_HP%%:*}"
REDIS_P="${REDIS_HP##*:}"
rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_P" "$@"; }
if [ "$REDIS_PRIVATE" = 1 ]; then
    taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$W" >"$W/redis.log" 2>&1 &
    echo $! >"$W/redis.pid"
    for _ in $(seq 50); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
rcli ping >/dev/null || die "Redis at $REDIS_HP does not answer"
redis_pid() { rcli info server | tr -d '\r' | sed -n 's/^process_id://p'; }
redis_commands() { rcli info stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'; }
# Leftovers of an earlier run under the prefix (directory, heartbeats).
rcli --scan --pattern "$KEY_PREFIX:*" | xargs -r -n 500 redis-cli -h "$REDIS_HOST" -p "$REDIS_P" del >/dev/null

# ---- PostgreSQL schema and users
SEP='?'
[[ "$PG_URL" == *\?* ]] && SEP='&'
STORAGE_URL="${PG_URL}${SEP}options=-c%20search_path%3D${SCHEMA}"
if [ "${FRESH:-0}" = 1 ]; then
    psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null
    rm -f "$W/users.count"
fi
psql -q "$PG_URL" -c "CREATE SCHEMA IF NOT EXISTS $SCHEMA" >/dev/null

node_config() { # index (1-based)
    local i=$1 d="$W/n$1"
    mkdir -p "$d"
    cat >"$d/corvid.toml" <<EOF
# Generated by benches/cluster-bench.sh: node n$i of the benchmark cluster.
domain = "bench.test"

[log]
level = "warn"

[storage]
url = "$STORAGE_URL"

[tls]
cert = "$d/bench.crt"
key = "$d/bench.key"
generate_self_signed = true

[c2s]
bind = "${IPS[$((i - 1))]}"
port = $PORT
direct_tls = false
require_encryption = false

[http]
enabled = false
tls_enabled = false

[auth]
scram_iterations = 4096
allow_plain = true
allow_plain_without_tls = true
max_concurrent_per_address = 10000
max_failures_per_window = 100000

[limits]
max_connections_per_address = 0
connection_rate_per_address = 0
max_unauthenticated_connections = 0
subscription_requests_per_minute = 0
bytes_rate_per_session = 0
bytes_rate_before_bind = 0
stanza_rate_per_session = 0

[muc]
occupant_messages_per_second = 0

[s2s]
enabled = false

[metrics]
enabled = false

[control]
socket = "$d/corvid.sock"

[upload]
enabled = false

[cluster]
node = "n$i"
redis = "$REDIS_URL"
key_prefix = "$KEY_PREFIX"
EOF
}
for i in $(seq $NODES); do node_config "$i"; done

create_users() {
    local want="u:$USERS:$LOGINS m:$MUC_OCCUPANTS" have=""
    [ -s "$W/users.count" ] && have=$(cat "$W/users.count")
    [ "$have" = "$want" ] && return 0
    local n=$USERS
    [ "$LOGINS" -gt "$n" ] && n=$LOGINS
    log "creating u1..u$n and m1..m$MUC_OCCUPANTS"
    {
        for ((k = 1; k <= n; k++)); do echo "u$k pw"; done
        for ((k = 1; k <= MUC_OCCUPANTS; k++)); do echo "m$k pw"; done
    } | "$CORVID" user import -c "$W/n1/corvid.toml" >/dev/null
    echo "$want" >"$W/users.count"
}
create_users

# ---- nodes
node_pid() { [ -s "$W/n$1/corvid.pid" ] && kill -0 "$(cat "$W/n$1/corvid.pid")" 2>/dev/null && cat "$W/n$1/corvid.pid"; }
wait_port() { # ip port seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
start_nodes() {
    local i
    for i in $(seq $NODES); do
        node_pid "$i" >/dev/null && die "n$i already running"
        taskset -c "$SERVER_CPU" "$CORVID" serve -c "$W/n$i/corvid.toml" >"$W/n$i/stdout.log" 2>&1 &
        echo $! >"$W/n$i/corvid.pid"
    done
    for i in $(seq $NODES); do
        wait_port "${IPS[$((i - 1))]}" "$PORT" 60 || die "n$i did not open $PORT (see $W/n$i/stdout.log)"
    done
    # Heartbeats and the directory: a node knows the others within a heartbeat or two.
    sleep 3
    "$CORVID" ctl cluster -c "$W/n1/corvid.toml" 2>/dev/null >&2 || true
}
stop_nodes() {
    local i p
    for i in $(seq $NODES); do
        p=$(node_pid "$i") || continue
        kill -TERM "$p"
    done
    for i in $(seq $NODES); do
        p=$(node_pid "$i") || continue
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p"
        rm -f "$W/n$i/corvid.pid"
    done
    if [ "$REDIS_PRIVATE" = 1 ] && [ -s "$W/redis.pid" ]; then
        kill "$(cat "$W/redis.pid")" 2>/dev/null || true
        rm -f "$W/redis.pid"
    fi
}
trap stop_nodes EXIT

# ---- measuring
compiling() { local p; for p in rustc clippy-driver cc1 cc1plus ld; do pgrep -x "$p" >/dev/null && return 0; done; return 1; }
machine_busy() {
    local a b
    a=$(head -1 /proc/stat); sleep 2; b=$(head -1 /proc/stat)
    echo "$a $b" | awk '{b1=$2+$3+$4+$7+$8+$9; t1=b1+$5+$6; b2=$13+$14+$15+$18+$19+$20; t2=b2+$16+$17;
        printf "%d", (t2 > t1) ? 100 * (b2 - b1) / (t2 - t1) : 0}'
}
wait_quiet() {
    local t=0
    while [ "$t" -lt "$QUIET_WAIT" ] && { compiling || [ "$(machine_busy)" -gt "$QUIET_BUSY" ]; }; do
        [ "$t" = 0 ] && log "waiting for compilers / other load to finish (up to ${QUIET_WAIT}s)"
        sleep 5; t=$((t + 5))
    done
    return 0
}
cpu_ticks() { # pid... -> utime+stime ticks summed
    local p s=0 f
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        f=$(sed 's/.*) //' "/proc/$p/stat")
        s=$((s + $(echo "$f" | awk '{print $12 + $13}')))
    done
    echo "$s"
}
node_pids() { local i; for i in $(seq $NODES); do node_pid "$i" || true; done; }

measure() { # name mode args...
    local name=$1 mode=$2
    shift 2
    wait_quiet
    log "$name: $mode $*"
    local rpid nodes0 redis0 cmds0 line nodes1 redis1 cmds1
    rpid=$(redis_pid)
    nodes0=$(cpu_ticks $(node_pids)); redis0=$(cpu_ticks "$rpid"); cmds0=$(redis_commands)
    if ! line=$(taskset -c "$TOOL_CPU" "$LOAD" "$mode" --servers "$SERVERS" --domain bench.test \
        --label "cluster-$name" "$@" | tail -1); then
        echo "cluster-bench.sh: $name failed" >&2
        return 0
    fi
    nodes1=$(cpu_ticks $(node_pids)); redis1=$(cpu_ticks "$rpid"); cmds1=$(redis_commands)
    LINE="$line" NAME="$name" HZ="$(getconf CLK_TCK)" NODES_CPU=$((nodes1 - nodes0)) \
        REDIS_CPU=$((redis1 - redis0)) CMDS=$((cmds1 - cmds0)) RUN_START="$RUN_START" \
        python3 - "$OUT" <<'PY'
import json, os, sys
d = json.loads(os.environ["LINE"])
hz = float(os.environ["HZ"])
nodes_s = int(os.environ["NODES_CPU"]) / hz
redis_s = int(os.environ["REDIS_CPU"]) / hz
cmds = int(os.environ["CMDS"])
# Deliveries of the whole run: 1:1 received_total, MUC deliveries, logins.
n = d.get("received_total") or d.get("received_total_all") or d.get("delivered_total") or d.get("logins_ok") or 0
d.update({
    "bench": os.environ["NAME"], "bench_run": int(os.environ["RUN_START"]),
    "nodes_cpu_s": round(nodes_s, 3), "redis_cpu_s": round(redis_s, 3), "redis_commands": cmds,
    "per_msg_basis": n,
    "nodes_cpu_us_per_msg": round(nodes_s * 1e6 / n, 2) if n else None,
    "redis_cpu_us_per_msg": round(redis_s * 1e6 / n, 2) if n else None,
    "redis_commands_per_msg": round(cmds / n, 3) if n else None,
})
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(d) + "\n")
PY
}

start_nodes
for _ in $(seq "$REPEAT"); do
    if ! skipped throughput; then
        measure throughput-cross throughput --users "$USERS" --cross-node --window "$WINDOW" \
            --duration "$DURATION" --warmup "$WARMUP"
        measure throughput-same throughput --users "$USERS" --same-node --window "$WINDOW" \
            --duration "$DURATION" --warmup "$WARMUP"
    fi
    if ! skipped latency; then
        measure latency-cross latency --users "$USERS" --cross-node --rate "$RATE" \
            --duration "$LAT_DURATION" --warmup 2
        measure latency-same latency --users "$USERS" --same-node --rate "$RATE" \
            --duration "$LAT_DURATION" --warmup 2
    fi
    if ! skipped muc; then
        measure muc-1x100-max muc-fanout --user-prefix m --rooms 1 --occupants "$MUC_OCCUPANTS" \
            --senders "$MUC_SENDERS" --window "$MUC_WINDOW" --duration "$MUC_DURATION" --warmup 2
        measure muc-1x100-rate muc-fanout --user-prefix m --rooms 1 --occupants "$MUC_OCCUPANTS" \
            --senders "$MUC_SENDERS" --rate "$MUC_RATE" --duration "$MUC_DURATION" --warmup 2
    fi
    if ! skipped login; then
        measure login-rate login-rate --users "$LOGINS" --concurrency "$CONCURRENCY"
    fi
done

# ---- summary of this run
RUN_START="$RUN_START" python3 - "$OUT" <<'PY'
import json, os, sys
run = int(os.environ["RUN_START"])
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("bench_run") == run]
def f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)
print(f"{'measurement':18} {'result':44} {'nodes µs/msg':>12} {'redis µs/msg':>12} {'redis cmd/msg':>13}")
by = {}
for r in rows:
    b = r["bench"]
    if r["mode"] == "throughput":
        res = f"{f(r.get('msgs_per_s'))} msgs/s, p99 {r['latency']['p99_ms']} ms, lost {r.get('lost_measured')}"
        by.setdefault(b, []).append(("msgs_per_s", r.get("msgs_per_s")))
    elif r["mode"] == "latency":
        res = f"p50 {r['latency']['p50_ms']} p99 {r['latency']['p99_ms']} ms at {f(r.get('rate'))}/s, lost {r.get('lost_measured')}"
        by.setdefault(b, []).append(("p99_ms", r["latency"]["p99_ms"]))
    elif r["mode"] == "muc-fanout":
        keys = [k for k in ("deliveries_per_s", "delivered_per_s") if k in r]
        v = r.get(keys[0]) if keys else None
        lat = r.get("latency", {}) or {}
        res = f"{f(v)} deliveries/s, p99 {lat.get('p99_ms', '-')} ms, lost {r.get('lost', r.get('lost_measured'))}"
    elif r["mode"] == "login-rate":
        res = f"{r.get('logins_per_s')} logins/s, p99 {r['login_time']['p99_ms']} ms, failed {r.get('logins_failed')}"
    else:
        res = r["mode"]
    print(f"{b:18} {res:44} {f(r.get('nodes_cpu_us_per_msg'), '{:.1f}'):>12} "
          f"{f(r.get('redis_cpu_us_per_msg'), '{:.1f}'):>12} {f(r.get('redis_commands_per_msg'), '{:.2f}'):>13}")
def med(b, k):
    v = sorted(x for kk, x in by.get(b, []) if kk == k and x is not None)
    return v[len(v) // 2] if v else None
tc, ts = med("throughput-cross", "msgs_per_s"), med("throughput-same", "msgs_per_s")
lc, ls = med("latency-cross", "p99_ms"), med("latency-same", "p99_ms")
if tc and ts:
    print(f"cross-node / same-node msgs/s: {tc / ts:.2f}")
if lc is not None and ls is not None:
    print(f"p99 added by crossing nodes: {lc - ls:+.3f} ms")
print(f"results: {sys.argv[1]}")
PY
