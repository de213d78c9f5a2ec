#!/usr/bin/env bash
# XEP-0313 archive benchmark on corvid: `corvid-load mam` against a fresh corvid on SQLite or
# PostgreSQL (see benches/README.md, "Message archive").
#
#   benches/mam-bench.sh sqlite|postgres [RESULTS_FILE] [extra corvid-load mam args...]
#
# corvid runs on CPU $SERVER_CPU (0), the tool on $TOOL_CPU (1), c2s on 127.0.0.1:$PORT (7322,
# away from run-all.sh's 7222). RUNS (1) runs against the same server and database. PostgreSQL: database $PGDB (mambench) on
# postgres://postgres@127.0.0.1:5432, created fresh and dropped afterwards.
set -euo pipefail
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
