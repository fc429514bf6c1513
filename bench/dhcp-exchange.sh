#!/bin/sh
# Relayed DHCPv6 4-message exchanges per second (IA_NA + IA_PD), lq6 vs Debian kea-dhcp6 2.2.
#
# Both servers run on the same machine in the same run, one at a time, in a network namespace
# with only lo (2001:db8:ffff::1/128 added), with the same pools:
#   addresses 2001:db8:5::/64, prefixes 2001:db8:8000::/33 delegated as /56, lifetimes 3000/4000.
# lq6: embedded SQLite store (WAL; the store fsyncs each commit group before answering):
#   every lease is durable before its REPLY.
# Kea: memfile with persist=true (lease file written, not fsynced), store-extended-info on.
#
# For each server, perfdhcp -6 -A1 -e address-and-prefix runs at increasing -r until more than
# 1 % of the exchanges drop; the table shows the highest rate at <= 1 % drops and the exchange
# rate perfdhcp measured there. Each step starts a fresh server and an empty lease database.
#
# The system default socket receive buffer is raised to 4 MiB during the run (see below).
#
# Usage (root): [TRIES=2] [LQ6_UDP_WORKERS=n] bench/dhcp-exchange.sh [seconds-per-step] [rates...]
# Needs: perfdhcp (kea-admin), kea-dhcp6 (kea-dhcp6-server), iproute2; builds lq6 --release.
set -eu
SECS=${1:-5}
TRIES=${TRIES:-2}
if [ $# -gt 0 ]; then shift; fi
RATES=${*:-"1000 2000 3000 4000 5000 6000 7000 8000 9000 10000 11000 12000 13000 14000 16000 18000 20000"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NS=lq6bench$$
WORK=$(mktemp -d)
SRV=2001:db8:ffff::1
PIDS=""

OLD_RMEM=$(sysctl -n net.core.rmem_default)
cleanup() {
    sysctl -qw net.core.rmem_default="$OLD_RMEM" || true
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || { echo "needs root (network namespace)"; exit 1; }
command -v perfdhcp >/dev/null || { echo "perfdhcp missing (apt install kea-admin)"; exit 1; }
command -v kea-dhcp6 >/dev/null || { echo "kea-dhcp6 missing (apt install kea-dhcp6-server)"; exit 1; }

(cd "$ROOT" && cargo build --release -q -p lq6)
LQ6="$ROOT/target/release/lq6"

# perfdhcp's reply socket uses the default receive buffer (208 KiB): a burst of replies (a group
# commit answers hundreds of clients at once) overflows it while perfdhcp waits for the CPU, and
# those are counted as drops of the server. Give every socket 4 MiB for the run (restored on exit).
sysctl -qw net.core.rmem_default=4194304
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add $SRV/128 dev lo

cat > "$WORK/lq6.toml" <<EOT
[server]
duid = "ll:1:02:00:00:00:00:01"
listen = ["[$SRV]:547"]
udp_workers = ${LQ6_UDP_WORKERS:-1}
[store]
path = "$WORK/lq6/leases.db"
[lifetimes]
preferred = 3000
valid = 4000
[[links]]
name = "perf"
prefixes = ["::1/128", "2001:db8:5::/64"]
[[links.pools]]
prefix = "2001:db8:5::/64"
[[links.pd_pools]]
prefix = "2001:db8:8000::/33"
delegated_len = 56
[leasequery.tcp]
enabled = false
EOT

cat > "$WORK/kea.json" <<EOT
{ "Dhcp6": {
  "interfaces-config": { "interfaces": [ "lo/$SRV" ] },
  "server-id": { "type": "LL", "htype": 1, "identifier": "020000000002", "persist": false },
  "lease-database": { "type": "memfile", "persist": true, "name": "$WORK/kea/leases6.csv", "lfc-interval": 0 },
  "store-extended-info": true,
  "preferred-lifetime": 3000, "valid-lifetime": 4000, "renew-timer": 1500, "rebind-timer": 2400,
  "subnet6": [ {
    "id": 1, "subnet": "2001:db8:5::/64",
    "relay": { "ip-addresses": [ "::1" ] },
    "pools": [ { "pool": "2001:db8:5::/64" } ],
    "pd-pools": [ { "prefix": "2001:db8:8000::", "prefix-len": 33, "delegated-len": 56 } ]
  } ],
  "loggers": [ { "name": "kea-dhcp6", "severity": "WARN", "output_options": [ { "output": "$WORK/kea/kea.log" } ] } ]
} }
EOT

start() { # $1 = lq6|kea
    rm -rf "$WORK/lq6" "$WORK/kea"; mkdir -p "$WORK/lq6" "$WORK/kea"
    if [ "$1" = lq6 ]; then
        LQ6_LOG=warn ip netns exec "$NS" "$LQ6" serve --quiet --config "$WORK/lq6.toml" 2>"$WORK/lq6/log" &
    else
        KEA_PIDFILE_DIR="$WORK/kea" KEA_LOCKFILE_DIR="$WORK/kea" \
            ip netns exec "$NS" kea-dhcp6 -c "$WORK/kea.json" >"$WORK/kea/out" 2>&1 &
    fi
    SPID=$!
    PIDS="$PIDS $SPID"
    sleep 3
}
stop() { kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; }

# Prints "<drop%> <exchanges/s>" for one run of perfdhcp at rate $1.
run() {
    out=$(ip netns exec "$NS" perfdhcp -6 -A1 -l ::1 -e address-and-prefix -r "$1" -R 100000000 \
          -p "$SECS" -W 500000 $SRV 2>&1 || true)
    echo "$out" | awk -v secs="$SECS" '
        /Statistics for: SOLICIT-ADVERTISE/ { s = 1 } /Statistics for: REQUEST-REPLY/ { s = 2 }
        /sent packets:/ { sent[s] = $3 } /received packets:/ { recv[s] = $3 }
        END {
            if (sent[1] == 0) { print "100 0"; exit }
            lost = (sent[1] - recv[1]) + (sent[2] - recv[2]);
            printf "%.2f %.0f\n", 100 * lost / sent[1], recv[2] / (secs + 0.5) }'
}

# Both servers climb the same ladder, interleaved rate by rate, so that load from anything else
# on the machine hits both alike. A server stops climbing after its first step above 1 % drops.
L_RATE=0; L_X=0; K_RATE=0; K_X=0; L_DONE=0; K_DONE=0
for r in $RATES; do
    for srv in lq6 kea; do
        if [ $srv = lq6 ] && [ $L_DONE = 1 ]; then continue; fi
        if [ $srv = kea ] && [ $K_DONE = 1 ]; then continue; fi
        # Up to TRIES runs per step (the same for both servers): a step passes if one run stays
        # within 1 % drops, so a burst of load from elsewhere on the machine does not end a ladder.
        try=0
        while :; do
            try=$((try + 1))
            start $srv
            set -- $(run "$r")
            stop
            echo "  $srv -r $r (run $try): drops $1 %, $2 exchanges/s" >&2
            over=$(awk -v d="$1" 'BEGIN { print (d > 1.0) ? 1 : 0 }')
            if [ "$over" = 0 ] || [ $try -ge "$TRIES" ]; then break; fi
        done
        if [ $srv = lq6 ]; then
            if [ "$over" = 1 ]; then L_DONE=1; else L_RATE=$r; L_X=$2; fi
        else
            if [ "$over" = 1 ]; then K_DONE=1; else K_RATE=$r; K_X=$2; fi
        fi
    done
    if [ $L_DONE = 1 ] && [ $K_DONE = 1 ]; then break; fi
done

printf '\nlq6: sqlite store, every lease durable (fsync) before its REPLY; kea-dhcp6 %s: memfile, persist on\n' "$(kea-dhcp6 -v)"
printf '\n| server | max -r with <= 1 %% drops | exchanges/s at that rate |\n|---|---|---|\n'
printf '| lq6 | %s | %s |\n' "$L_RATE" "$L_X"
printf '| kea-dhcp6 2.2 | %s | %s |\n' "$K_RATE" "$K_X"
awk -v l="$L_X" -v k="$K_X" 'BEGIN { if (k > 0) printf "| ratio lq6/Kea | | %.2f |\n", l / k }'
