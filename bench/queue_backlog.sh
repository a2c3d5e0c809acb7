#!/usr/bin/env bash
# A queue holding a real backlog: N messages of 1 KB deferred to a dead
# smart host (a loopback port where nothing listens, so every connection
# is refused). Prints figures; does not gate.
#
#   smtp-source --> sluice --> 127.0.202.9:PORT (refuses)
#
# Figures: enqueue rate over the first and the last 10,000 messages, with
# sluice's CPU time per message over each (the whole process and its store
# writer thread: steadier than the rate on a machine shared with others,
# so the load average is printed beside them), RSS
# with the backlog queued, store size, first page of `queue list` and
# `queue summary` times, connection attempts to the dead host, entry
# writes to park its mail (each message once, plus each failed probe's
# own entry: a failed probe does not rewrite the parked mail); then twice,
# after a clean stop (SIGTERM) and after a kill -9: time from the restart
# to the first 220 and to the first delivery attempt; then connection
# attempts per minute and the entries parked again meanwhile.
#
#   bench/queue_backlog.sh                       # 1,000,000 messages
#   BENCH_MESSAGES=200000 BENCH_WATCH=60 bench/queue_backlog.sh
#   BENCH_KEEP=1 ...                             # keep the data directory
#   BENCH_PROBE=10s ...                          # probe the dead host often
#   BENCH_FIRST_WAIT=10 ...                      # wait 10 s, not 120, for the
#                                                # first attempt after a restart
set -euo pipefail
cd "$(dirname "$0")/.."

messages=${BENCH_MESSAGES:-1000000}
sessions=${BENCH_SESSIONS:-50}
size=1024
edge=10000
((messages > 2 * edge)) || { echo "queue_backlog.sh: BENCH_MESSAGES must exceed $((2 * edge))" >&2; exit 2; }
# How long to watch connection attempts after the restart.
watch_s=${BENCH_WATCH:-120}
# BENCH_PROBE=10s: the dead destination is probed every 10 s rather than
# after 1 min, doubling to 30 min. Parked mail waits on its destination,
# so a failed probe writes one entry whatever the backlog.
probe=${BENCH_PROBE:-}
# How long to wait for the first delivery attempt after each restart.
first_wait_s=${BENCH_FIRST_WAIT:-120}
# BENCH_BUILD=0 uses the release binary as it is.
build=${BENCH_BUILD:-1}
keep=${BENCH_KEEP:-0}
# Seconds the node stays down before each restart. A node that starts
# with mail parked for a dead destination probes it once at once, then
# with the backoff; parked mail is due only for a recheck 30 min to 4 h
# after it parked, so none is attempted message by message.
down_s=${BENCH_DOWN:-0}

# 127.0.202.0/24 is not used by the integration tests or relay.sh.
sluice_ip=127.0.202.1
dead_ip=127.0.202.9

[[ -x /usr/sbin/smtp-source ]] || { echo "queue_backlog.sh: needs smtp-source (postfix)" >&2; exit 2; }

if [[ $build == 1 ]]; then
    echo "queue_backlog.sh: building sluice (release)" >&2
    cargo build --release -q -p sluice --bin sluice
fi
sluice_bin=${CARGO_TARGET_DIR:-target}/release/sluice

work=$(mktemp -d /tmp/sluice-backlog.XXXXXX)
sluice_pid=
stop_sluice() { # [signal]
    if [[ -n $sluice_pid ]]; then
        kill "-${1:-9}" "$sluice_pid" 2>/dev/null || true
        wait "$sluice_pid" 2>/dev/null || true
        sluice_pid=
    fi
}
cleanup() {
    stop_sluice
    if [[ $keep == 1 ]]; then
        echo "queue_backlog.sh: data kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"
}
now() { date +%s.%N; }
elapsed() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$1" "$2"; }

smtp_port=$(free_port $sluice_ip)
admin_port=$(free_port $sluice_ip)
dead_port=$(free_port $dead_ip)
cat >"$work/node.toml" <<TOML
[node]
hostname = "backlog.contoso.test"
data_dir = "$work/data"

[smtp]
listen = ["$sluice_ip:$smtp_port"]
# smtp-source reconnects for each message: closing sessions overlap new ones.
max_connections_per_ip = 1000

[admin]
listen = "$sluice_ip:$admin_port"
TOML
if [[ -n $probe ]]; then
    printf '\n[delivery]\ndestination_probe = "%s"\ndestination_probe_max = "%s"\n' "$probe" "$probe" >>"$work/node.toml"
fi
cat >"$work/objects.toml" <<TOML
[[accepted_domain]]
name = "contoso.test"
type = "internal_relay"

# The load comes from on premises: no SPF/DKIM/DMARC lookups per message.
[[inbound_connector]]
name = "Load"
type = "on_premises"
sender_ip_addresses = ["127.0.0.0/8"]

[[outbound_connector]]
name = "Dead"
recipient_domains = ["contoso.test"]
smart_hosts = ["$dead_ip:$dead_port"]
TOML

log=$work/serve.log
start_sluice() {
    RUST_LOG="warn,sluice::deliver=info,sluice::queue=debug" "$sluice_bin" serve --config "$work/node.toml" >>"$log" 2>&1 &
    sluice_pid=$!
}

# Seconds until the node greets with 220 (polled every 10 ms).
wait_greeting() {
    python3 - "$sluice_ip" "$smtp_port" <<'PY'
import socket, sys, time
start = time.monotonic()
while time.monotonic() - start < 600:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
            if s.recv(512).startswith(b"220"):
                print(f"{time.monotonic() - start:.3f}")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.01)
sys.exit(1)
PY
}

