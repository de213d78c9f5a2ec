#!/usr/bin/env bash
# Cluster interop: three corvid nodes (processes) on 127.0.0.21-23 share a fresh PostgreSQL
# database and a Redis key prefix; slixmpp clients logged in to different nodes subscribe,
# chat, get carbons and meet in one room (see cluster.py). Needs PostgreSQL on 127.0.0.1:5432
# (trust auth, user postgres) and Redis on 127.0.0.1:6379. Exits non-zero on any failure.
#
#   interop/cluster/run.sh            # builds corvid (debug) if needed
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../.." && pwd)"
bin="${CORVID_BIN:-${CARGO_TARGET_DIR:-$top/target}/debug/corvid}"
venv="${SLIXMPP_VENV:-${TMPDIR:-/tmp}/corvid-interop-venv}"
pg="${CORVID_INTEROP_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
redis="${CORVID_INTEROP_REDIS:-redis://127.0.0.1:6379/}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import slixmpp' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'slixmpp==1.17.0' aiohttp
fi
[ -x "$bin" ] || (cd "$top" && cargo build --quiet --bin corvid)

work="$(mktemp -d)"
suffix="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
database="corvid_interop_$suffix"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
psql "$pg/postgres" -qc "CREATE DATABASE $database" >/dev/null

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for n in 1 2 3; do
    cat > "$work/node$n.toml" <<TOML
domain = "localhost"
[storage]
url = "$pg/$database"
[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"
[c2s]
bind = "127.0.0.2$n"
port = $port
direct_tls = false
[http]
enabled = false
[s2s]
enabled = false
[metrics]
enabled = false
[control]
socket = "$work/node$n.sock"
[cluster]
node = "node$n"
redis = "$redis"
key_prefix = "interop-$suffix"
heartbeat_secs = 1
node_timeout_secs = 5
TOML
done

"$bin" check-config -c "$work/node1.toml"
for user in alice bob; do
    printf 'pw-%s\n' "$user" | "$bin" user add "$user" --password-stdin -c "$work/node1.toml"
done
for n in 1 2 3; do
    # The first node writes the certificate the others then load.
    RUST_LOG=warn "$bin" serve -c "$work/node$n.toml" 2>"$work/node$n.log" &
    pids+=($!)
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.2$n/$port") 2>/dev/null && break
        sleep 0.1
    done
done

status=0
# Each node listens on its own address with the same port; the script connects by address.
"$venv/bin/python" "$here/cluster.py" --port "$port" --cert "$work/cert.pem" \
    --hosts 127.0.0.21 127.0.0.22 127.0.0.23 || status=$?
if [ "$status" -ne 0 ]; then
    for n in 1 2 3; do
        echo "cluster interop: FAILED; node$n log:" >&2
        cat "$work/node$n.log" >&2
    done
    exit "$status"
fi
echo "cluster interop: ok"
