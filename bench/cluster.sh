#!/usr/bin/env bash
# End-to-end throughput of a node on PostgreSQL against a node on the
# embedded store, and of two nodes sharing one PostgreSQL, on loopback:
#
#   smtp-source --> sluice (embedded | PostgreSQL) --> smtp-sink
#
# Each run: a fresh sink, fresh node(s), an empty store; "end to end" is
# from the first connection until the sink has counted every message.
# PostgreSQL is a server of the script's own (initdb and pg_ctl in a
# temporary directory, default settings: synchronous_commit = on, fsync
# on), so its commits are as durable as the embedded store's fsync.
#
# Commits per second: on PostgreSQL the WAL flushes (pg_stat_wal.wal_sync,
# what a durable commit waits for; every node's group commit shares them);
# on the embedded store the fsync/fdatasync calls of the node (counted by
# strace with a seccomp filter, so the node runs at full speed).
#
#   bench/cluster.sh                          # 10,000 messages of 10 KB at c=50
#   BENCH_MESSAGES=2000 bench/cluster.sh      # shorter
#   BENCH_RUNS="postgres postgres2" bench/cluster.sh
#   SLUICE_BIN=target/debug/sluice BENCH_MESSAGES=500 bench/cluster.sh   # try the script
set -euo pipefail
cd "$(dirname "$0")/.."

messages=${BENCH_MESSAGES:-10000}
size=${BENCH_SIZE:-10240}
sessions=${BENCH_CONCURRENCY:-50}
runs=${BENCH_RUNS:-"embedded postgres postgres2"}
timeout_s=$((messages / 20 + 60))

# 127.0.202.0/24 is used by no integration test and no other benchmark.
node_ip=(127.0.202.1 127.0.202.2)
sink_ip=127.0.202.10
dns_ip=127.0.202.11
pg_ip=127.0.202.12

as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo -n)

