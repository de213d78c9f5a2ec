#!/usr/bin/env bash
# Run the whole benchmark set against one server and append JSON lines to a results file.
#
#   benches/run-all.sh prosody|ejabberd|corvid [RESULTS_FILE]
#
# The server runs pinned to CPU $SERVER_CPU (default 0), the load tool to CPU $TOOL_CPU (default 1).
# Prosody and ejabberd are driven through the shared anchors script ($ANCHORS); corvid is started
# from target/release/corvid with benches/corvid-bench.toml. Every measurement is one JSON line
# (it carries the load average at its start and end); the server is restarted before each idle
# measurement so that its baseline RSS is a fresh one.
#
# Knobs (environment): IDLE_USERS="1000 5000", LOGINS=2000, CONCURRENCY=50, MSG_USERS=1000,
# WINDOW=10, DURATION=20, RATE=2000, REPEAT=1 (runs of each measurement), SKIP="" (any of
# idle login throughput latency presence muc), TLS_MODES="none starttls", CONTACTS=500 and
# PRESENCE_RUNS=5 (presence: subject u0 with contacts c1..cCONTACTS, all mutually subscribed),
# MUC_SHAPES="1x100 10x100" (rooms x occupants; users m1..m(R*N)), MUC_SENDERS=10 (per room),
# MUC_WINDOW=5 (per sender), MUC_RATE=5000 (deliveries/s in total, latency run),
# MUC_DURATION=20, MUC_RESTART=1 (restart the server before each MUC measurement), QUIET_WAIT=0 (seconds to wait for running compilers before each measurement),
# MSG_TLS=none (throughput, latency and MUC sessions: none or starttls, as most clients connect),
# SETTLE_AFTER_MAX=0 (seconds to wait after each maximum-rate run, so that a fixed-rate run does
# not meet the backlog it left, the archive writer's mostly),
# MAM (unset: each server as configured, i.e. corvid archives and the ejabberd anchor does not;
# 1: ejabberd with mod_mam, anchors.sh's archive-on variant; 0: corvid with [mam] enabled = false),
# BACKGROUND_IDLE=0 (that many idle sessions, users i1..iN with resource `idle`, logged in by a
# second corvid-load before the measurements and held through them, so that logins, latency,
# presence and MUC are measured on a server that size; MUC_RESTART is then 0 and the idle phase
# is skipped, as a restart would drop them; the holder's own line gives RSS per session),
# SOURCE_ADDRS=0 (spread the tool's connections over that many source addresses, 127.0.0.2
# upwards: with BACKGROUND_IDLE in the tens of thousands, one address's ephemeral ports fill
# up and connect() in the tool, not the server, bounds the login rate).
set -euo pipefail

SERVER="${1:?usage: run-all.sh prosody|ejabberd|corvid [RESULTS_FILE]}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${2:-$ROOT/benches/results/$SERVER-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
ANCHORS="${ANCHORS:-}"
if [ -z "$ANCHORS" ]; then
    for a in "$ROOT/../shared/anchors/anchors.sh" "$ROOT/shared/anchors/anchors.sh" /work/shared/anchors/anchors.sh; do
        [ -x "$a" ] && { ANCHORS="$a"; break; }
    done
