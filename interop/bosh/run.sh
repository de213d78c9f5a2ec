#!/usr/bin/env bash
# BOSH (XEP-0124/0206) with a real browser client against a freshly started corvid: Converse.js
# (the headless build of npm's @converse/headless) in headless Chromium (playwright-core on
# Debian's chromium) logs in over BOSH at /http-bind from a page on another origin (CORS),
# sends a message to a slixmpp user logged in over STARTTLS, who answers; the answer must
# reach the page. Then the page shares a file as Converse does (XEP-0363 slot from
# upload.localhost, a cross-origin PUT), and the slixmpp user downloads it from the URL in the
# message and confirms the bytes (see index.html, page.mjs, peer.py). Exits non-zero on any failure, with the
# server log.
# Installs chromium (apt), playwright-core (npm, into this folder) and the Converse.js bundle
# (npm pack, into node_modules/@converse/headless: its dependency list names packages the
# bundle already contains) when missing.
#
#   interop/bosh/run.sh            # builds corvid (debug) if needed
#   CORVID_BIN=target/release/corvid interop/bosh/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../.." && pwd)"
bin="${CORVID_BIN:-${CARGO_TARGET_DIR:-$top/target}/debug/corvid}"
venv="${SLIXMPP_VENV:-${TMPDIR:-/tmp}/corvid-interop-venv}"
chromium="${CHROMIUM:-/usr/bin/chromium}"
converse_version="14.0.0"

if [ ! -x "$chromium" ]; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
    (cd "$here" && npm install --silent --no-audit --no-fund)
fi
converse_dir="$here/node_modules/@converse/headless"
if [ ! -f "$converse_dir/dist/converse-headless.min.js" ]; then
    pack="$(mktemp -d)"
    (cd "$pack" && npm pack --silent "@converse/headless@$converse_version" >/dev/null)
    mkdir -p "$converse_dir"
    tar -xzf "$pack"/converse-headless-*.tgz -C "$converse_dir" --strip-components=1
    rm -rf "$pack"
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import slixmpp' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'slixmpp==1.17.0'
fi
[ -x "$bin" ] || (cd "$top" && cargo build --quiet --bin corvid)

work="$(mktemp -d)"
server_pid=""
peer_pid=""
cleanup() {
    [ -n "$peer_pid" ] && kill "$peer_pid" 2>/dev/null && wait "$peer_pid" 2>/dev/null
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
c2s_port="$(free_port)"
http_port="$(free_port)"
cat > "$work/corvid.toml" <<TOML
domain = "localhost"
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
# Upload URLs name the address the browser and the peer reach.
public_url = "http://127.0.0.1:$http_port"
[upload]
directory = "$work/uploads"
[s2s]
enabled = false
[metrics]
enabled = false
TOML
"$bin" check-config -c "$work/corvid.toml"
printf 'pw-alice\n' | "$bin" user add alice --password-stdin -c "$work/corvid.toml"
printf 'pw-bob\n' | "$bin" user add bob --password-stdin -c "$work/corvid.toml"

RUST_LOG=info "$bin" serve -c "$work/corvid.toml" 2>>"$work/server.log" &
server_pid=$!
started=""
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$http_port") 2>/dev/null; then started=1; break; fi
    sleep 0.1
done
status=0
shared="shared by Converse over BOSH at $(date +%s)"
if [ -z "$started" ]; then
    echo "bosh interop: corvid did not start" >&2
    status=1
else
    "$venv/bin/python" "$here/peer.py" --port "$c2s_port" --cert "$work/cert.pem" \
        --jid bob@localhost --password pw-bob --expect-from alice@localhost \
        --content "$shared" &
    peer_pid=$!
    node "$here/page.mjs" "http://127.0.0.1:$http_port/http-bind" alice@localhost pw-alice \
        bob@localhost "$shared" || status=1
    if ! wait "$peer_pid"; then status=1; fi
    peer_pid=""
fi

if [ "$status" -ne 0 ]; then
    echo "bosh interop: FAILED; server log:" >&2
    cat "$work/server.log" >&2
    exit "$status"
fi
echo "bosh interop: ok"
