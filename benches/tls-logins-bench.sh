#!/usr/bin/env bash
# STARTTLS + PLAIN logins with the same RSA-2048 certificate (the anchors'): corvid cold, corvid
# with TLS resumption (returning clients), Prosody, each started afresh per run, in turn.
#
#   benches/tls-logins-bench.sh [RESULTS_FILE]
#
# Server on CPU 0, corvid-load on CPU 1. Needs `../shared/anchors/anchors.sh setup` (the
# certificate lives in $LAB/certs) and a release build of corvid and corvid-load. corvid runs
# from a copy of benches/corvid-bench.toml on port 7422 with its own database in $DIR.
# Knobs: REPS=2, CONCURRENCY_LIST="50 100", USERS=2000, LAB=/tmp/lab-load, CORVID, LOAD,
# RESUMED=1 (also the resumed runs), PROSODY=1, and CORVIDS="label=binary ..." to compare builds
# in turn (default: "corvid=$CORVID").
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/benches/results/tls-logins-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
LOAD="${LOAD:-$TARGET/release/corvid-load}"
CORVID="${CORVID:-$TARGET/release/corvid}"
LAB="${LAB:-/tmp/lab-load}"
ANCHORS="${ANCHORS:-$ROOT/../shared/anchors/anchors.sh}"
REPS="${REPS:-2}"
RESUMED="${RESUMED:-1}"
PROSODY="${PROSODY:-1}"
CORVIDS="${CORVIDS:-corvid=$CORVID}"
CONCURRENCY_LIST="${CONCURRENCY_LIST:-50 100}"
USERS="${USERS:-2000}"
DIR=/tmp/corvid-rsa
CFG=$DIR/corvid.toml
ulimit -n "$(ulimit -Hn)"
[ -f "$LAB/certs/bench.crt" ] || { echo "run $ANCHORS setup first" >&2; exit 1; }

wait_port() { local i; for i in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

mkdir -p "$DIR"
sed -e "s#/tmp/corvid-bench/corvid.db#$DIR/corvid.db#" \
    -e "s#/tmp/corvid-bench/bench.crt#$LAB/certs/bench.crt#" \
    -e "s#/tmp/corvid-bench/bench.key#$LAB/certs/bench.key#" \
    -e 's/^generate_self_signed = true/generate_self_signed = false/' \
    -e 's/^port = 7222/port = 7422/' "$ROOT/benches/corvid-bench.toml" > "$CFG"
if [ ! -s "$DIR/users.done" ]; then
    rm -f "$DIR"/corvid.db*
    for i in $(seq "$USERS"); do echo "u$i pw"; done | "$CORVID" user import -c "$CFG" >/dev/null
    echo "$USERS" > "$DIR/users.done"
fi

corvid_run() { # label binary in-flight [--tls-resume]
    local label=$1 binary=$2 conc=$3; shift 3
    taskset -c 0 "$binary" serve -c "$CFG" > "$DIR/stdout.log" 2>&1 &
    local pid=$!
    wait_port 7422; sleep 2
    taskset -c 1 "$LOAD" login-rate --server 127.0.0.1:7422 --domain bench.test --users "$USERS" \
        --concurrency "$conc" --tls starttls "$@" --pid "$pid" --label "$label" --out "$OUT" 2>&1 | tail -1
    kill -TERM "$pid"; wait "$pid" 2>/dev/null
}
prosody_run() { # in-flight
    local conc=$1
    LAB=$LAB "$ANCHORS" start prosody >/dev/null 2>&1; wait_port 5222; sleep 2
    [ -s "$LAB/prosody.users$USERS" ] || { LAB=$LAB "$ANCHORS" users prosody "$USERS" >/dev/null 2>&1; echo 1 > "$LAB/prosody.users$USERS"; }
    taskset -c 1 "$LOAD" login-rate --server 127.0.0.1:5222 --domain bench.test --users "$USERS" \
        --concurrency "$conc" --tls starttls --pid "$(LAB=$LAB "$ANCHORS" pid prosody)" \
        --label prosody --out "$OUT" 2>&1 | tail -1
    LAB=$LAB "$ANCHORS" stop prosody >/dev/null 2>&1
}
for ((rep = 1; rep <= REPS; rep++)); do
    for conc in $CONCURRENCY_LIST; do
        echo "== $(date -u +%T) rep $rep, $conc in flight (load: $(cut -d' ' -f1-3 /proc/loadavg))"
        for build in $CORVIDS; do
            corvid_run "${build%%=*}" "${build#*=}" "$conc"
            [ "$RESUMED" = 1 ] && corvid_run "${build%%=*}" "${build#*=}" "$conc" --tls-resume
        done
        [ "$PROSODY" = 1 ] && prosody_run "$conc"
    done
done
echo "== done: $OUT"
