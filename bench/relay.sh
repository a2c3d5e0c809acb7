#!/usr/bin/env bash
# End-to-end relay throughput on loopback, sluice against Postfix:
#
#   smtp-source --> X --> smtp-sink      X = sluice | Postfix
#
# sluice runs its release build with its default durability (fsync before
# 250) and the sink as smart host; Postfix is its own instance with
# relayhost = the sink and default settings. "End to end" is from the first
# connection until the sink has counted every message.
#
# BENCH_MODE picks what the relay does:
#   plain     smtp-source and smtp-sink, no TLS (the default). The mail
#             comes into the organisation from outside, so sluice checks
#             SPF, DKIM and DMARC on every message (its default); Postfix
#             does the same as its users make it do, through the OpenDKIM
#             (verify) and OpenDMARC (SPF and DMARC) milters, installed if
#             missing. The milters resolve through their own dnsmasq with
#             the same zone as sluice's: they run in a network and mount
#             namespace of their own (their libraries read
#             /etc/resolv.conf, which there names that dnsmasq), reached
#             over unix sockets. BENCH_POSTFIX_AUTH=0 runs Postfix without
#             them: the relay minus the checks, a reference only.
#   starttls  TLS on both legs, certificates made at run time with openssl
#             (one CA, ECDSA P-256): the client upgrades every connection
#             with STARTTLS (smtp-source has no TLS, so bench/smtp_load.rs
#             sends, and its `sink` mode counts, with STARTTLS); sluice has
#             tls_cert/tls_key inbound and an outbound connector with
#             tls = "encryption_only"; Postfix has smtpd_tls_* and
#             smtp_tls_security_level = encrypt to the sink. The mail comes
#             from outside as in plain mode, and both check it as there.
#   signing   as plain, but the mail leaves the organisation: sluice relays
#             it through an on-premises connector and DKIM-signs every
#             message (BENCH_DKIM=ed25519|rsa, key made by `sluice dkim new`);
#             Postfix signs as its users do, through the OpenDKIM milter
#             (installed if missing; same algorithm, relaxed/relaxed, its
#             own key). BENCH_POSTFIX_SIGN=0 runs Postfix without the milter
#             instead: the same relay minus the signature, a reference only.
#
#   bench/relay.sh                      # 20,000 messages of 10 KB, 10 and 50 sessions
#   BENCH_MESSAGES=2000 bench/relay.sh  # shorter
#   BENCH_CONCURRENCY="10" BENCH_SIZE=1024 BENCH_MTAS=postfix bench/relay.sh
#   BENCH_MODE=starttls BENCH_CONCURRENCY=50 bench/relay.sh
#   BENCH_MODE=signing BENCH_DKIM=rsa BENCH_CONCURRENCY=50 bench/relay.sh
#
# The machine is shared more often than not: BENCH_REPEAT=N runs the
# sluice/Postfix pair N times back to back (each pair one after the other,
# so both see the same load) and prints every ratio with the load average.
# BENCH_LOAD_FLAGS=--pipelining makes the STARTTLS generator pipeline MAIL,
# RCPT and DATA (for both MTAs alike). BENCH_BUILD=0 runs the release binary as built; BENCH_SLUICE=PATH runs
# another sluice binary (an older build, to compare).
#
# Before each pair the generator sends straight to a fresh sink, with no
# relay between them (the "direct" row): the generator and the sink share
# the cores with the relay under test, so that rate is the most any relay
# could show on this machine at that moment. BENCH_CEILING=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

messages=${BENCH_MESSAGES:-20000}
size=${BENCH_SIZE:-10240}
concurrency=${BENCH_CONCURRENCY:-"10 50"}
mtas=${BENCH_MTAS:-"sluice postfix"}
mode=${BENCH_MODE:-plain}
repeat=${BENCH_REPEAT:-1}
build=${BENCH_BUILD:-1}
dkim_algorithm=${BENCH_DKIM:-ed25519}
ceiling=${BENCH_CEILING:-1}
postfix_sign=${BENCH_POSTFIX_SIGN:-1}
[[ $mode == signing ]] || postfix_sign=0
postfix_auth=${BENCH_POSTFIX_AUTH:-1}
[[ $mode != signing ]] || postfix_auth=0
case $mode in
plain | starttls | signing) ;;
*)
    echo "relay.sh: BENCH_MODE is plain, starttls or signing, not $mode" >&2
    exit 2
    ;;
