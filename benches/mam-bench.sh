#!/usr/bin/env bash
# XEP-0313 archive benchmark on corvid: `corvid-load mam` against a fresh corvid on SQLite or
# PostgreSQL (see benches/README.md, "Message archive").
#
#   benches/mam-bench.sh sqlite|postgres [RESULTS_FILE] [extra corvid-load mam args...]
#   benches/mam-bench.sh throughput [RESULTS_FILE]    # 1:1 max msgs/s, archive on (see below)
#
# corvid runs on CPU $SERVER_CPU (0), the tool on $TOOL_CPU (1), c2s on 127.0.0.1:$PORT (7322,
# away from run-all.sh's 7222). RUNS (1) runs against the same server and database. PostgreSQL: database $PGDB (mambench) on
# postgres://postgres@127.0.0.1:5432, created fresh and dropped afterwards.
set -euo pipefail

# ---- `throughput`: 1:1 max msgs/s with the archive on (benches/README.md, "The archive on"),
# back to back: ejabberd with mod_mam (the anchors' MAM=1 variant), corvid archiving on SQLite,
# on PostgreSQL, and with [mam] enabled = false. Each corvid run starts on a fresh database.
# Knobs: SERVERS (the list below), USERS 1000, WINDOW 10, DURATION 20, WARMUP 5, PGDB mamthr,
# PG_PIN 1 (PostgreSQL's backends serving corvid are pinned to $SERVER_CPU with corvid, so the
# pair gets one core like the others; 0: unpinned), LAB (/tmp/lab-mam: ejabberd's data, kept
# apart from other anchor runs), QUIET_WAIT (seconds to wait for compilers before each run),
# PG_ASYNC_COMMIT 0 (1: `synchronous_commit = off` on the bench database, a deployment setting:
# what PostgreSQL's commit flush costs), PERF (a directory: `perf record -g` on corvid for 15 s
# of each corvid run's measured part, the report saved there as <label>.txt).
if [ "${1:-}" = throughput ]; then
    ROOT="$(cd "$(dirname "$0")/.." && pwd)"
    OUT="${2:-$ROOT/benches/results/mam-on-$(date -u +%Y-%m-%d)-$(date -u +%H%M).jsonl}"
    TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
    CORVID="${CORVID:-$TARGET/release/corvid}"
    LOAD="${LOAD:-$TARGET/release/corvid-load}"
    SERVER_CPU="${SERVER_CPU:-0}" TOOL_CPU="${TOOL_CPU:-1}" PORT="${PORT:-7322}"
    SERVERS="${SERVERS:-ejabberd-mam corvid-sqlite corvid-postgres corvid-off}"
    USERS="${USERS:-1000}" WINDOW="${WINDOW:-10}" DURATION="${DURATION:-20}" WARMUP="${WARMUP:-5}"
    PGDB="${PGDB:-mamthr}" PG_PIN="${PG_PIN:-1}" QUIET_WAIT="${QUIET_WAIT:-0}"
    PG_ASYNC_COMMIT="${PG_ASYNC_COMMIT:-0}" PERF="${PERF:-}"
    export LAB="${LAB:-/tmp/lab-mam}"
    ANCHORS="${ANCHORS:-$ROOT/../shared/anchors/anchors.sh}"
    [ -x "$ANCHORS" ] || ANCHORS=/work/shared/anchors/anchors.sh
    PG="postgres://postgres@127.0.0.1:5432"
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    log() { echo "== $(date -u +%H:%M:%S) $* (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }
    compiling() { local p; for p in rustc clippy-driver cc1 ld; do pgrep -x "$p" >/dev/null && return 0; done; return 1; }
    wait_quiet() {
        local t=0
        while [ "$t" -lt "$QUIET_WAIT" ] && compiling; do sleep 5; t=$((t + 5)); done
    }
    # PostgreSQL's backends connected to $PGDB, and their utime+stime in clock ticks.
    pg_backends() { psql -qtA -h 127.0.0.1 -U postgres -d postgres -c \
        "select pid from pg_stat_activity where datname = '$PGDB' and pid <> pg_backend_pid()"; }
    pg_ticks() {
        local t=0 p
        for p in $(pg_backends); do
            [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
        done
        echo "$t"
    }
    throughput() { # label pid port
        wait_quiet
        log "$1 throughput --users $USERS --window $WINDOW --duration $DURATION"
        taskset -c "$TOOL_CPU" "$LOAD" throughput --server "127.0.0.1:$3" --domain bench.test \
            --label "$1" --out "$OUT" --pid "$2" --users "$USERS" --window "$WINDOW" \
            --duration "$DURATION" --warmup "$WARMUP"
    }
    # What a MAM query for u1 returns: the archive really was written.
    mam_count() { # port
        python3 - "$1" <<'EOF'
import base64, re, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60); buf = b""
def until(pat):
    global buf
    while not re.search(pat, buf, re.S):
        c = s.recv(65536)
        if not c: sys.exit("closed")
        buf += c
    m = re.search(pat, buf, re.S); out = buf[:m.end()]; buf = buf[m.end():]; return out
op = ("<stream:stream to='bench.test' xmlns='jabber:client' "
      "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").encode()
s.sendall(op); until(rb"</stream:features>")
s.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
          + base64.b64encode(b"\0u1\0pw") + b"</auth>"); until(rb"<success")
s.sendall(op); until(rb"</stream:features>")
s.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"); until(rb"</iq>")
s.sendall(b"<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/"
          b"protocol/rsm'><max>5</max></set></query></iq>")
fin = until(rb"<fin.*?</fin>|type=.error.*?</iq>")
n = re.search(rb"<count>(\d+)</count>", fin)
print("u1's archive: %s messages (MAM query, first page %d)" % (
    n.group(1).decode() if n else "?", len(re.findall(rb"<result ", fin))))
EOF
    }
    pg_cpu_line() { # label ticks0 ticks1 t0 t1
        python3 - "$OUT" "$@" "$PG_PIN" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
out, label, a, b, t0, t1, pin, hz = sys.argv[1:]
wall = float(t1) - float(t0); cpu = (int(b) - int(a)) / int(hz)
line = {"mode": "pg-backend-cpu", "label": label, "pinned_to_server_cpu": pin == "1",
        "cpu_s": cpu, "wall_s": round(wall, 1), "cpu_share": round(cpu / wall, 3),
        "note": "utime+stime of the PostgreSQL backends connected to corvid's database over "
                "the whole throughput invocation (logins, warm-up, measured part, drain)"}
open(out, "a").write(json.dumps(line) + "\n"); print(json.dumps(line))
EOF
    }
    corvid_run() { # label storage-url on|off
        local dir pid pinner="" pg0=0 t0=0
        dir=$(mktemp -d /tmp/corvid-mamthr.XXXXXX)
        sed -e "s|^url = .*|url = \"$2\"|" -e "s|^port = 7222|port = $PORT|" \
            -e "s|/tmp/corvid-bench/|$dir/|" "$ROOT/benches/corvid-bench.toml" > "$dir/corvid.toml"
        [ "$3" = off ] && printf '\n[mam]\nenabled = false\n' >> "$dir/corvid.toml"
        for ((i = 1; i <= USERS; i++)); do echo "u$i pw"; done |
            "$CORVID" user import -c "$dir/corvid.toml" >/dev/null
        taskset -c "$SERVER_CPU" "$CORVID" serve -c "$dir/corvid.toml" >"$dir/stdout.log" 2>&1 &
        pid=$!
        for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
        if [[ "$2" == postgres* ]]; then
            if [ "$PG_PIN" = 1 ]; then # the pool opens backends as it grows: pin each as it appears
                ( while kill -0 "$pid" 2>/dev/null; do
                      for p in $(pg_backends); do taskset -p -c "$SERVER_CPU" "$p" >/dev/null 2>&1; done
                      sleep 0.5
                  done ) & pinner=$!
            fi
            pg0=$(pg_ticks); t0=$(date +%s.%N)
        fi
        local perf=""
        if [ -n "$PERF" ]; then # logins take a few seconds, then 5 s of warm-up: start after both
            mkdir -p "$PERF"
            ( sleep $((WARMUP + 8)); perf record -g -p "$pid" -o "$dir/perf.data" -- sleep 15 \
                  >/dev/null 2>&1 ) & perf=$!
        fi
        throughput "$1" "$pid" "$PORT" || echo "mam-bench.sh: $1 failed" >&2
        if [ -n "$perf" ]; then
            wait "$perf" || true
            { perf report -i "$dir/perf.data" --no-children --stdio -g none --sort comm
              perf report -i "$dir/perf.data" --no-children --stdio -g none --sort comm,dso,sym \
                  --percent-limit 0.4; } >"$PERF/$1.txt" 2>/dev/null || true
        fi
        [[ "$2" == postgres* ]] && pg_cpu_line "$1" "$pg0" "$(pg_ticks)" "$t0" "$(date +%s.%N)"
        [ "$3" = on ] && { mam_count "$PORT" || true; }
        kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
        [ -n "$pinner" ] && { kill "$pinner" 2>/dev/null; wait "$pinner" 2>/dev/null || true; }
        rm -rf "$dir"
    }
    log "results -> $OUT"
    for server in $SERVERS; do
        case "$server" in
            ejabberd-mam)
                [ -f "$LAB/ejabberd/ejabberdctl.cfg" ] || "$ANCHORS" setup >&2
                MAM=1 "$ANCHORS" start ejabberd >&2
                "$ANCHORS" users ejabberd "$USERS" >&2
                sleep 2
                throughput ejabberd-mam "$("$ANCHORS" pid ejabberd)" 6222 || echo "mam-bench.sh: ejabberd failed" >&2
                mam_count 6222 || true
                "$ANCHORS" stop ejabberd >&2 ;;
            corvid-sqlite|corvid-off)
                db=$(mktemp -d /tmp/corvid-mamdb.XXXXXX)
                corvid_run "$server" "sqlite://$db/corvid.db" "$([ "$server" = corvid-off ] && echo off || echo on)"
                rm -rf "$db" ;;
            corvid-postgres)
                psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $PGDB" -c "create database $PGDB"
                label=corvid-postgres
                if [ "$PG_ASYNC_COMMIT" = 1 ]; then
                    psql -q -h 127.0.0.1 -U postgres -c "alter database $PGDB set synchronous_commit = off"
                    label=corvid-postgres-async-commit
                fi
                corvid_run "$label" "$PG/$PGDB" on
                psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $PGDB" ;;
            *) echo "unknown server $server" >&2; exit 2 ;;
        esac
    done
    log "done: $OUT"
    exit 0
