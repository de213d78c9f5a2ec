#!/usr/bin/env bash
# Invites and registration with real clients against a freshly started corvid:
#  1. registration = "invite": an inviter account and an invite with roster pre-approval made
#     with `corvid invite create --for romeo --roster`; headless Chromium (playwright-core on
#     Debian's chromium) follows the printed link, fills in the form, checks the success page
#     (and that the used link then answers 410); slixmpp logs in as the new account and finds
#     the inviter on its roster with subscription both (see page.mjs, roster.py).
#  2. registration = "open": slixmpp's XEP-0077 plugin registers an account in-band, logs in
#     with it, and a second registration of the name gets <conflict/> (see ibr.py).
# Installs chromium (apt) and playwright-core (npm, into this folder) when missing. Exits
# non-zero on any failure.
#
#   interop/invites/run.sh            # builds corvid (debug) if needed
#   CORVID_BIN=target/release/corvid interop/invites/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../.." && pwd)"
bin="${CORVID_BIN:-${CARGO_TARGET_DIR:-$top/target}/debug/corvid}"
venv="${SLIXMPP_VENV:-${TMPDIR:-/tmp}/corvid-interop-venv}"
chromium="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$chromium" ]; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
    (cd "$here" && npm install --silent --no-audit --no-fund)
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import slixmpp' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'slixmpp==1.17.0'
fi
[ -x "$bin" ] || (cd "$top" && cargo build --quiet --bin corvid)

work="$(mktemp -d)"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
c2s_port="$(free_port)"
http_port="$(free_port)"

# $1: the registration mode.
write_config() {
    cat > "$work/corvid.toml" <<TOML
domain = "localhost"
registration = "$1"
registration_limits = { per_address_per_hour = 0, per_address_per_day = 0, min_interval_secs = 0 }
[storage]
url = "sqlite://$work/corvid.db"
[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"
[c2s]
bind = "127.0.0.1"
port = $c2s_port
direct_tls = false
[http]
bind = "127.0.0.1"
port = $http_port
tls_enabled = false
public_url = "http://127.0.0.1:$http_port"
[s2s]
enabled = false
TOML
}

start_server() {
    RUST_LOG=warn "$bin" serve -c "$work/corvid.toml" 2>>"$work/server.log" &
    server_pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$c2s_port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "invites interop: corvid did not start" >&2
    return 1
}

status=0
run() {
    "$@" || status=$?
}

# 1. An invite followed in the browser.
write_config invite
"$bin" check-config -c "$work/corvid.toml"
printf 'pw-romeo\n' | "$bin" user add romeo --password-stdin -c "$work/corvid.toml"
created="$("$bin" invite create --for romeo --roster -c "$work/corvid.toml")"
link="$(printf '%s\n' "$created" | head -n 1)"
echo "invite: $link"
start_server
jid=""
if jid="$(node "$here/page.mjs" "$link" juliet pw-juliet)"; then
    echo "registered in the browser: $jid"
    run "$venv/bin/python" "$here/roster.py" --port "$c2s_port" --cert "$work/cert.pem" \
        --jid "$jid" --password pw-juliet --inviter romeo@localhost
else
    status=1
fi
stop_server

# 2. In-band registration in open mode.
if [ "$status" -eq 0 ]; then
    write_config open
    start_server
    run "$venv/bin/python" "$here/ibr.py" --port "$c2s_port" --cert "$work/cert.pem"
    stop_server
fi

if [ "$status" -ne 0 ]; then
    echo "invites interop: FAILED; server log:" >&2
    cat "$work/server.log" >&2
    exit "$status"
fi
echo "invites interop: ok"
