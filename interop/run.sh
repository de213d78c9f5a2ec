#!/usr/bin/env bash
# Interop: an independent client implementation (slixmpp) against a freshly started corvid.
# Two accounts log in over STARTTLS (verifying corvid's self-signed certificate), subscribe to
# each other and approve, watch each other's presence come and go, exchange messages both ways,
# a second resource with carbons (XEP-0280) sees sent and received copies, Bob pages through his
# MAM archive (XEP-0313 with XEP-0059) forwards and backwards one message a page, one publishes
# a XEP-0084 avatar over PEP that the other is notified of, they create a MUC room through its configuration form, chat in it and read its
# history, and Bob's connection is cut and resumed with stream management (XEP-0198) without
# losing the message sent meanwhile (see chat.py). Then users of two hosted domains (localhost
# and b.example), each verifying its own domain's certificate, chat and meet in a room of the
# second domain's MUC service (see virtual_hosts.py). An admin runs XEP-0133 commands through
# slixmpp's XEP-0050 plugin: adds a user, lists who is online, and announces to everyone (see
# adhoc.py). A slixmpp external component (XEP-0114) connects with its secret and echoes a
# user's messages (see component.py). Alice uploads a file with slixmpp's XEP-0363 plugin (HTTP
# File Upload) and Bob downloads it with urllib (see upload.py). A XEP-0402 bookmark published
# over PEP is read back as XEP-0048 bookmarks through XEP-0049 Private XML Storage, and rooms
# added or removed there show in the XEP-0402 node (see bookmarks.py). Exits non-zero on any
# failure.
#
#   interop/run.sh            # builds corvid (debug) if needed
#   CORVID_BIN=target/release/corvid interop/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/.." && pwd)"
bin="${CORVID_BIN:-${CARGO_TARGET_DIR:-$top/target}/debug/corvid}"
venv="${SLIXMPP_VENV:-${TMPDIR:-/tmp}/corvid-interop-venv}"

# aiohttp: what slixmpp's XEP-0363 plugin uploads with (an optional dependency of slixmpp).
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import slixmpp, aiohttp' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'slixmpp==1.17.0' aiohttp
fi
[ -x "$bin" ] || (cd "$top" && cargo build --quiet --bin corvid)

work="$(mktemp -d)"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port="$(free_port)"
http_port="$(free_port)"
component_port="$(free_port)"
component_secret="interop-component-secret"
cat > "$work/corvid.toml" <<TOML
domain = "localhost"
admins = ["admin@localhost"]
[hosts."b.example"]
cert = "$work/b.example.crt"
key = "$work/b.example.key"
[storage]
url = "sqlite://$work/corvid.db"
[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"
[c2s]
bind = "127.0.0.1"
port = $port
direct_tls = false
[http]
bind = "127.0.0.1"
port = $http_port
tls_enabled = false
# Upload URLs name the address the scripts reach (localhost may resolve to ::1 first).
public_url = "http://127.0.0.1:$http_port"
[upload]
directory = "$work/uploads"
max_file_size = 1048576
[s2s]
enabled = false
[metrics]
enabled = false
[components]
port = $component_port
[components.services."echo.localhost"]
secret = "$component_secret"
TOML

"$bin" check-config -c "$work/corvid.toml"
for user in alice bob admin; do
    printf 'pw-%s\n' "$user" | "$bin" user add "$user" --password-stdin -c "$work/corvid.toml"
done
printf 'pw-bob\n' | "$bin" user add bob@b.example --password-stdin -c "$work/corvid.toml"

RUST_LOG=warn "$bin" serve -c "$work/corvid.toml" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

status=0
"$venv/bin/python" "$here/chat.py" --port "$port" --cert "$work/cert.pem" || status=$?
if [ "$status" -eq 0 ]; then
    # The main domain's certificate under the name the second script looks for.
    cp "$work/cert.pem" "$work/localhost.crt"
    "$venv/bin/python" "$here/virtual_hosts.py" --port "$port" --certs "$work" || status=$?
fi
if [ "$status" -eq 0 ]; then
    "$venv/bin/python" "$here/adhoc.py" --port "$port" --cert "$work/cert.pem" || status=$?
fi
if [ "$status" -eq 0 ]; then
    "$venv/bin/python" "$here/component.py" --port "$port" --component-port "$component_port" \
        --secret "$component_secret" --cert "$work/cert.pem" || status=$?
fi
if [ "$status" -eq 0 ]; then
    "$venv/bin/python" "$here/upload.py" --port "$port" --cert "$work/cert.pem" || status=$?
fi
if [ "$status" -eq 0 ]; then
    "$venv/bin/python" "$here/bookmarks.py" --port "$port" --cert "$work/cert.pem" || status=$?
fi
if [ "$status" -ne 0 ]; then
    echo "interop: FAILED; server log:" >&2
    cat "$work/server.log" >&2
    exit "$status"
fi
echo "interop: 6 passed, 0 failed"
