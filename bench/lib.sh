# Shared by the relay benchmarks (relay.sh, cluster.sh): sourced, not run.
#
# The sourcing script sets, before calling these:
#   bench_name   its name, for messages ("relay.sh")
#   work         its temporary directory (logs go there)
#   sink_ip      the sink's address;  dns_ip  the resolver's address
#   sink_cert, sink_key, load_bin   (optional) a STARTTLS sink: bench/smtp_load.rs's
#                `sink` with this certificate instead of Postfix's smtp-sink

free_port() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"
}

wait_port() { # ip port seconds
    local deadline=$((SECONDS + $3))
    until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "$bench_name: nothing listens on $1:$2" >&2; return 1; }
        sleep 0.1
    done
}

# sluice checks SPF, DKIM and DMARC on mail from outside (SPEC section 9):
# a server on loopback is authoritative for test. and answers NXDOMAIN at
# once, so the benchmark stays on loopback and measures the relay, not a
# remote resolver (through the machine's own resolver this came to 21
# msgs/s, sluice idle, waiting for answers). Its NXDOMAIN carries the
# zone's SOA, as every real zone's does, so sluice's resolver caches it
# for the SOA's negative TTL (RFC 2308) as it would on the Internet;
# BENCH_DNS_NEGATIVE_TTL=0 makes every message ask again. Sets dns_port.
start_dns() {
    local negative_ttl=${BENCH_DNS_NEGATIVE_TTL:-300}
    dns_port=$(python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$dns_ip")
    local answer=(--auth-server=ns.test,lo --auth-zone=test --auth-ttl="$negative_ttl")
    # dnsmasq answers authoritatively only when it listens on the wildcard
    # address (the port is free on every address in practice); with no
    # SOA it answers NXDOMAIN itself, on the one address.
    ((negative_ttl > 0)) || answer=(--bind-interfaces --address=/test/)
    dnsmasq --keep-in-foreground --no-resolv --no-hosts --listen-address="$dns_ip" --port="$dns_port" \
        "${answer[@]}" --pid-file= --log-facility=- >"$work/dnsmasq.log" 2>&1 &
    dns_pid=$!
}

stop_dns() {
    if [[ -n ${dns_pid:-} ]]; then
        kill "$dns_pid" 2>/dev/null || true
        wait "$dns_pid" 2>/dev/null || true
        dns_pid=
    fi
}

# A fresh sink per run, so its counter starts at zero. Sets sink_port.
start_sink() {
    sink_port=$(free_port "$sink_ip")
    sink_log=$work/sink-$RANDOM.log
    if [[ -n ${sink_cert:-} ]]; then
        sink_count_file=$work/sink-$RANDOM.count
        "$load_bin" sink "$sink_ip:$sink_port" --cert "$sink_cert" --key "$sink_key" \
            --count-file "$sink_count_file" >"$sink_log" 2>&1 &
    else
        local user=()
        [[ $(id -u) -ne 0 ]] || user=(-u root)
        /usr/sbin/smtp-sink -c "${user[@]}" "$sink_ip:$sink_port" 1024 >"$sink_log" 2>&1 &
    fi
    sink_pid=$!
    wait_port "$sink_ip" "$sink_port" 10
}

stop_sink() {
    if [[ -n ${sink_pid:-} ]]; then
        kill "$sink_pid" 2>/dev/null || true
        wait "$sink_pid" 2>/dev/null || true
        sink_pid=
    fi
}

# Messages the current sink has counted.
sink_count() {
    if [[ -n ${sink_cert:-} ]]; then
        cat "$sink_count_file" 2>/dev/null | grep . || echo 0
        return
    fi
    tr '\r' '\n' <"$sink_log" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1 | grep . || echo 0
}

# Waits until the sink has counted $1 messages or $2 seconds have passed
# (then says so on stderr, as $3); prints the count reached.
wait_for_sink() {
    local total=$1 deadline=$((SECONDS + $2)) what=$3 count
    count=$(sink_count)
    while ((count < total)); do
        if ((SECONDS >= deadline)); then
            echo "$what: only $count/$total reached the sink" >&2
            break
        fi
        sleep 0.05
        count=$(sink_count)
    done
    echo "$count"
}