fi
BACKEND="${1:?usage: mam-bench.sh sqlite|postgres [RESULTS_FILE] [args...]}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${2:-$ROOT/benches/results/mam-corvid.jsonl}"
shift $(( $# >= 2 ? 2 : 1 ))
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
CORVID="${CORVID:-$TARGET/release/corvid}"
LOAD="${LOAD:-$TARGET/release/corvid-load}"
SERVER_CPU="${SERVER_CPU:-0}" TOOL_CPU="${TOOL_CPU:-1}" PORT="${PORT:-7322}" PGDB="${PGDB:-mambench}"
SENDERS="${SENDERS:-10}"
DIR=$(mktemp -d /tmp/corvid-mambench.XXXXXX)
PG="postgres://postgres@127.0.0.1:5432"
case "$BACKEND" in
    sqlite) URL="sqlite://$DIR/corvid.db" ;;
    postgres)
        psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $PGDB" -c "create database $PGDB"
        URL="$PG/$PGDB" ;;
    *) echo "unknown backend $BACKEND" >&2; exit 2 ;;
esac
sed -e "s|^url = .*|url = \"$URL\"|" -e "s|^port = 7222|port = $PORT|" \
    -e "s|/tmp/corvid-bench/|$DIR/|" "$ROOT/benches/corvid-bench.toml" > "$DIR/corvid.toml"
# Retention off: reruns keep adding to the same archive.
printf '\n[mam]\nmax_messages_per_user = 0\n' >> "$DIR/corvid.toml"
for ((i = 1; i <= SENDERS + 1; i++)); do echo "u$i pw"; done |
    "$CORVID" user import -c "$DIR/corvid.toml" >/dev/null
taskset -c "$SERVER_CPU" "$CORVID" serve -c "$DIR/corvid.toml" >"$DIR/stdout.log" 2>&1 &
PID=$!
cleanup() {
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    [ "$BACKEND" = postgres ] && psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $PGDB" || true
    rm -rf "$DIR"
}
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
# RUNS > 1: later runs find the earlier runs' messages in the archive, so their catch-up
# starts from after-id = the newest id before the run.
for ((run = 1; run <= ${RUNS:-1}; run++)); do
    taskset -c "$TOOL_CPU" "$LOAD" mam --server "127.0.0.1:$PORT" --domain bench.test \
        --senders "$SENDERS" --pid "$PID" --label "corvid-$BACKEND" --out "$OUT" "$@"
done