fi
SERVER_CPU="${SERVER_CPU:-0}"
TOOL_CPU="${TOOL_CPU:-1}"
IDLE_USERS="${IDLE_USERS:-1000 5000}"
LOGINS="${LOGINS:-2000}"
CONCURRENCY="${CONCURRENCY:-50}"
MSG_USERS="${MSG_USERS:-1000}"
WINDOW="${WINDOW:-10}"
DURATION="${DURATION:-20}"
RATE="${RATE:-2000}"
CONTACTS="${CONTACTS:-500}"
PRESENCE_RUNS="${PRESENCE_RUNS:-5}"
MUC_SHAPES="${MUC_SHAPES:-1x100 10x100}"
MUC_SENDERS="${MUC_SENDERS:-10}"
MUC_WINDOW="${MUC_WINDOW:-5}"
MUC_RATE="${MUC_RATE:-5000}"
MUC_DURATION="${MUC_DURATION:-20}"
MUC_RESTART="${MUC_RESTART:-1}"
REPEAT="${REPEAT:-1}"
SKIP="${SKIP:-}"
TLS_MODES="${TLS_MODES:-none starttls}"
MSG_TLS="${MSG_TLS:-none}"
SETTLE_AFTER_MAX="${SETTLE_AFTER_MAX:-0}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
LOAD="${LOAD:-$TARGET/release/corvid-load}"
CORVID="${CORVID:-$TARGET/release/corvid}"
CORVID_CFG="${CORVID_CFG:-$ROOT/benches/corvid-bench.toml}"
CORVID_DIR=/tmp/corvid-bench
export MAM="${MAM:-}"
if [ "$SERVER" = corvid ] && [ "$MAM" = 0 ]; then
    mkdir -p "$CORVID_DIR"
    { cat "$CORVID_CFG"; printf '\n[mam]\nenabled = false\n'; } > "$CORVID_DIR/corvid-nomam.toml"
    CORVID_CFG="$CORVID_DIR/corvid-nomam.toml"
fi

# An anchors.sh without the MAM knob starts ejabberd as its lab's ejabberd.yml says, whatever
# MAM is: refuse rather than record an archive-off run as the archive-on anchor (it happened).
EJABBERD_YML="${LAB:-${TMPDIR:-/tmp}/lab-load}/ejabberd/ejabberd.yml"
if [ "$SERVER" = ejabberd ] && [ "$MAM" = 1 ] && ! grep -q 'MAM' "$ANCHORS" 2>/dev/null \
    && ! grep -q '^  mod_mam:' "$EJABBERD_YML" 2>/dev/null; then
    echo "run-all.sh: MAM=1, but $ANCHORS has no MAM knob and $EJABBERD_YML loads no mod_mam;" \
        "append benches/anchors/ejabberd-mam.yml under its modules: (LAB=DIR for a separate lab)" >&2
    exit 2
fi

BACKGROUND_IDLE="${BACKGROUND_IDLE:-0}"
SOURCE_ADDRS="${SOURCE_ADDRS:-0}"
SOURCES=()
[ "$SOURCE_ADDRS" -gt 0 ] && SOURCES=(--source-addrs "$SOURCE_ADDRS")
if [ "$BACKGROUND_IDLE" -gt 0 ]; then
    MUC_RESTART=0
    SKIP="$SKIP idle"
fi

export SERVER_CPU
die() { echo "run-all.sh: $*" >&2; exit 1; }
log() { echo "== $(date -u +%H:%M:%S) $* (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }

case "$SERVER" in
    prosody) PORT=5222 ;;
    ejabberd) PORT=6222 ;;
    corvid) PORT=7222 ;;
    *) die "unknown server $SERVER" ;;
esac
MAX_USERS=$LOGINS
for n in $IDLE_USERS $MSG_USERS; do [ "$n" -gt "$MAX_USERS" ] && MAX_USERS=$n; done

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$(dirname "$OUT")"
[ -x "$LOAD" ] || cargo build --release --manifest-path "$ROOT/benches/load/Cargo.toml"
[ -x "$LOAD" ] || die "no load tool at $LOAD (set LOAD=)"
if [ "$SERVER" != corvid ]; then
    [ -n "$ANCHORS" ] || die "anchors.sh not found (set ANCHORS=)"
fi