pg_bin=${SLUICE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
for tool in /usr/sbin/smtp-source /usr/sbin/smtp-sink "$pg_bin/pg_ctl" dnsmasq strace; do
    command -v "$tool" >/dev/null || {
        echo "cluster.sh: $tool is missing (scripts/test.sh installs the peers)" >&2
        exit 2
    }
done

if [[ -n ${SLUICE_BIN:-} ]]; then
    sluice_bin=$SLUICE_BIN
else
    echo "cluster.sh: building sluice (release)" >&2
    cargo build --release -q -p sluice --bin sluice
    sluice_bin=$PWD/${CARGO_TARGET_DIR:-target}/release/sluice
fi

work=$(mktemp -d /tmp/sluice-cluster-bench.XXXXXX)
chmod 755 "$work"
pids=()
sink_pid=
dns_pid=
pg_dir=

# PostgreSQL refuses to run as root: under root it runs as `postgres`.
pg() {
    local program=$1
    shift
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$pg_bin/$program" "$@"
    else
        "$pg_bin/$program" "$@"
    fi
}

stop_nodes() {
    local pid child
    for pid in "${pids[@]}"; do
        # Under strace the node is strace's child: stopping the node ends
        # strace, which then writes its counts.
        child=$(pgrep -P "$pid" || true)
        if [[ -n $child ]]; then
            kill $child 2>/dev/null || true
        else
            kill "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
stop_postgres() {
    if [[ -n $pg_dir ]]; then
        pg pg_ctl -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
        pg_dir=
    fi
}
cleanup() {
    stop_nodes
    stop_sink
    stop_postgres
    if [[ -n $dns_pid ]]; then
        kill "$dns_pid" 2>/dev/null || true
        wait "$dns_pid" 2>/dev/null || true
    fi
    "${as_root[@]}" rm -rf "$work"
}
trap cleanup EXIT

bench_name=cluster.sh
# shellcheck source=bench/lib.sh
source bench/lib.sh
start_dns

start_postgres() {
    pg_dir=$work/pg-$RANDOM
    mkdir -p "$pg_dir"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$pg_dir"
    pg initdb -D "$pg_dir/data" -U sluice --auth=trust -E UTF8 --locale=C >/dev/null
    pg_port=$(free_port $pg_ip)
    pg pg_ctl -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
        -o "-c listen_addresses=$pg_ip -p $pg_port -k $pg_dir -c max_connections=100" start >/dev/null
    pg createdb -h $pg_ip -p "$pg_port" -U sluice sluice
    store_url="postgres://sluice@$pg_ip:$pg_port/sluice"
}

psql_value() {
    pg psql -h $pg_ip -p "$pg_port" -U sluice -d sluice -Atc "$1"
}

# start_node N STORE_URL: node N (0 or 1) on the store; its SMTP address in targets[N].
start_node() {
    local n=$1 url=$2 ip=${node_ip[$1]} dir=$work/node-$1-$RANDOM smtp_port admin_port
    mkdir -p "$dir"
    smtp_port=$(free_port "$ip")
    admin_port=$(free_port "$ip")
    cat >"$dir/node.toml" <<TOML
[node]
hostname = "gw$n.bench.test"
data_dir = "$dir/data"

[store]
url = "$url"

[smtp]
listen = ["$ip:$smtp_port"]
# All the load comes from one address.
max_connections_per_ip = 1000

[delivery]
dns = "$dns_ip:$dns_port"
bind_address = "$ip"

[admin]
listen = "$ip:$admin_port"
TOML
    cat >"$dir/objects.toml" <<TOML
[[accepted_domain]]
name = "contoso.test"
type = "internal_relay"

[[outbound_connector]]
name = "Sink"
recipient_domains = ["contoso.test"]
smart_hosts = ["$sink_ip:$sink_port"]
TOML
    if [[ $url == embedded ]]; then
        strace_out=$dir/strace.txt
        RUST_LOG=warn strace -f -qq --seccomp-bpf -c -o "$strace_out" -e trace=fsync,fdatasync \
            "$sluice_bin" serve --config "$dir/node.toml" >"$dir/serve.log" 2>&1 &
    else
        RUST_LOG=warn "$sluice_bin" serve --config "$dir/node.toml" >"$dir/serve.log" 2>&1 &
    fi
    pids+=($!)
    wait_port "$ip" "$smtp_port" 30
    local deadline=$((SECONDS + 30))
    until [[ -s $dir/data/admin.token ]]; do
        ((SECONDS < deadline)) || { echo "cluster.sh: no admin.token" >&2; return 1; }
        sleep 0.1
    done
    # On a shared store the second node finds the objects the first stored.
    ((n > 0)) || "$sluice_bin" apply -f "$dir/objects.toml" --config "$dir/node.toml" >/dev/null
    targets[n]=$ip:$smtp_port
}

now() { date +%s.%N; }

# run NAME NODES: sends $messages at c=$sessions split over the nodes.
run() {
    local name=$1 nodes=$2 start accepted done_at count syncs_before=0 syncs=0 commits=- n
    local per_node=$((messages / nodes)) per_session=$((sessions / nodes))
    start_sink
    targets=()
    if [[ $name == embedded ]]; then
        start_node 0 embedded
    else
        start_postgres
        for ((n = 0; n < nodes; n++)); do
            start_node "$n" "$store_url"
        done
        syncs_before=$(psql_value "SELECT wal_sync FROM pg_stat_wal")
    fi
    start=$(now)
    local senders=()
    for ((n = 0; n < nodes; n++)); do
        timeout "$timeout_s" /usr/sbin/smtp-source -s "$per_session" -m "$per_node" -l "$size" \
            -f load@fabrikam.test -t bob@contoso.test -M bench-client.test "${targets[n]}" &
        senders+=($!)
    done
    for n in "${senders[@]}"; do
        wait "$n" || echo "cluster.sh: smtp-source against $name ended early" >&2
    done
    accepted=$(now)
    count=$(wait_for_sink $((per_node * nodes)) "$timeout_s" "cluster.sh: $name")
    done_at=$(now)
    if [[ $name == embedded ]]; then
        stop_nodes
        syncs=$(awk '$NF ~ /^f(data)?sync$/ { s += $4 } END { print s + 0 }' "$strace_out")
    else
        syncs=$(($(psql_value "SELECT wal_sync FROM pg_stat_wal") - syncs_before))
        stop_nodes
        stop_postgres
    fi
    stop_sink
    awk -v n="$count" -v s="$start" -v a="$accepted" -v d="$done_at" -v y="$syncs" -v name="$name" -v nodes="$nodes" \
        'BEGIN { t = d - s; printf "%-10s %5d %10d %12.0f %12.0f %12.0f %12.1f\n", name, nodes, n, n / (a - s), n / t, y / t, n / (y > 0 ? y : 1) }'
}

printf 'cluster benchmark: %d messages of %d bytes at c=%d, loopback, %s cores\n' \
    "$messages" "$size" "$sessions" "$(nproc)"
printf '%-10s %5s %10s %12s %12s %12s %12s\n' store nodes delivered "accepted/s" "end-end/s" "commits/s" "msgs/commit"
for name in $runs; do
    case $name in
    embedded) run embedded 1 ;;
    postgres) run postgres 1 ;;
    postgres2) run postgres2 2 ;;
    *) echo "cluster.sh: BENCH_RUNS takes embedded, postgres, postgres2; not $name" >&2 ;;
    esac
done
