#!/usr/bin/env bash
# Federation benchmark (issue 11): two instances of one server, x.bench and y.bench on two
# loopback addresses, one s2s link between them; users u1..uN on each; uK@x.bench -> uK@y.bench.
#
#   benches/s2s-bench.sh [RESULTS_FILE]     (as root: /etc/hosts, setpriv to prosody/ejabberd)
#
# For each server in $SERVERS (corvid prosody ejabberd):
#   certificates from a test CA both trust (SASL EXTERNAL):
#     start the pair, s2s-setup (cold link), throughput (window), latency (fixed rate), stop;
#     then SETUP_RUNS-1 more fresh starts with s2s-setup only;
#   self-signed certificates (dialback): SETUP_RUNS fresh starts with s2s-setup only
#     (and DIALBACK_MSG=1 adds throughput/latency on the dialback link).
# corvid runs with the archive off (like the anchors) and, with CORVID_MAM=1, once more with its
# default (archive on) for throughput/latency. CORVID_QUEUE_LIMIT sets corvid's s2s.queue_limit
# (diagnostic; labels get /queue-N). Servers on CPU $SERVER_CPU (both instances),
# the tool on $TOOL_CPU. Names: a dnsmasq of our own on $DNS_IP with A and _xmpp-server._tcp SRV
# records, used by all three (Prosody through libunbound's resolvconf, ejabberd through its
# inetrc, corvid through s2s.nameservers); /etc/hosts entries are added too.
# Deviations from default installs are marked BENCH in the generated configs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/benches/results/s2s-$(date -u +%Y%m%d).jsonl}"
SERVERS="${SERVERS:-corvid prosody ejabberd}"
# BENCH: 127.0.0.2/.3 are used by interop/federation on this machine; our own addresses.
X_IP="${X_IP:-127.0.0.22}"
Y_IP="${Y_IP:-127.0.0.23}"
DNS_IP="${DNS_IP:-127.0.0.24}"
X=x.bench
Y=y.bench
USERS="${USERS:-500}"
WINDOW="${WINDOW:-10}"
DURATION="${DURATION:-15}"
WARMUP="${WARMUP:-5}"
RATE="${RATE:-2000}"
LAT_DURATION="${LAT_DURATION:-15}"
SETUP_RUNS="${SETUP_RUNS:-3}"
MODES="${MODES:-ca dialback}"
DIALBACK_MSG="${DIALBACK_MSG:-0}"
CORVID_MAM="${CORVID_MAM:-0}"
QUIET_WAIT="${QUIET_WAIT:-60}"
SERVER_CPU="${SERVER_CPU:-0}"
TOOL_CPU="${TOOL_CPU:-1}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
LOAD="${LOAD:-$TARGET/release/corvid-load}"
CORVID="${CORVID:-$TARGET/release/corvid}"
W="${W:-/tmp/s2s-bench/run}"