wait_port() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ---- corvid lifecycle
corvid_pid() { [ -s "$CORVID_DIR/corvid.pid" ] && kill -0 "$(cat "$CORVID_DIR/corvid.pid")" 2>/dev/null && cat "$CORVID_DIR/corvid.pid"; }
corvid_start() {
    mkdir -p "$CORVID_DIR"
    [ -x "$CORVID" ] || (cd "$ROOT" && cargo build --release --bin corvid)
    corvid_pid >/dev/null && die "corvid already running"
    taskset -c "$SERVER_CPU" "$CORVID" serve -c "$CORVID_CFG" >"$CORVID_DIR/stdout.log" 2>&1 &
    echo $! > "$CORVID_DIR/corvid.pid"
    wait_port "$PORT" 30 || die "corvid did not open $PORT (see $CORVID_DIR/stdout.log)"
}
corvid_stop() {
    local p
    p=$(corvid_pid) || return 0
    kill -TERM "$p"
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
    rm -f "$CORVID_DIR/corvid.pid"
}
# Create u1..uN with password 'pw'. Kept in one function: a faster bulk path may replace it.
corvid_users() {
    local n=$1 have=0
    [ -s "$CORVID_DIR/users.count" ] && have=$(cat "$CORVID_DIR/users.count")
    [ "$have" -ge "$n" ] && return 0
    mkdir -p "$CORVID_DIR"
    for ((i = have + 1; i <= n; i++)); do echo "u$i pw"; done |
        "$CORVID" user import -c "$CORVID_CFG" >/dev/null
    echo "$n" > "$CORVID_DIR/users.count"
}

# The presence benchmark's accounts: u0 (the subject) and c1..cN, password 'pw'. Kept apart
# from u1..uN so that their rosters never touch the other measurements.
presence_users() {
    local n=$1 lab="${LAB:-${TMPDIR:-/tmp}/lab-load}"
    case "$SERVER" in
        corvid) # before start, like corvid_users
            local have=0
            [ -s "$CORVID_DIR/presence-users.count" ] && have=$(cat "$CORVID_DIR/presence-users.count")
            [ "$have" -ge "$n" ] && return 0
            mkdir -p "$CORVID_DIR"
            { echo "u0 pw"; for ((i = 1; i <= n; i++)); do echo "c$i pw"; done; } |
                "$CORVID" user import -c "$CORVID_CFG" 2>/dev/null >&2
            echo "$n" > "$CORVID_DIR/presence-users.count"
            ;;
        prosody) # same way as anchors.sh users: a Lua loop in the running server's admin shell
            prosodyctl --config "$lab/prosody/prosody.cfg.lua" shell \
                ">local um=require'core.usermanager'; local c=0; local function mk(u) if not um.user_exists(u,'bench.test') then assert(um.create_user(u,'pw','bench.test')); c=c+1 end end; mk('u0'); for i=1,$n do mk('c'..i) end; return 'created '..c" >&2
            ;;
        ejabberd) # same way as anchors.sh users: mod_http_api on 127.0.0.1:6280
            python3 - "$n" >&2 <<'PY'
import http.client, json, sys
n = int(sys.argv[1]); c = http.client.HTTPConnection("127.0.0.1", 6280, timeout=30); made = 0
for u in ["u0"] + [f"c{i}" for i in range(1, n + 1)]:
    c.request("POST", "/api/register", json.dumps({"user": u, "host": "bench.test", "password": "pw"}),
              {"Content-Type": "application/json"})
    r = c.getresponse(); body = r.read()
    if r.status == 200: made += 1
    elif r.status != 409 and b"already" not in body and b"conflict" not in body.lower():
        sys.exit(f"register {u}: {r.status} {body[:200]!r}")
print(f"created {made} (others existed)")
PY
            ;;
    esac
}

# Accounts PREFIX1..PREFIXn, password 'pw', apart from u1..uN like the presence mode's: the MUC
# benchmark's m1..mN (one distinct user per occupant) and BACKGROUND_IDLE's i1..iN. Same
# provisioning paths as presence_users; COUNT_FILE remembers how many corvid already has.
prefixed_users() { # prefix n count-file
    local prefix=$1 n=$2 count_file="$CORVID_DIR/$3" lab="${LAB:-${TMPDIR:-/tmp}/lab-load}"
    case "$SERVER" in
        corvid) # before start, like corvid_users
            local have=0
            [ -s "$count_file" ] && have=$(cat "$count_file")
            [ "$have" -ge "$n" ] && return 0
            mkdir -p "$CORVID_DIR"
            for ((i = have + 1; i <= n; i++)); do echo "$prefix$i pw"; done |
                "$CORVID" user import -c "$CORVID_CFG" 2>/dev/null >&2
            echo "$n" > "$count_file"
            ;;
        prosody)
            prosodyctl --config "$lab/prosody/prosody.cfg.lua" shell \
                ">local um=require'core.usermanager'; local c=0; for i=1,$n do if not um.user_exists('$prefix'..i,'bench.test') then assert(um.create_user('$prefix'..i,'pw','bench.test')); c=c+1 end end; return 'created '..c" >&2
            ;;
        ejabberd)
            python3 - "$prefix" "$n" >&2 <<'PY'