esac
# Generous, but every wait ends: at worst 50 msgs/s plus a minute.
timeout_s=$((messages / 50 + 60))

# 127.0.201.0/24 is not used by the integration tests.
sink_ip=127.0.201.2
sluice_ip=127.0.201.1
postfix_ip=127.0.201.3
dns_ip=127.0.201.4
milter_ip=127.0.201.5

as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo -n)

if ! [[ -x /usr/sbin/postfix && -x /usr/sbin/smtp-source && -x /usr/sbin/smtp-sink ]]; then
    echo "relay.sh: installing postfix" >&2
    echo "postfix postfix/main_mailer_type select No configuration" | "${as_root[@]}" debconf-set-selections
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix
fi

milter_packages=()
if [[ " $mtas " == *" postfix "* ]]; then
    [[ $postfix_sign == 0 && $postfix_auth == 0 ]] || [[ -x /usr/sbin/opendkim ]] || milter_packages+=(opendkim)
    [[ $postfix_auth == 0 ]] || [[ -x /usr/sbin/opendmarc ]] || milter_packages+=(opendmarc)
fi
if ((${#milter_packages[@]})); then
    echo "relay.sh: installing ${milter_packages[*]}" >&2
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${milter_packages[@]}"
fi

if [[ $build == 1 ]] && [[ " $mtas " == *" sluice "* || $mode == starttls ]]; then
    echo "relay.sh: building sluice and the load generator (release)" >&2
    cargo build --release -q -p sluice --bin sluice --example smtp-load
fi
sluice_bin=${BENCH_SLUICE:-${CARGO_TARGET_DIR:-target}/release/sluice}
load_bin=${CARGO_TARGET_DIR:-target}/release/examples/smtp-load
load_flags=${BENCH_LOAD_FLAGS:-}

work=$(mktemp -d /tmp/sluice-bench.XXXXXX)
chmod 755 "$work"
bench_name=relay.sh
# shellcheck source=bench/lib.sh
source bench/lib.sh
sink_pid=
sluice_pid=
dns_pid=
postfix_dir=
milter_pid=

stop_sluice() {
    if [[ -n $sluice_pid ]]; then
        kill -9 "$sluice_pid" 2>/dev/null || true
        wait "$sluice_pid" 2>/dev/null || true
        sluice_pid=
    fi
}
stop_postfix() {
    if [[ -n $postfix_dir ]]; then
        local pid
        pid=$(cat "$postfix_dir/queue/pid/master.pid" 2>/dev/null | tr -d ' ' || true)
        "${as_root[@]}" postfix -c "$postfix_dir/etc" stop >/dev/null 2>&1 || true
        for _ in $(seq 50); do
            [[ -n $pid && -d /proc/$pid ]] || break
            sleep 0.1
        done
        [[ -z $pid || ! -d /proc/$pid ]] || "${as_root[@]}" kill -9 "$pid" 2>/dev/null || true
        postfix_dir=
    fi
}
stop_milter() {
    if [[ -n $milter_pid ]]; then
        # Its own process group (setsid): the namespace's processes too.
        # The milters' graceful stop can hang on a socket directory that is
        # going away; nothing of theirs needs keeping.
        kill -9 -- "-$milter_pid" 2>/dev/null || kill -9 "$milter_pid" 2>/dev/null || true
        wait "$milter_pid" 2>/dev/null || true
        milter_pid=
    fi
}
cleanup() {
    stop_milter
    stop_dns
    stop_sink
    stop_sluice
    stop_postfix
    "${as_root[@]}" rm -rf "$work"
}
trap cleanup EXIT

# The mail's addresses: into the organisation (contoso.test, an accepted
# domain) from outside, or, when signing, out of it.
if [[ $mode == signing ]]; then
    mail_from=load@contoso.test mail_to=bob@fabrikam.test
else
    mail_from=load@fabrikam.test mail_to=bob@contoso.test
fi

# One CA and one ECDSA certificate naming every address, for every TLS
# endpoint (sluice, Postfix, the sink).
make_certificates() {
    local tls=$work/tls
    mkdir -p "$tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=relay bench CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=bench.contoso.test" -keyout "$tls/key.pem" -out "$tls/cert.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:$sluice_ip,IP:$postfix_ip,IP:$sink_ip,DNS:bench.contoso.test" \
        "basicConstraints=CA:FALSE" "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >"$tls/ext"
    openssl x509 -req -in "$tls/cert.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 2 -extfile "$tls/ext" -out "$tls/cert.pem" 2>/dev/null
    chmod 644 "$tls"/*.pem
    tls_ca=$tls/ca.pem tls_cert=$tls/cert.pem tls_key=$tls/key.pem
    # The sink speaks STARTTLS too (bench/lib.sh).
    sink_cert=$tls_cert sink_key=$tls_key
}
[[ $mode != starttls ]] || make_certificates

[[ " $mtas " != *" sluice "* ]] || start_dns

start_sluice() {
    local dir=$work/sluice-$1 smtp_port admin_port
    mkdir -p "$dir"
    smtp_port=$(free_port $sluice_ip)
    admin_port=$(free_port $sluice_ip)
    local smtp_tls="" connector_tls="" objects
    if [[ $mode == starttls ]]; then
        smtp_tls="tls_cert = \"$tls_cert\""$'\n'"tls_key = \"$tls_key\""
        connector_tls='tls = "encryption_only"'
    fi
    cat >"$dir/node.toml" <<TOML
[node]
hostname = "bench.contoso.test"
data_dir = "$dir/data"

[smtp]
listen = ["$sluice_ip:$smtp_port"]
# All the load comes from one address; Postfix exempts its mynetworks
# from its per-client limits (smtpd_client_event_limit_exceptions), and
# at 50 a client reconnecting before its last session is closed here
# would get 421 at the banner (smtp-source gives up on it).
max_connections_per_ip = 1000
$smtp_tls

[delivery]
dns = "$dns_ip:$dns_port"

[admin]
listen = "$sluice_ip:$admin_port"
TOML
    if [[ $mode == signing ]]; then
        # The load comes from loopback's own address, 127.0.0.1.
        cat >"$dir/objects.toml" <<TOML
[[accepted_domain]]
name = "contoso.test"

[[inbound_connector]]
name = "Load"
type = "on_premises"
sender_ip_addresses = ["127.0.0.0/8"]

[[outbound_connector]]
name = "Sink"
recipient_domains = ["fabrikam.test"]
smart_hosts = ["$sink_ip:$sink_port"]
TOML
    else
        cat >"$dir/objects.toml" <<TOML
[[accepted_domain]]
name = "contoso.test"
type = "internal_relay"

[[outbound_connector]]
name = "Sink"
recipient_domains = ["contoso.test"]
smart_hosts = ["$sink_ip:$sink_port"]
$connector_tls
TOML
    fi
    RUST_LOG=warn "$sluice_bin" serve --config "$dir/node.toml" >"$dir/serve.log" 2>&1 &
    sluice_pid=$!
    wait_port $sluice_ip "$smtp_port" 30
    local deadline=$((SECONDS + 30))
    until [[ -s $dir/data/admin.token ]]; do
        ((SECONDS < deadline)) || { echo "relay.sh: no admin.token" >&2; return 1; }
        sleep 0.1
    done
    "$sluice_bin" apply -f "$dir/objects.toml" --config "$dir/node.toml" >/dev/null
    if [[ $mode == signing ]]; then
        "$sluice_bin" dkim new contoso.test --algorithm "$dkim_algorithm" --config "$dir/node.toml" >/dev/null
    fi
    target=$sluice_ip:$smtp_port
}

# OpenDKIM signing for contoso.test with a key of BENCH_DKIM's algorithm,
# on its own loopback port. Sets milter.
start_milter() {
    local dir=$work/opendkim-$1 port
    mkdir -p "$dir"
    if [[ $dkim_algorithm == rsa ]]; then
        openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:2048 -out "$dir/key.pem" 2>/dev/null
    else
        openssl genpkey -algorithm ed25519 -out "$dir/key.pem" 2>/dev/null
    fi
    port=$(free_port $milter_ip)
    cat >"$dir/opendkim.conf" <<CONF
Syslog no
Mode s
Domain contoso.test
Selector bench
KeyFile $dir/key.pem
SignatureAlgorithm $([[ $dkim_algorithm == rsa ]] && echo rsa-sha256 || echo ed25519-sha256)
Canonicalization relaxed/relaxed
InternalHosts 127.0.0.0/8
Socket inet:$port@$milter_ip
PidFile $dir/opendkim.pid
UserID root
RequireSafeKeys no
CONF
    setsid /usr/sbin/opendkim -f -x "$dir/opendkim.conf" >"$dir/opendkim.log" 2>&1 &
    milter_pid=$!
    wait_port $milter_ip "$port" 10
    milter=inet:$milter_ip:$port
}

# OpenDKIM verifying and OpenDMARC checking SPF and DMARC, as a Postfix
# relay receiving mail from outside runs them, with the zone sluice gets
# (see plain mode above). Sets milter.
start_auth_milters() {
    local dir=$work/auth-milters-$1
    mkdir -p "$dir"
    chmod 755 "$dir"
    echo "nameserver 127.0.0.1" >"$dir/resolv.conf"
    # Nothing is exempt: the load comes from 127.0.0.1, which both milters
    # would otherwise take for an internal host and not check.
    echo "192.0.2.1" >"$dir/exempt"
    cat >"$dir/opendkim.conf" <<CONF
Syslog no
Mode v
Socket local:$dir/opendkim.sock
UMask 000
PidFile $dir/opendkim.pid
UserID root
InternalHosts refile:$dir/exempt
Nameservers 127.0.0.1
AuthservID bench-postfix.test
CONF
    cat >"$dir/opendmarc.conf" <<CONF
Syslog false
Socket local:$dir/opendmarc.sock
UMask 000
PidFile $dir/opendmarc.pid
UserID root
AuthservID bench-postfix.test
TrustedAuthservIDs bench-postfix.test
IgnoreHosts $dir/exempt
SPFSelfValidate true
SPFIgnoreResults true
RejectFailures false
FailureReports false
CONF
    local negative_ttl=${BENCH_DNS_NEGATIVE_TTL:-300}
    setsid unshare --net --mount --fork bash -c '
        dir=$1 ttl=$2
        ip link set lo up
        mount --bind "$dir/resolv.conf" /etc/resolv.conf
        dnsmasq --keep-in-foreground --no-resolv --no-hosts --listen-address=127.0.0.1 --port=53 \
            --auth-server=ns.test,lo --auth-zone=test --auth-ttl="$ttl" --pid-file= --log-facility=- \
            >"$dir/dnsmasq.log" 2>&1 &
        /usr/sbin/opendkim -f -x "$dir/opendkim.conf" >"$dir/opendkim.log" 2>&1 &
        /usr/sbin/opendmarc -f -c "$dir/opendmarc.conf" >"$dir/opendmarc.log" 2>&1 &
        wait' _ "$dir" "$negative_ttl" &
    milter_pid=$!
    local deadline=$((SECONDS + 10))
    until [[ -S $dir/opendkim.sock && -S $dir/opendmarc.sock ]]; do
        ((SECONDS < deadline)) || { echo "relay.sh: the milters did not start" >&2; cat "$dir"/*.log >&2; return 1; }
        sleep 0.1
    done
    milter="unix:$dir/opendkim.sock, unix:$dir/opendmarc.sock"
}

start_postfix() {
    postfix_dir=$work/postfix-$1
    mkdir -p "$postfix_dir"/{etc,data,queue}
    "${as_root[@]}" chown postfix "$postfix_dir/data"
    local port
    port=$(free_port $postfix_ip)
    cat >"$postfix_dir/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $postfix_dir/queue
data_directory = $postfix_dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench-postfix.test
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relayhost = [$sink_ip]:$sink_port
smtpd_peername_lookup = no
maillog_file_prefixes = /
maillog_file = $postfix_dir/maillog
syslog_name = postfix-bench
CF
    # Postfix's stock master.cf services, chroot off, smtpd on our address.
    cat >"$postfix_dir/etc/master.cf" <<CF
$postfix_ip:$port inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
CF
    if [[ $postfix_sign == 1 || $postfix_auth == 1 ]]; then
        if [[ $postfix_sign == 1 ]]; then start_milter "$1"; else start_auth_milters "$1"; fi
        cat >>"$postfix_dir/etc/main.cf" <<CF
smtpd_milters = $milter
milter_default_action = tempfail
CF
    fi
    if [[ $mode == starttls ]]; then
        cat >>"$postfix_dir/etc/main.cf" <<CF
smtpd_tls_cert_file = $tls_cert
smtpd_tls_key_file = $tls_key
smtpd_tls_security_level = may
smtp_tls_security_level = encrypt
smtp_tls_CAfile = $tls_ca
CF
    fi
    "${as_root[@]}" postfix -c "$postfix_dir/etc" start >/dev/null 2>&1 || {
        echo "relay.sh: postfix did not start:" >&2
        tail -20 "$postfix_dir/maillog" >&2 || true
        return 1
    }
    wait_port $postfix_ip "$port" 30
    target=$postfix_ip:$port
}

now() { date +%s.%N; }

# run_one NAME SESSIONS: prints "accept_rate end_to_end_rate"
run_one() {
    local name=$1 sessions=$2 start accepted done_at count
    start=$(now)
    if [[ $mode == starttls ]]; then
        timeout "$timeout_s" "$load_bin" send --starttls $load_flags --ca "$tls_ca" -s "$sessions" -m "$messages" \
            -l "$size" -f "$mail_from" -t "$mail_to" -M bench-client.test "$target" >/dev/null ||
            echo "relay.sh: smtp-load against $name ended early" >&2
    else
        timeout "$timeout_s" /usr/sbin/smtp-source -s "$sessions" -m "$messages" -l "$size" \
            -f "$mail_from" -t "$mail_to" -M bench-client.test "$target" ||
            echo "relay.sh: smtp-source against $name ended early" >&2
    fi
    accepted=$(now)
    count=$(wait_for_sink "$messages" "$timeout_s" "relay.sh: $name")
    done_at=$(now)
    awk -v n="$messages" -v c="$count" -v s="$start" -v a="$accepted" -v d="$done_at" \
        'BEGIN { printf "%.0f %.0f\n", n / (a - s), c / (d - s) }'
}

postfix_name=postfix
[[ $postfix_sign == 0 ]] || postfix_name=postfix+dkim
[[ $postfix_auth == 0 ]] || postfix_name=postfix+auth
printf 'relay benchmark (%s): %d messages of %d bytes, loopback, %s cores\n' \
    "$mode$([[ $mode != signing ]] || echo ", DKIM $dkim_algorithm")" "$messages" "$size" "$(nproc)"
printf '%-8s %-9s %12s %14s %14s %12s %s\n' sessions mta "accept msg/s" "end-end msg/s" "peak RSS" "CPU us/msg" "load (1 min)"
load() { cut -d' ' -f1 /proc/loadavg; }
for sessions in $concurrency; do
    for run in $(seq "$repeat"); do
        sluice_e2e=0 postfix_e2e=0
        if [[ $ceiling == 1 ]]; then
            start_sink
            target=$sink_ip:$sink_port
            read -r direct_accept direct_e2e < <(run_one direct "$sessions")
            stop_sink
            printf '%-8s %-9s %12s %14s %14s %12s %s\n' "$sessions" direct "$direct_accept" "$direct_e2e" "-" "-" "$(load)"
        fi
        if [[ " $mtas " == *" sluice "* ]]; then
            start_sink
            start_sluice "$sessions-$run"
            read -r sluice_accept sluice_e2e < <(run_one sluice "$sessions")
            sluice_rss=$(awk '/VmHWM/ { printf "%.1f MB", $2 / 1024 }' "/proc/$sluice_pid/status")
            # CPU time per message (every thread, user and system): unlike
            # the rates, it hardly moves with the machine's load.
            sluice_cpu=$(awk -v n="$messages" -v hz="$(getconf CLK_TCK)" \
                '{ printf "%.0f", ($14 + $15) / hz * 1e6 / n }' "/proc/$sluice_pid/stat")
            stop_sluice
            stop_sink
            printf '%-8s %-9s %12s %14s %14s %12s %s\n' "$sessions" sluice "$sluice_accept" "$sluice_e2e" "$sluice_rss" "$sluice_cpu" "$(load)"
        fi
        if [[ " $mtas " == *" postfix "* ]]; then
            start_sink
            start_postfix "$sessions-$run"
            read -r postfix_accept postfix_e2e < <(run_one postfix "$sessions")
            stop_postfix
            stop_milter
            stop_sink
            printf '%-8s %-9s %12s %14s %14s %12s %s\n' "$sessions" "$postfix_name" "$postfix_accept" "$postfix_e2e" "-" "-" "$(load)"
        fi
        awk -v s="$sluice_e2e" -v p="$postfix_e2e" -v c="$sessions" \
            'BEGIN { if (s > 0 && p > 0) printf "%-8s ratio sluice/postfix end to end: %.2f\n", c, s / p }'
    done
done
