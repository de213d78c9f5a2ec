#!/usr/bin/env bash
# Federation interop: corvid, Prosody and ejabberd (Debian packages) federate over loopback,
# and slixmpp clients check messages, subscriptions, MUC across servers and PEP (see
# scenarios.py) for each pair, in two modes:
#   certs     a test CA signs every server's certificate and each server trusts it; s2s is
#             authenticated with certificates (SASL EXTERNAL), dialback is not loaded
#   dialback  each server has a self-signed certificate the others cannot verify; TLS is still
#             required, authentication is server dialback (XEP-0220)
#
#   interop/federation/run.sh                       # corvid-prosody corvid-ejabberd, both modes
#   interop/federation/run.sh prosody-ejabberd      # the harness's self-check, without corvid
#   interop/federation/run.sh corvid-prosody dialback
#   KEEP=1 interop/federation/run.sh ...            # keep the work folder (configs, logs)
#
# Needs root (apt-get, /etc/hosts, private server instances run as the packages' users).
# Addresses: corvid 127.0.0.2, Prosody 127.0.0.3, ejabberd 127.0.0.4 (c2s 5222, s2s 5269 on
# each), dnsmasq 127.0.0.10:53 (A and SRV records of the test domains), ejabberd's Erlang
# distribution on 127.0.0.1:$EJABBERD_DIST_PORT. See README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../.." && pwd)"
bin="${CORVID_BIN:-${CARGO_TARGET_DIR:-$top/target}/debug/corvid}"
venv="${SLIXMPP_VENV:-${TMPDIR:-/tmp}/corvid-interop-venv}"
EJABBERD_DIST_PORT="${EJABBERD_DIST_PORT:-25269}"

declare -A ADDR=([corvid]=127.0.0.2 [prosody]=127.0.0.3 [ejabberd]=127.0.0.4)
DNS_ADDR=127.0.0.10
C2S_PORT=5222
S2S_PORT=5269
PASSWORD=pw-federation

say() { printf 'federation: %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 2; }

# --- arguments ------------------------------------------------------------------------------
pairs=()
modes=()
for arg in "$@"; do
    case "$arg" in
        certs|dialback) modes+=("$arg") ;;
        corvid-prosody|corvid-ejabberd|prosody-ejabberd) pairs+=("$arg") ;;
        prosody-corvid|ejabberd-corvid|ejabberd-prosody) pairs+=("${arg#*-}-${arg%%-*}") ;;
        -h|--help) sed -n '2,18p' "$0" | cut -c3-; exit 0 ;;
        *) die "unknown argument '$arg' (pairs: corvid-prosody corvid-ejabberd prosody-ejabberd; modes: certs dialback)" ;;
    esac