import http.client, json, sys
prefix, n = sys.argv[1], int(sys.argv[2]); c = http.client.HTTPConnection("127.0.0.1", 6280, timeout=30); made = 0
for i in range(1, n + 1):
    c.request("POST", "/api/register", json.dumps({"user": f"{prefix}{i}", "host": "bench.test", "password": "pw"}),
              {"Content-Type": "application/json"})
    r = c.getresponse(); body = r.read()
    if r.status == 200: made += 1
    elif r.status != 409 and b"already" not in body and b"conflict" not in body.lower():
        sys.exit(f"register {prefix}{i}: {r.status} {body[:200]!r}")
print(f"created {made} (others existed)")
PY
            ;;
    esac
}
muc_users() { prefixed_users m "$1" muc-users.count; }
idle_users() { prefixed_users i "$1" idle-users.count; }
MUC_USERS=0
for shape in $MUC_SHAPES; do
    n=$(( ${shape%x*} * ${shape#*x} )); [ "$n" -gt "$MUC_USERS" ] && MUC_USERS=$n
done

# ---- generic lifecycle
# The holder of BACKGROUND_IDLE sessions: started after the server, stopped at exit.
HOLDER_PID=
hold_idle() {
    local log="${TMPDIR:-/tmp}/run-all-holder.$$"
    : >"$log"
    log "$SERVER: $BACKGROUND_IDLE background idle sessions"
    taskset -c "$TOOL_CPU" "$LOAD" idle --server "127.0.0.1:$PORT" --domain bench.test \
        --user-prefix i --resource idle --users "$BACKGROUND_IDLE" --concurrency "$CONCURRENCY" \
        --settle 10 --hold 86400 --label "$SERVER-background" --out "$OUT" --pid "$(server_pid)" \
        "${SOURCES[@]}" \
        >"$log" 2>&1 &
    HOLDER_PID=$!
    for _ in $(seq 3600); do
        grep -q "holding for" "$log" && { grep "sessions held" "$log" >&2; return 0; }
        kill -0 "$HOLDER_PID" 2>/dev/null || { cat "$log" >&2; die "the idle holder ended"; }
        sleep 1
    done
    die "the idle holder did not finish logging in within an hour"
}
release_idle() { [ -n "$HOLDER_PID" ] && kill "$HOLDER_PID" 2>/dev/null; HOLDER_PID=; return 0; }

start() {
    case "$SERVER" in
        corvid) corvid_start ;;
        *) "$ANCHORS" start "$SERVER" >&2 ;;
    esac
    sleep 2 # let the server finish starting before a baseline is read
}
stop() {
    case "$SERVER" in
        corvid) corvid_stop ;;
        *) "$ANCHORS" stop "$SERVER" >&2 ;;
    esac
}
restart() { stop; start; }
server_pid() {
    case "$SERVER" in
        corvid) corvid_pid ;;
        *) "$ANCHORS" pid "$SERVER" ;;
    esac
}
users() {
    case "$SERVER" in
        corvid) corvid_users "$1" ;; # before start: the CLI writes the database directly
        *) "$ANCHORS" users "$SERVER" "$1" >&2 ;;
    esac
}

# QUIET_WAIT=S: before each measurement, wait up to S seconds while a compiler (rustc,
# clippy-driver, cc1, cc1plus, ld) runs or the machine is more than QUIET_BUSY % busy (shared
# 2-core boxes: someone else's tests); the load average is logged either way.
QUIET_WAIT="${QUIET_WAIT:-0}"
QUIET_BUSY="${QUIET_BUSY:-20}" # % of the whole machine (both CPUs) that counts as "other load"
compiling() { local p; for p in rustc clippy-driver cc1 cc1plus ld; do pgrep -x "$p" >/dev/null && return 0; done; return 1; }
# Busy % of the whole machine over 2 s (all CPUs, from /proc/stat).
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
    [ "$t" -gt 0 ] && sleep 5 # let their tail (linking, the load average) pass
    return 0
}