die() { echo "s2s-bench.sh: $*" >&2; exit 1; }
log() { echo "== $(date -u +%H:%M:%S) $* (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }
ip_of() { [ "$1" = "$X" ] && echo "$X_IP" || echo "$Y_IP"; }
tag_of() { [ "$1" = "$X" ] && echo x || echo y; }

wait_port() { # ip port seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        if (exec 3<>/dev/tcp/"$1"/"$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}
port_free() { ! (exec 3<>/dev/tcp/"$1"/"$2") 2>/dev/null; }

# ---------------------------------------------------------------- names

hosts_entries() { # idempotent
    local ip d
    for d in $X $Y; do
        ip=$(ip_of $d)
        grep -qE "^$ip[[:space:]]+$d\$" /etc/hosts || echo "$ip $d" >> /etc/hosts
    done
}

dns_start() {
    mkdir -p "$W/dns"
    if [ -s "$W/dns/pid" ] && kill -0 "$(cat "$W/dns/pid")" 2>/dev/null; then return 0; fi
    dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
        --listen-address="$DNS_IP" --bind-interfaces --port=53 --user=root --local=/bench/ --log-queries \
        --host-record="$X,$X_IP" --host-record="$Y,$Y_IP" \
        --srv-host="_xmpp-server._tcp.$X,$X,5269,0,5" --srv-host="_xmpp-server._tcp.$Y,$Y,5269,0,5" \
        --log-facility="$W/dns/dnsmasq.log" >/dev/null 2>&1 &
    echo $! > "$W/dns/pid"
    sleep 0.3
    kill -0 "$(cat "$W/dns/pid")" || die "dnsmasq did not start (see $W/dns/dnsmasq.log)"
    echo "nameserver $DNS_IP" > "$W/dns/resolv.conf"
    chmod 755 "$W/dns"; chmod 644 "$W/dns/resolv.conf"
}
dns_stop() {
    [ -s "$W/dns/pid" ] || return 0
    kill "$(cat "$W/dns/pid")" 2>/dev/null || true
    rm -f "$W/dns/pid"
}

# ---------------------------------------------------------------- certificates

certs() { # mode: ca (test CA, both trust it) | dialback (self-signed, trusted by nobody)
    local dir="$W/pki/$1" d
    [ -s "$dir/$Y.pem" ] && return 0
    mkdir -p "$dir"
    if [ "$1" = ca ]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
            -keyout "$dir/ca.key" -out "$dir/ca.crt" -subj "/CN=corvid bench CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    fi
    for d in $X $Y; do
        if [ "$1" = ca ]; then
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout "$dir/$d.key" -out "$dir/$d.csr" -subj "/CN=$d" 2>/dev/null
            printf 'subjectAltName=DNS:%s,DNS:conference.%s\nbasicConstraints=CA:FALSE\n' "$d" "$d" > "$dir/$d.ext"
            openssl x509 -req -in "$dir/$d.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
                -days 30 -out "$dir/$d.crt" -extfile "$dir/$d.ext" 2>/dev/null
        else
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
                -keyout "$dir/$d.key" -out "$dir/$d.crt" -subj "/CN=$d" \
                -addext "subjectAltName=DNS:$d,DNS:conference.$d" 2>/dev/null
        fi
        cat "$dir/$d.key" "$dir/$d.crt" > "$dir/$d.pem"
    done
    chmod 755 "$W/pki" "$dir"; chmod 644 "$dir"/*
}

# ---------------------------------------------------------------- corvid

corvid_cfg() { # domain mode mam -> path of the config
    local d=$1 mode=$2 mam=$3 t; t=$(tag_of "$1")
    local dir="$W/corvid-$t" other ca=""
    other=$([ "$d" = $X ] && echo $Y || echo $X)
    mkdir -p "$dir"
    [ "$mode" = ca ] && ca="ca_file = \"$W/pki/ca/ca.crt\""
    cat > "$dir/corvid.toml" <<EOF
# Generated by benches/s2s-bench.sh ($mode, archive $mam).
domain = "$d"
[log]
level = "info"
[storage]
url = "sqlite://$dir/corvid.db"
[tls]
cert = "$W/pki/$mode/$d.crt"
key = "$W/pki/$mode/$d.key"
generate_self_signed = false
[c2s]
bind = "$(ip_of "$d")"
port = 5222
direct_tls = false
require_encryption = false        # BENCH: PLAIN without TLS for the bench users (as the anchors)
[http]
enabled = false
tls_enabled = false
[auth]
scram_iterations = 4096
allow_plain = true
allow_plain_without_tls = true     # BENCH
max_concurrent_per_address = 10000 # BENCH: all logins come from one address
max_failures_per_window = 100000
[limits]
max_connections_per_address = 0    # BENCH: no admission limits or shaping (as benches/corvid-bench.toml)
connection_rate_per_address = 0
max_unauthenticated_connections = 0
bytes_rate_per_session = 0
stanza_rate_per_session = 0
bytes_rate_before_bind = 0
[mam]
enabled = $mam                     # BENCH when false: the anchors run without archive
[s2s]
enabled = true
bind = "$(ip_of "$d")"
port = 5269
direct_tls = false                 # BENCH: STARTTLS only, like the anchors' s2s
nameservers = ["$DNS_IP:53"]       # BENCH: the bench's dnsmasq
$ca
EOF
    if [ -n "${CORVID_QUEUE_LIMIT:-}" ]; then # BENCH (diagnostic): stanzas waiting per link (default 1000)
        echo "queue_limit = $CORVID_QUEUE_LIMIT" >> "$dir/corvid.toml"
    fi
    if [ "${CORVID_ROUTES:-0}" = 1 ]; then
        printf '[s2s.routes]\n"%s" = "%s:5269"\n' "$other" "$(ip_of "$other")" >> "$dir/corvid.toml"
    fi
    echo "$dir/corvid.toml"
}
corvid_start() { # domain mode mam
    local t cfg; t=$(tag_of "$1"); cfg=$(corvid_cfg "$1" "$2" "$3")
    local dir="$W/corvid-$t" have=0
    [ -s "$dir/users.count" ] && have=$(cat "$dir/users.count")
    if [ "$have" -lt "$USERS" ]; then
        for ((i = have + 1; i <= USERS; i++)); do echo "u$i pw"; done | "$CORVID" user import -c "$cfg" >/dev/null
        echo "$USERS" > "$dir/users.count"
    fi
    ( ulimit -n 20000; exec taskset -c "$SERVER_CPU" "$CORVID" serve -c "$cfg" >>"$dir/stdout.log" 2>&1 ) &
    echo $! > "$dir/pid"
    wait_port "$(ip_of "$1")" 5222 30 || die "corvid $1 did not open 5222 (see $dir/stdout.log)"
    wait_port "$(ip_of "$1")" 5269 30 || die "corvid $1 did not open 5269 (see $dir/stdout.log)"
}
corvid_users() { :; } # imported before start
corvid_pid() { cat "$W/corvid-$(tag_of "$1")/pid"; }
corvid_stop() {
    local p; p=$(corvid_pid "$1" 2>/dev/null) || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
    rm -f "$W/corvid-$(tag_of "$1")/pid"
}

# ---------------------------------------------------------------- Prosody

prosody_cfg() { # domain mode
    local d=$1 mode=$2 t; t=$(tag_of "$1")
    local dir="$W/prosody-$t" cafile="" secure=false
    mkdir -p "$dir/data"
    [ "$mode" = ca ] && { cafile="cafile = \"$W/pki/ca/ca.crt\";"; secure=true; }
    cat > "$dir/prosody.cfg.lua" <<EOF
-- Generated by benches/s2s-bench.sh ($mode). From shared/anchors/configs/prosody.cfg.lua.
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { info = "$dir/prosody.log" } -- BENCH: info, to see how each s2s stream authenticated
interfaces = { "$(ip_of "$d")" }
c2s_ports = { 5222 }
c2s_direct_tls_ports = {}
s2s_ports = { 5269 }
http_ports = {}
https_ports = {}
admin_socket = "$dir/data/prosody.sock"
c2s_require_encryption = false       -- BENCH: PLAIN without TLS for the bench users
allow_unencrypted_plain_auth = true  -- BENCH
s2s_require_encryption = true
s2s_secure_auth = $secure            -- BENCH: true with the test CA (certificates required), false for dialback
authentication = "internal_hashed"
default_iteration_count = 4096       -- BENCH: as the anchors
storage = "internal"
-- BENCH: libunbound asks the bench's dnsmasq only
unbound = { resolvconf = "$W/dns/resolv.conf" }
use_ipv6 = false
modules_enabled = {
	"roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "admin_shell"; "posix";
	-- BENCH: no "limits", no "mam", no "offline" (as the anchors)
}
modules_disabled = { "offline" }
certificates = "$W/pki/$mode"
ssl = { certificate = "$W/pki/$mode/$d.crt"; key = "$W/pki/$mode/$d.key"; $cafile }
VirtualHost "$d"
EOF
    [ "$(id -u)" = 0 ] && chown -R prosody: "$dir"
    echo "$dir/prosody.cfg.lua"
}
prosody_start() {
    local t cfg; t=$(tag_of "$1"); cfg=$(prosody_cfg "$1" "$2")
    local dir="$W/prosody-$t" asuser=()
    [ "$(id -u)" = 0 ] && asuser=(setpriv --reuid=prosody --regid=prosody --init-groups)
    rm -f "$dir/prosody.pid"
    ( ulimit -n 20000; exec taskset -c "$SERVER_CPU" "${asuser[@]}" prosody --config "$cfg" -F >>"$dir/stdout.log" 2>&1 ) &
    echo $! > "$dir/launcher.pid"
    wait_port "$(ip_of "$1")" 5222 30 || die "prosody $1 did not open 5222 (see $dir)"
    wait_port "$(ip_of "$1")" 5269 30 || die "prosody $1 did not open 5269 (see $dir)"
    for _ in $(seq 50); do [ -s "$dir/prosody.pid" ] && break; sleep 0.1; done
}
prosody_users() {
    local t; t=$(tag_of "$1")
    local dir="$W/prosody-$t" have=0
    [ -s "$dir/users.count" ] && have=$(cat "$dir/users.count")
    [ "$have" -ge "$USERS" ] && return 0
    prosodyctl --config "$dir/prosody.cfg.lua" shell ">local um=require'core.usermanager'; local c=0; for i=1,$USERS do if not um.user_exists('u'..i,'$1') then assert(um.create_user('u'..i,'pw','$1')); c=c+1 end end; return 'created '..c" >&2
    echo "$USERS" > "$dir/users.count"
}
prosody_pid() { local f="$W/prosody-$(tag_of "$1")/prosody.pid"; [ -s "$f" ] && cat "$f" || cat "$W/prosody-$(tag_of "$1")/launcher.pid"; }
prosody_stop() {
    local p; p=$(prosody_pid "$1" 2>/dev/null) || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
    rm -f "$W/prosody-$(tag_of "$1")/prosody.pid"
}

# ---------------------------------------------------------------- ejabberd

ejabberd_cfg() { # domain mode
    local d=$1 mode=$2 t; t=$(tag_of "$1")
    local dir="$W/ejabberd-$t" ip cafile=""; ip=$(ip_of "$d")
    mkdir -p "$dir/spool" "$dir/logs"
    [ "$mode" = ca ] && cafile="ca_file: $W/pki/ca/ca.crt"
    cat > "$dir/ejabberd.yml" <<EOF
### Generated by benches/s2s-bench.sh ($mode). From shared/anchors/configs/ejabberd.yml.
loglevel: info   # BENCH: info, to see how each s2s stream authenticated
log_rotate_count: 0
hosts:
  - $d
certfiles:
  - "$W/pki/$mode/$d.pem"
$cafile
listen:
  -
    port: 5222
    ip: "$ip"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
    starttls: true
    starttls_required: false   # BENCH
    backlog: 128               # BENCH
  -
    port: 5269
    ip: "$ip"
    module: ejabberd_s2s_in
    shaper: s2s_shaper
    backlog: 128               # BENCH
  -
    port: 5280
    ip: "$ip"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api       # user creation
s2s_use_starttls: required
outgoing_s2s_families: [ipv4]  # BENCH: no AAAA on loopback
auth_method: internal
auth_password_format: scram
default_db: mnesia
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
api_permissions:
  "bench admin from loopback":
    who:
      ip: 127.0.0.0/8
    what: "*"
shaper: {}
shaper_rules:
  max_user_sessions: 10
  c2s_shaper: none    # BENCH
  s2s_shaper: none
modules:
  mod_disco: {}
  mod_http_api: {}
  mod_ping: {}
  mod_roster: {}
  mod_s2s_dialback: {}
  ## BENCH: no mod_offline, mod_mam, mod_fail2ban (as the anchors)
EOF
    local port=$([ "$t" = x ] && echo 6291 || echo 6292)
    cat > "$dir/ejabberdctl.cfg" <<EOF
ERLANG_NODE=s2sbench$t@localhost
ERL_DIST_PORT=$port
INET_DIST_INTERFACE=127.0.0.1
EJABBERD_PID_PATH=$dir/ejabberd.pid
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_BYPASS_WARNINGS=true
EOF
    # BENCH: Erlang's resolver asks the bench's dnsmasq (ejabberdctl exports ERL_INETRC=CONFIG_DIR/inetrc)
    printf '{nameserver, {%s}, 53}.\n{resolv_conf, "%s"}.\n{lookup, [file, dns]}.\n' "${DNS_IP//./,}" "$W/dns/resolv.conf" > "$dir/inetrc"
    [ "$(id -u)" = 0 ] && chown -R ejabberd: "$dir"
}
ejabberdctl_b() { # domain args...
    local t dir asuser=(); t=$(tag_of "$1"); dir="$W/ejabberd-$t"; shift
    if [ "$(id -u)" = 0 ]; then
        asuser=(setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME="$(getent passwd ejabberd | cut -d: -f6)")
    fi
    "${asuser[@]}" ejabberdctl --config-dir "$dir" --config "$dir/ejabberd.yml" --ctl-config "$dir/ejabberdctl.cfg" \
        --spool "$dir/spool" --logs "$dir/logs" "$@"
}
ejabberd_start() {
    ejabberd_cfg "$1" "$2"
    local dir; dir="$W/ejabberd-$(tag_of "$1")"
    rm -f "$dir/ejabberd.pid"
    ( ulimit -n 20000; taskset -c "$SERVER_CPU" bash -c "$(declare -f ejabberdctl_b tag_of); W='$W'; X='$X'; ejabberdctl_b $1 start" )
    wait_port "$(ip_of "$1")" 5222 60 || die "ejabberd $1 did not open 5222 (see $dir/logs)"
    wait_port "$(ip_of "$1")" 5269 60 || die "ejabberd $1 did not open 5269 (see $dir/logs)"
    wait_port "$(ip_of "$1")" 5280 60 || die "ejabberd $1 did not open 5280 (see $dir/logs)"
    for _ in $(seq 100); do [ -s "$dir/ejabberd.pid" ] && break; sleep 0.1; done
}
ejabberd_users() {
    local dir have=0; dir="$W/ejabberd-$(tag_of "$1")"
    [ -s "$dir/users.count" ] && have=$(cat "$dir/users.count")
    [ "$have" -ge "$USERS" ] && return 0
    python3 - "$(ip_of "$1")" "$1" "$USERS" <<'PY' >&2
import http.client, json, sys
ip, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection(ip, 5280, timeout=30); made = 0
for i in range(1, n + 1):
    c.request("POST", "/api/register", json.dumps({"user": f"u{i}", "host": host, "password": "pw"}),
              {"Content-Type": "application/json"})
    r = c.getresponse(); body = r.read()
    if r.status == 200: made += 1
    elif r.status != 409 and b"already" not in body and b"conflict" not in body.lower():
        sys.exit(f"register u{i}@{host}: {r.status} {body[:200]!r}")
print(f"{host}: created {made}")
PY
    echo "$USERS" > "$dir/users.count"
}
ejabberd_pid() { cat "$W/ejabberd-$(tag_of "$1")/ejabberd.pid"; }
ejabberd_stop() {
    local p; p=$(ejabberd_pid "$1" 2>/dev/null) || return 0
    timeout 30 bash -c "$(declare -f ejabberdctl_b tag_of); W='$W'; X='$X'; ejabberdctl_b $1 stop" >/dev/null 2>&1 || true
    for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
    rm -f "$W/ejabberd-$(tag_of "$1")/ejabberd.pid"
}

# ---------------------------------------------------------------- measurements

pair_start() { # server mode [mam]
    local s=$1 d
    for d in $X $Y; do
        port_free "$(ip_of $d)" 5222 || die "$(ip_of $d):5222 is in use"
        "${s}_start" $d "$2" "${3:-false}"
    done
    for d in $X $Y; do "${s}_users" $d; done
    PID_X=$("${s}_pid" $X); PID_Y=$("${s}_pid" $Y)
    log "$s pair up ($2): $X pid $PID_X, $Y pid $PID_Y, affinity $(taskset -cp "$PID_X" | sed 's/.*: //')/$(taskset -cp "$PID_Y" | sed 's/.*: //')"
}
pair_stop() { "${1}_stop" $X || true; "${1}_stop" $Y || true; }

busy_compilers() { { pgrep -x 'rustc|clippy-driver|cc1|cc1plus|ld|ld.lld' 2>/dev/null || true; } | wc -l; }
quiet() { # wait (at most QUIET_WAIT s) until no compiler runs on the machine: shared cores
    local i n
    for ((i = 0; i < QUIET_WAIT; i++)); do
        n=$(busy_compilers); [ "$n" = 0 ] && return 0
        [ "$i" = 0 ] && log "waiting up to ${QUIET_WAIT}s for $n compiler processes"
        sleep 1
    done
    log "compilers still running after ${QUIET_WAIT}s: measuring anyway (see loadavg in the JSON)"
}
load() { # label mode args...
    local label=$1; shift
    local mode=$1; shift
    quiet
    taskset -c "$TOOL_CPU" "$LOAD" "$mode" --server "$X_IP:5222" --domain $X --label "$label" --out "$OUT" "$@" \
        --pid "$PID_X" --peer-pid "$PID_Y" 2>&1 >/dev/null | grep -v '^  logins' >&2 || echo "s2s-bench.sh: $label $mode failed" >&2
}
setup_run() { # label
    quiet
    taskset -c "$TOOL_CPU" "$LOAD" s2s-setup --server "$X_IP:5222" --domain $X \
        --peer-server "$Y_IP:5222" --peer-domain $Y --label "$1" --out "$OUT" >/dev/null \
        || echo "s2s-bench.sh: $1 s2s-setup failed" >&2
}
messages() { # label
    local peer=(--peer-server "$Y_IP:5222" --peer-domain $Y)
    log "$1: throughput, $USERS pairs, window $WINDOW, ${DURATION}s"
    load "$1" throughput --users "$USERS" --window "$WINDOW" --duration "$DURATION" --warmup "$WARMUP" "${peer[@]}"
    log "$1: latency at $RATE msg/s, $USERS pairs, ${LAT_DURATION}s"
    load "$1" latency --users "$USERS" --rate "$RATE" --duration "$LAT_DURATION" "${peer[@]}"
}

[ -x "$LOAD" ] || die "no $LOAD: cargo build --release -p corvid -p corvid-load"
mkdir -p "$W" "$(dirname "$OUT")"; chmod 755 "$W" /tmp/s2s-bench 2>/dev/null || true
hosts_entries
dns_start
trap 'for s in $SERVERS; do pair_stop $s >/dev/null 2>&1; done; dns_stop' EXIT
log "results -> $OUT"
for s in $SERVERS; do
    for mode in $MODES; do
        certs "$mode"
        for ((run = 1; run <= SETUP_RUNS; run++)); do
            label="$s/$mode"
            [ "$s" = corvid ] && [ -n "${CORVID_QUEUE_LIMIT:-}" ] && label="$label/queue-$CORVID_QUEUE_LIMIT"
            pair_start "$s" "$mode" false
            log "$label: cold link set-up, run $run"
            setup_run "$label"
            if [ "$run" = 1 ] && { [ "$mode" = ca ] || [ "$DIALBACK_MSG" = 1 ]; }; then
                messages "$label"
            fi
            pair_stop "$s"
        done
        if [ "$s" = corvid ] && [ "$CORVID_MAM" = 1 ] && [ "$mode" = ca ]; then
            label="corvid/ca/archive-on${CORVID_QUEUE_LIMIT:+/queue-$CORVID_QUEUE_LIMIT}"
            pair_start corvid ca true
            setup_run "$label"
            messages "$label"
            pair_stop corvid
        fi
    done
done
log "done: $OUT"