done
[ ${#pairs[@]} -gt 0 ] || pairs=(corvid-prosody corvid-ejabberd)
[ ${#modes[@]} -gt 0 ] || read -r -a modes <<<"${FEDERATION_MODES:-certs dialback}"
declare -A want=()
for pair in "${pairs[@]}"; do want[${pair%-*}]=1; want[${pair#*-}]=1; done
[ "$(id -u)" -eq 0 ] || die "run as root (installs packages, edits /etc/hosts, runs servers as their users)"

# --- packages (installed when absent; their system services are kept stopped) ----------------
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v setpriv >/dev/null || need+=(util-linux)
command -v ss >/dev/null || need+=(iproute2)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ -n "${want[prosody]:-}" ]; then
    command -v prosody >/dev/null || need+=(prosody)
    # Only a Recommends of prosody: without it Prosody falls back to its legacy resolver, which
    # asks /etc/resolv.conf's nameserver instead of the harness's dnsmasq and finds no test domain.
    dpkg -s lua-unbound >/dev/null 2>&1 || need+=(lua-unbound)
fi
if [ -n "${want[ejabberd]:-}" ]; then command -v ejabberdctl >/dev/null || need+=(ejabberd); fi
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -q >/dev/null
    timeout 600 apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
# The packages may start their system instance, which binds 5222/5269 on every address.
if [ -n "${want[prosody]:-}" ]; then
    timeout 30 service prosody stop >/dev/null 2>&1 || true
    # bookworm's init script matches a process named lua5.2 and so misses Prosody on lua5.4;
    # prosodyctl stops the instance of /etc/prosody through its pidfile.
    if timeout 30 prosodyctl status >/dev/null 2>&1; then timeout 60 prosodyctl stop >/dev/null 2>&1 || true; fi
fi
if [ -n "${want[ejabberd]:-}" ]; then timeout 60 service ejabberd stop >/dev/null 2>&1 || true; fi

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import slixmpp' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'slixmpp==1.17.0'
fi
if [ -n "${want[corvid]:-}" ] && [ ! -x "$bin" ]; then
    (cd "$top" && cargo build --quiet --bin corvid)
fi

# --- name resolution ------------------------------------------------------------------------
# /etc/hosts serves getaddrinfo() (ejabberd's address lookups, corvid's fallback); lines are
# added once and never removed; nothing else in the file is touched.
for server in corvid prosody ejabberd; do
    line="${ADDR[$server]} $server.test conference.$server.test"
    grep -qxF "$line" /etc/hosts || printf '%s\n' "$line" >>/etc/hosts
done

work="$(mktemp -d "${TMPDIR:-/tmp}/corvid-federation.XXXXXX")"
chmod 755 "$work"
pids=()
ejabberd_running="" ejabberd_dir="" prosody_pid="" corvid_pid=""
cleanup() {
    local status=$?
    set +e
    [ -n "$ejabberd_running" ] && stop_ejabberd >/dev/null 2>&1
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ -n "${KEEP:-}" ]; then say "work folder kept: $work"; else rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every listener the servers need must be free (a system instance would hold 0.0.0.0:5222).
port_taken() { ss -Hltn | awk '{print $4}' | grep -qE "^(\*|0\.0\.0\.0|\[::\]|$(sed 's/\./\\./g' <<<"$1")):$2\$"; }
for server in "${!want[@]}"; do
    for port in $C2S_PORT $S2S_PORT; do
        ! port_taken "${ADDR[$server]}" "$port" || die "$server's ${ADDR[$server]}:$port is taken (ss -ltnp shows by whom)"
    done
done
! port_taken "$DNS_ADDR" 53 || die "$DNS_ADDR:53 is taken"

# DNS for the servers: A and SRV (_xmpp-server._tcp) records of the test domains, NXDOMAIN for
# other .test names, nothing forwarded anywhere.
printf 'nameserver %s\noptions timeout:2 attempts:2\n' "$DNS_ADDR" >"$work/resolv.conf"
dns_args=()
for server in corvid prosody ejabberd; do
    for domain in "$server.test" "conference.$server.test"; do
        dns_args+=("--host-record=$domain,${ADDR[$server]}"
                   "--srv-host=_xmpp-server._tcp.$domain,$domain,$S2S_PORT,0,0")
    done
done
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
    --listen-address="$DNS_ADDR" --bind-interfaces --port=53 --user=root --local=/test/ \
    --log-queries --log-facility="$work/dnsmasq.log" --pid-file="$work/dnsmasq.pid" "${dns_args[@]}" &
pids+=($!)

wait_port() { # address port seconds what
    local deadline=$((SECONDS + $3))
    until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { say "$4 did not listen on $1:$2 within $3 s"; return 1; }
        sleep 0.2
    done
}
wait_port "$DNS_ADDR" 53 10 dnsmasq

# --- certificates ---------------------------------------------------------------------------
pki="$work/pki"
mkdir -p "$pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=corvid federation test CA" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
for server in corvid prosody ejabberd; do
    domain="$server.test"
    # certs mode: signed by the test CA, for server and client use (s2s presents it both ways).
    cat >"$pki/$server.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$domain,DNS:conference.$domain
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
    openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$domain" \
        -keyout "$pki/$server-ca.key" -out "$pki/$server.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 2 -extfile "$pki/$server.ext" -out "$pki/$server-ca.crt" 2>/dev/null
    # dialback mode: self-signed, same names; no server trusts it (clients do, below).
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$domain" \
        -keyout "$pki/$server-self.key" -out "$pki/$server-self.crt" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -addext "subjectAltName=DNS:$domain,DNS:conference.$domain" \
        -addext "extendedKeyUsage=serverAuth,clientAuth" 2>/dev/null
done
cat "$pki"/*-self.crt >"$pki/self-signed-bundle.crt"
chmod 644 "$pki"/*

# --- Prosody --------------------------------------------------------------------------------
start_prosody() { # mode
    local mode=$1 dir="$work/$1/prosody" crt key secure dialback=""
    crt="$pki/prosody-ca.crt" key="$pki/prosody-ca.key" secure=true
    if [ "$mode" = dialback ]; then
        crt="$pki/prosody-self.crt" key="$pki/prosody-self.key" secure=false dialback='"dialback";'
    fi
    mkdir -p "$dir/data"
    cat >"$dir/prosody.cfg.lua" <<LUA
-- Written by interop/federation/run.sh ($mode mode).
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { { levels = { min = "${PROSODY_LOG_LEVEL:-debug}" }, to = "file", filename = "$dir/prosody.log" } }
interfaces = { "${ADDR[prosody]}" }
c2s_ports = { $C2S_PORT }
s2s_ports = { $S2S_PORT }
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "pep"; "ping"; $dialback }
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = $secure
-- DNS through lua-unbound, asking only the harness's dnsmasq. libunbound answers NXDOMAIN
-- itself for the special-use "test." zone (RFC 6761) unless told to pass it through.
unbound = {
    resolvconf = "$work/resolv.conf"; hoststxt = false;
    options = { ["local-zone:"] = "test. transparent" };
}
use_ipv6 = false
ssl = { certificate = "$crt"; key = "$key"; cafile = "$pki/ca.crt" }

VirtualHost "prosody.test"

Component "conference.prosody.test" "muc"
LUA
    chown -R prosody:prosody "$dir"
    prosodyctl --config "$dir/prosody.cfg.lua" check config >"$dir/check.log" 2>&1 \
        || { cat "$dir/check.log"; return 1; }
    setpriv --reuid=prosody --regid=prosody --init-groups \
        prosody --config "$dir/prosody.cfg.lua" -F >"$dir/stdout.log" 2>&1 &
    pids+=($!)
    prosody_pid=$!
    wait_port "${ADDR[prosody]}" $S2S_PORT 30 Prosody || { cat "$dir"/*.log; return 1; }
}
add_prosody_user() { # mode user
    timeout 30 prosodyctl --config "$work/$1/prosody/prosody.cfg.lua" register "$2" prosody.test "$PASSWORD" >/dev/null
}
stop_prosody() {
    kill "$prosody_pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do kill -0 "$prosody_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$prosody_pid" 2>/dev/null || true
    wait "$prosody_pid" 2>/dev/null || true
    prosody_pid=""
}

# --- ejabberd -------------------------------------------------------------------------------
ejabberdctl_() { timeout 60 ejabberdctl --config-dir "$ejabberd_dir" --ctl-config "$ejabberd_dir/ejabberdctl.cfg" \
    --config "$ejabberd_dir/ejabberd.yml" --logs "$ejabberd_dir/logs" --spool "$ejabberd_dir/spool" "$@"; }
start_ejabberd() { # mode
    local mode=$1 crt key dialback=""
    ejabberd_dir="$work/$mode/ejabberd"
    crt="$pki/ejabberd-ca.crt" key="$pki/ejabberd-ca.key"
    if [ "$mode" = dialback ]; then
        crt="$pki/ejabberd-self.crt" key="$pki/ejabberd-self.key" dialback="  mod_s2s_dialback: {}"
    fi
    mkdir -p "$ejabberd_dir/logs" "$ejabberd_dir/spool"
    # Erlang's resolver (SRV lookups) asks the harness's dnsmasq; names from a private hosts file.
    cat >"$ejabberd_dir/inetrc" <<ERL
{lookup, [file, dns]}.
{hosts_file, "$work/hosts"}.
{resolv_conf, "$work/resolv.conf"}.
ERL
    cat >"$ejabberd_dir/ejabberdctl.cfg" <<CFG
ERLANG_NODE=corvid-federation@localhost
INET_DIST_INTERFACE=127.0.0.1
ERL_DIST_PORT=$EJABBERD_DIST_PORT
EJABBERD_PID_PATH=$ejabberd_dir/ejabberd.pid
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
CFG
    cat >"$ejabberd_dir/ejabberd.yml" <<YML
# Written by interop/federation/run.sh ($mode mode).
hosts:
  - ejabberd.test
loglevel: ${EJABBERD_LOG_LEVEL:-info}
log_rotate_count: 0
certfiles:
  - $crt
  - $key
ca_file: $pki/ca.crt
listen:
  - port: $C2S_PORT
    ip: "${ADDR[ejabberd]}"
    module: ejabberd_c2s
    starttls_required: true
  - port: $S2S_PORT
    ip: "${ADDR[ejabberd]}"
    module: ejabberd_s2s_in
s2s_use_starttls: required
outgoing_s2s_families: [ipv4]
s2s_dns_timeout: 5
s2s_dns_retries: 1
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
modules:
  mod_roster: {}
  mod_disco: {}
  mod_caps: {}
  mod_ping: {}
  mod_pubsub:
    plugins:
      - flat
      - pep
  mod_muc:
    host: conference.ejabberd.test
$dialback
YML
    chown -R ejabberd:ejabberd "$ejabberd_dir"
    ejabberdctl_ start
    ejabberd_running=1
    local deadline=$((SECONDS + 60))
    until ejabberdctl_ status >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { say "ejabberd did not start within 60 s"; tail -n 40 "$ejabberd_dir/logs/"*.log; return 1; }
        sleep 1
    done
    wait_port "${ADDR[ejabberd]}" $S2S_PORT 30 ejabberd
}
add_ejabberd_user() { # mode user
    ejabberdctl_ register "$2" ejabberd.test "$PASSWORD" >/dev/null
}
stop_ejabberd() {
    [ -n "$ejabberd_running" ] || return 0
    local pid=""
    [ -f "$ejabberd_dir/ejabberd.pid" ] && pid="$(cat "$ejabberd_dir/ejabberd.pid")"
    ejabberdctl_ stop >/dev/null 2>&1 || true
    if [ -n "$pid" ]; then
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    ejabberd_running=""
}

# --- corvid ---------------------------------------------------------------------------------
start_corvid() { # mode
    local mode=$1 dir="$work/$1/corvid" crt key require=true routes="" server
    crt="$pki/corvid-ca.crt" key="$pki/corvid-ca.key"
    if [ "$mode" = dialback ]; then crt="$pki/corvid-self.crt" key="$pki/corvid-self.key" require=false; fi
    for server in prosody ejabberd; do
        routes+="\"$server.test\" = \"${ADDR[$server]}:$S2S_PORT\""$'\n'
        routes+="\"conference.$server.test\" = \"${ADDR[$server]}:$S2S_PORT\""$'\n'
    done
    mkdir -p "$dir"
    cat >"$dir/corvid.toml" <<TOML
# Written by interop/federation/run.sh ($mode mode).
domain = "corvid.test"
[storage]
url = "sqlite://$dir/corvid.db"
[tls]
# Names corvid.test and conference.corvid.test.
cert = "$crt"
key = "$key"
generate_self_signed = false
[c2s]
bind = "${ADDR[corvid]}"
port = $C2S_PORT
direct_tls = false
[http]
enabled = false
tls_enabled = false
[s2s]
enabled = true
bind = "${ADDR[corvid]}"
port = $S2S_PORT
direct_tls = false
require_encryption = true
# certs mode: certificates only (SASL EXTERNAL); dialback mode: dialback is accepted.
require_certificates = $require
ca_file = "$pki/ca.crt"
nameservers = ["$DNS_ADDR:53"]
[s2s.routes]
$routes
TOML
    "$bin" check-config -c "$dir/corvid.toml" >"$dir/check.log" 2>&1 || { cat "$dir/check.log"; return 1; }
    RUST_LOG="${CORVID_LOG:-info}" "$bin" serve -c "$dir/corvid.toml" >"$dir/corvid.log" 2>&1 &
    pids+=($!)
    corvid_pid=$!
    wait_port "${ADDR[corvid]}" $C2S_PORT 30 corvid || { cat "$dir/corvid.log"; return 1; }
    # Not fatal: without an s2s listener the scenarios still run, and fail step by step.
    wait_port "${ADDR[corvid]}" $S2S_PORT 10 "corvid (s2s)" || say "WARNING: corvid does not accept s2s connections"
}
add_corvid_user() { # mode user
    printf '%s\n' "$PASSWORD" | "$bin" user add "$2" --password-stdin -c "$work/$1/corvid/corvid.toml" >/dev/null
}
stop_corvid() {
    kill "$corvid_pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do kill -0 "$corvid_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$corvid_pid" 2>/dev/null || true
    wait "$corvid_pid" 2>/dev/null || true
    corvid_pid=""
}

# The mechanism that authenticated the s2s streams between a pair, both directions, as the
# Prosody or ejabberd side logged it: SASL EXTERNAL in certs mode, dialback in dialback mode
# (where a peer accepting EXTERNAL would mean it trusted a certificate it cannot verify).
check_auth() { # mode server peer_domain label
    local mode=$1 server=$2 peer=$3 label=$4 log want=() forbid=() line missing="" found=""
    case "$server" in
        ejabberd)
            log="$work/$mode/ejabberd/logs/ejabberd.log"
            local mech=EXTERNAL other=dialback
            [ "$mode" = dialback ] && mech=dialback other=EXTERNAL
            want=("Accepted inbound s2s $mech authentication $peer -> ejabberd.test"
                  "Accepted outbound s2s $mech authentication ejabberd.test -> $peer")
            forbid=("Accepted inbound s2s $other authentication $peer -> ejabberd.test"
                    "Accepted outbound s2s $other authentication ejabberd.test -> $peer") ;;
        prosody)
            log="$work/$mode/prosody/prosody.log"
            local external=("Accepting SASL EXTERNAL identity from $peer" "SASL EXTERNAL with $peer succeeded")
            if [ "$mode" = certs ]; then
                want=("${external[@]}")
            else
                want=("Incoming s2s connection $peer->prosody.test complete"
                      "Outgoing s2s connection prosody.test->$peer complete")
                forbid=("${external[@]}")
            fi ;;
        *) return 0 ;;
    esac
    for line in "${want[@]}"; do grep -qF "$line" "$log" || missing+=" [$line]"; done
    for line in "${forbid[@]}"; do ! grep -qF "$line" "$log" || found+=" [$line]"; done
    local step="auth $mode $server.test<->$peer (as $server logged it)"
    if [ -z "$missing$found" ]; then
        echo "PASS $label $step"
    else
        echo "FAIL $label $step:${missing:+ missing$missing}${found:+ unexpected$found}"
    fi
}

server_logs() { # mode
    local f
    for f in "$work/$1/corvid/corvid.log" "$work/$1/prosody/prosody.log" "$work/$1/ejabberd/logs/ejabberd.log"; do
        [ -f "$f" ] || continue
        printf '\n----- last lines of %s\n' "${f#"$work"/}"
        tail -n "${LOG_LINES:-60}" "$f"
    done
}

# Private hosts file for Erlang's resolver (same lines as /etc/hosts).
{
    printf '127.0.0.1 localhost\n'
    for server in corvid prosody ejabberd; do printf '%s %s.test conference.%s.test\n' "${ADDR[$server]}" "$server" "$server"; done
} >"$work/hosts"
chmod 644 "$work/hosts" "$work/resolv.conf"

# --- versions -------------------------------------------------------------------------------
[ -n "${want[prosody]:-}" ] && say "anchor: $(prosodyctl about 2>/dev/null | head -n1) (Debian $(dpkg-query -W -f '${Version}' prosody))"
[ -n "${want[ejabberd]:-}" ] && say "anchor: ejabberd (Debian $(dpkg-query -W -f '${Version}' ejabberd))"

# --- the runs -------------------------------------------------------------------------------
results="$work/results.txt"
: >"$results"
declare -A up
for mode in "${modes[@]}"; do
    say "== $mode mode: ${pairs[*]}"
    mkdir -p "$work/$mode"
    for server in corvid prosody ejabberd; do up[$server]=""; done
    for server in corvid prosody ejabberd; do
        [ -n "${want[$server]:-}" ] || continue
        # Accounts are created per pair once the servers run.
        if "start_$server" "$mode"; then up[$server]=1; else say "$server did not start ($mode mode)"; fi
    done
    [ "$mode" = certs ] && cafile="$pki/ca.crt" || cafile="$pki/self-signed-bundle.crt"
    if [ -n "${up[ejabberd]:-}" ]; then
        say "anchor: $(ejabberdctl_ status 2>/dev/null | grep -io 'ejabberd [0-9][^ ]*' | head -n1)"
    fi
    for pair in "${pairs[@]}"; do
        x=${pair%-*} y=${pair#*-}
        label="[$mode] $x<->$y"
        if [ -z "${up[$x]:-}" ] || [ -z "${up[$y]:-}" ]; then
            echo "FAIL $label setup: $([ -n "${up[$x]:-}" ] && echo "$y" || echo "$x") did not start (log below)" | tee -a "$results"
            continue
        fi
        user_x="to-$y" user_y="to-$x"
        if ! { "add_${x}_user" "$mode" "$user_x" && "add_${y}_user" "$mode" "$user_y"; }; then
            echo "FAIL $label setup: could not create the accounts" | tee -a "$results"
            continue
        fi
        timeout 600 "$venv/bin/python" "$here/scenarios.py" --label "$label" \
            --a-jid "$user_x@$x.test" --a-password "$PASSWORD" --a-addr "${ADDR[$x]}:$C2S_PORT" \
            --b-jid "$user_y@$y.test" --b-password "$PASSWORD" --b-addr "${ADDR[$y]}:$C2S_PORT" \
            --cafile "$cafile" --room "room-$x-$y" | tee -a "$results" || true
        check_auth "$mode" "$x" "$y.test" "$label" | tee -a "$results"
        check_auth "$mode" "$y" "$x.test" "$label" | tee -a "$results"
    done
    if grep -q "^FAIL \[$mode\]" "$results"; then server_logs "$mode" >&2; fi
    for server in corvid prosody ejabberd; do
        if [ -n "${want[$server]:-}" ]; then "stop_$server"; fi
    done
done

passed=$(grep -c '^PASS ' "$results" || true)
failed=$(grep -c '^FAIL ' "$results" || true)
echo
grep '^FAIL ' "$results" || true
echo "federation: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