load() { # mode args...
    local mode=$1; shift
    wait_quiet
    log "$SERVER $mode $*"
    taskset -c "$TOOL_CPU" "$LOAD" "$mode" --server "127.0.0.1:$PORT" --domain bench.test \
        --label "$SERVER" --out "$OUT" --pid "$(server_pid)" "${SOURCES[@]}" "$@" || echo "run-all.sh: $mode $* failed" >&2
}
skipped() { [[ " $SKIP " == *" $1 "* ]]; }

trap 'release_idle; stop' EXIT
case "$SERVER" in
    corvid) users "$MAX_USERS"; skipped presence || presence_users "$CONTACTS"
            skipped muc || muc_users "$MUC_USERS"
            [ "$BACKGROUND_IDLE" -gt 0 ] && idle_users "$BACKGROUND_IDLE"
            start ;;
    *) [ -f "${LAB:-${TMPDIR:-/tmp}/lab-load}/prosody/prosody.cfg.lua" ] || "$ANCHORS" setup >&2
       start; users "$MAX_USERS"; skipped presence || presence_users "$CONTACTS"
       skipped muc || muc_users "$MUC_USERS"
       [ "$BACKGROUND_IDLE" -gt 0 ] && idle_users "$BACKGROUND_IDLE" ;;
esac
[ "$BACKGROUND_IDLE" -gt 0 ] && hold_idle
log "server $SERVER pid $(server_pid) on CPU $SERVER_CPU, tool on CPU $TOOL_CPU, results -> $OUT"

for ((rep = 1; rep <= REPEAT; rep++)); do
    if ! skipped idle; then
        for tls in $TLS_MODES; do
            for n in $IDLE_USERS; do
                restart
                load idle --users "$n" --tls "$tls" --concurrency "$CONCURRENCY" --settle 5
            done
        done
        restart
    fi
    if ! skipped login; then
        for tls in $TLS_MODES; do
            load login-rate --users "$LOGINS" --tls "$tls" --concurrency "$CONCURRENCY"
        done
    fi
    if ! skipped throughput; then
        load throughput --tls "$MSG_TLS" --users "$MSG_USERS" --window "$WINDOW" --duration "$DURATION" --warmup 5
        sleep "$SETTLE_AFTER_MAX"
    fi
    if ! skipped latency; then
        load latency --tls "$MSG_TLS" --users "$MSG_USERS" --rate "$RATE" --duration "$DURATION" --warmup 2
    fi
    if ! skipped presence; then
        # The first invocation also makes u0 and c1..cN mutually subscribed (kept in the
        # server's storage; later invocations find them so and skip that).
        load presence-login --users "$CONTACTS" --runs "$PRESENCE_RUNS" --concurrency "$CONCURRENCY"
    fi
    if ! skipped muc; then
        # New rooms each invocation (room names carry the time); every occupant leaves at the end.
        for shape in $MUC_SHAPES; do
            [ "$MUC_RESTART" = 1 ] && restart
            load muc-fanout --tls "$MSG_TLS" --user-prefix m --rooms "${shape%x*}" --occupants "${shape#*x}" \
                --senders "$MUC_SENDERS" --window "$MUC_WINDOW" --duration "$MUC_DURATION" --warmup 5 \
                --concurrency "$CONCURRENCY"
            [ "$MUC_RESTART" = 1 ] && restart
            load muc-fanout --tls "$MSG_TLS" --user-prefix m --rooms "${shape%x*}" --occupants "${shape#*x}" \
                --senders "$MUC_SENDERS" --rate "$MUC_RATE" --duration "$MUC_DURATION" --warmup 2 \
                --concurrency "$CONCURRENCY"
        done
    fi
done
log "done: $OUT"