attempts() { grep -c "next hop failed" "$log" || true; }
# Entries written to park mail of a down destination, so far (builds
# before parked mail was indexed logged them as "deferred in bulk").
parked_writes() {
    grep -E "(parked|deferred) in bulk" "$log" | sed -En 's/.*(parked|deferred)=([0-9]+).*/\2/p' |
        awk '{ n += $1 } END { print n + 0 }'
}

api() { # path -> seconds (body to $work/api.out)
    local token t0 t1
    token=$(cat "$work/data/admin.token")
    t0=$(now)
    curl -sf -H "Authorization: Bearer $token" "http://$sluice_ip:$admin_port/api/v1/$1" >"$work/api.out"
    t1=$(now)
    elapsed "$t0" "$t1"
}

rss_mb() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$sluice_pid/status"; }

# CPU ticks (user + system) of the node, and of its store writer thread.
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$sluice_pid/stat"; }
writer_ticks() {
    local task
    for task in /proc/"$sluice_pid"/task/*; do
        if [[ $(cat "$task/comm" 2>/dev/null) == store-writer ]]; then
            awk '{ print $14 + $15 }' "$task/stat"
            return
        fi
    done
    echo 0
}

send() { # count -> "seconds node-CPU-µs/msg writer-CPU-µs/msg load"
    local t0 t1 c0 c1 w0 w1
    t0=$(now) c0=$(cpu_ticks) w0=$(writer_ticks)
    /usr/sbin/smtp-source -s "$sessions" -m "$1" -l "$size" \
        -f load@fabrikam.test -t bob@contoso.test -M bench-client.test "$sluice_ip:$smtp_port"
    t1=$(now) c1=$(cpu_ticks) w1=$(writer_ticks)
    echo "$(elapsed "$t0" "$t1") $(((c1 - c0) * 1000000 / ticks / $1)) $(((w1 - w0) * 1000000 / ticks / $1)) $(cut -d' ' -f1 /proc/loadavg)"
}

start_sluice
wait_greeting >/dev/null
until [[ -s $work/data/admin.token ]]; do sleep 0.1; done
"$sluice_bin" apply -f "$work/objects.toml" --config "$work/node.toml" >/dev/null

echo "queue_backlog.sh: $messages messages of $size bytes to a dead smart host ($sessions sessions)" >&2
fill_start=$(now)
read -r first_s first_cpu first_writer first_load < <(send $edge)
send $((messages - 2 * edge)) >/dev/null
read -r last_s last_cpu last_writer last_load < <(send $edge)
fill_end=$(now)
fill_s=$(elapsed "$fill_start" "$fill_end")
fill_attempts=$(attempts)
fill_parked=$(parked_writes)

summary_s=$(api "queue/summary")
queued=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["total"])' "$work/api.out")
list_s=$(api "queue?limit=100")
rss=$(rss_mb)
store_mb=$(du -m "$work/data/sluice.redb" | cut -f1)

# Restarts with the backlog on disk: seconds to the first 220 and to the
# first delivery attempt (a connection to the dead host), in $greet and
# $first (set here, not in a subshell: start_sluice sets $sluice_pid).
restart_times() {
    local before restart deadline
    sleep "$down_s"
    before=$(attempts)
    restart=$(now)
    start_sluice
    greet=$(wait_greeting)
    first="none within $first_wait_s"
    deadline=$((SECONDS + first_wait_s))
    while ((SECONDS < deadline)); do
        if (($(attempts) > before)); then
            first=$(elapsed "$restart" "$(now)")
            break
        fi
        sleep 0.05
    done
}

# A clean stop first (SIGTERM: the node closes its store), then a kill -9.
stop_start=$(now)
stop_sluice TERM
stop_s=$(elapsed "$stop_start" "$(now)")
restart_times
clean_greet_s=$greet clean_first_s=$first
stop_sluice 9
restart_times
greet_s=$greet first_attempt_s=$first
before=$(attempts)
parked_before=$(parked_writes)
restart_rss=$(rss_mb)
sleep "$watch_s"
watched=$(($(attempts) - before))
watched_parked=$(($(parked_writes) - parked_before))
restart_summary_s=$(api "queue/summary")
restart_list_s=$(api "queue?limit=100")

rate() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / float(sys.argv[2]):.0f}")' "$1" "$2"; }
cat <<REPORT
messages queued (queue summary)   $queued of $messages
enqueue rate, first $edge          $(rate $edge "$first_s") msg/s (load $first_load)
  sluice CPU per message          ${first_cpu} µs, store writer ${first_writer} µs
enqueue rate, last $edge           $(rate $edge "$last_s") msg/s (load $last_load)
  sluice CPU per message          ${last_cpu} µs, store writer ${last_writer} µs
whole fill                        ${fill_s} s ($(rate "$messages" "$fill_s") msg/s)
RSS with the backlog queued       ${rss} MB
store file                        ${store_mb} MB ($(python3 -c "print(f'{$store_mb * 1048576 / $messages:.0f}')") bytes per message)
queue summary                     ${summary_s} s
queue list, first page (100)      ${list_s} s
connections to the dead host      ${fill_attempts} during the fill
entries written to park           ${fill_parked} during the fill (of $messages messages)
clean stop (SIGTERM)              ${stop_s} s
restart after it, to first 220    ${clean_greet_s} s
  to first delivery attempt       ${clean_first_s} s
restart (kill -9) to first 220    ${greet_s} s
  to first delivery attempt       ${first_attempt_s} s
RSS after restart                 ${restart_rss} MB
connections after restart         ${watched} in ${watch_s} s ($(python3 -c "print(f'{$watched * 60 / $watch_s:.1f}')")/min)
entries parked again after it     ${watched_parked} in ${watch_s} s
queue summary after restart       ${restart_summary_s} s
queue list after restart          ${restart_list_s} s
REPORT
