#!/usr/bin/env bash
# Veth testbed for the data plane: a generator namespace and a device-under-test
# namespace joined by a multiqueue veth pair, addressed from 198.18.0.0/15
# (RFC 2544 benchmarking range) with no route out of either namespace.
#
#   scripts/testbed.sh up [NAME] [QUEUES]     build it (default NAME=dp, QUEUES=4)
#   scripts/testbed.sh inline [NAME] [QUEUES] build the inline-bridge testbed instead
#   scripts/testbed.sh down [NAME]            remove either
#   scripts/testbed.sh ecmp [ROUNDS]          the ECMP testbed: a BGP router (BIRD 2, L4 multipath
#                                             hashing) in front of three dataplane --lb instances
#                                             that announce the VIP, three backends; runs ROUNDS
#                                             (default 1) kill-and-return rounds under load, prints
#                                             the failover figures, and keeps it all up until Enter
#                                             (then removes it); builds what it runs
#   scripts/testbed.sh env [NAME]             print the variables the other scripts use
#
# Layout (NAME=dp):
#   netns dp-gen: gen0 198.18.0.1/24  <-- veth, QUEUES tx/rx queues -->  netns dp-dut: dut0 198.18.0.2/24
#   inline: dp-cli: cli0 198.18.1.1/24 <--> dp-br: br0 | br1 <--> dp-srv: srv0 198.18.1.2/24
#     veth delivers frames redirected in XDP only to a peer that runs XDP itself: put
#     a program on cli0/srv0 (latency-sink, xdp-baseline) when the bridge forwards in XDP
# Then, for example:
#   ip netns exec dp-dut target/release/dataplane --iface dut0 --queues 4
#   ip netns exec dp-br target/release/dataplane --iface br0 --peer br1 --queues 4 --dpi
set -euo pipefail

cmd=${1:-}
name=${2:-dp}
queues=${3:-4}
gen="$name-gen"
dut="$name-dut"

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "testbed.sh: needs root (network namespaces, veth); run it with sudo" >&2
        exit 1
    fi
}

down() {
    for ns in "$gen" "$dut" "$name-cli" "$name-br" "$name-srv"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

inline() {
    need_root
    local cli="$name-cli" br="$name-br" srv="$name-srv"
    if ip netns list | grep -qw -e "$cli" -e "$br" -e "$srv"; then
        echo "testbed.sh: namespaces $cli / $br / $srv already exist; run '$0 down $name' first" >&2
        exit 1
    fi
    trap 'echo "testbed.sh: setup failed, removing what was made" >&2; down' ERR
    for ns in "$cli" "$br" "$srv"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip -n "$cli" link add cli0 numtxqueues "$queues" numrxqueues "$queues" type veth \
        peer name br0 netns "$br" numtxqueues "$queues" numrxqueues "$queues"
    ip -n "$srv" link add srv0 numtxqueues "$queues" numrxqueues "$queues" type veth \
        peer name br1 netns "$br" numtxqueues "$queues" numrxqueues "$queues"
    for spec in "$cli:cli0:198.18.1.1/24" "$srv:srv0:198.18.1.2/24" "$br:br0:" "$br:br1:"; do
        IFS=: read -r ns ifname addr <<<"$spec"
        ip netns exec "$ns" sh -c "echo 1 > /proc/sys/net/ipv6/conf/$ifname/disable_ipv6"
        if [ -n "$addr" ]; then ip -n "$ns" addr add "$addr" dev "$ifname"; fi
        ip netns exec "$ns" ethtool -K "$ifname" tx off >/dev/null
        ip -n "$ns" link set "$ifname" up
    done
    trap - ERR
    echo "CLIENT_NS=$cli"
    echo "BRIDGE_NS=$br"
    echo "SERVER_NS=$srv"
    echo "CLIENT_MAC=$(ip -n "$cli" -br link show dev cli0 | awk '{print $3}')"
    echo "SERVER_MAC=$(ip -n "$srv" -br link show dev srv0 | awk '{print $3}')"
}

up() {
    need_root
    if ip netns list | grep -qw -e "$gen" -e "$dut"; then
        echo "testbed.sh: namespaces $gen / $dut already exist; run '$0 down $name' first" >&2
        exit 1
    fi
    trap 'echo "testbed.sh: setup failed, removing what was made" >&2; down' ERR
    ip netns add "$gen"
    ip netns add "$dut"
    ip -n "$gen" link set lo up
    ip -n "$dut" link set lo up
    ip -n "$gen" link add gen0 numtxqueues "$queues" numrxqueues "$queues" type veth \
        peer name dut0 netns "$dut" numtxqueues "$queues" numrxqueues "$queues"
    for pair in "$gen:gen0:198.18.0.1/24" "$dut:dut0:198.18.0.2/24"; do
        IFS=: read -r ns ifname addr <<<"$pair"
        # No IPv6 autoconfiguration chatter on the test link.
        ip netns exec "$ns" sh -c "echo 1 > /proc/sys/net/ipv6/conf/$ifname/disable_ipv6"
        ip -n "$ns" addr add "$addr" dev "$ifname"
        # veth would otherwise hand partial checksums to the receiver.
        ip netns exec "$ns" ethtool -K "$ifname" tx off >/dev/null
        ip -n "$ns" link set "$ifname" up
    done
    trap - ERR
    env_vars
}

env_vars() {
    echo "GEN_NS=$gen"
    echo "DUT_NS=$dut"
    echo "GEN_IF=gen0"
    echo "DUT_IF=dut0"
    echo "GEN_IP=198.18.0.1"
    echo "DUT_IP=198.18.0.2"
    echo "GEN_MAC=$(ip -n "$gen" -br link show dev gen0 | awk '{print $3}')"
    echo "DUT_MAC=$(ip -n "$dut" -br link show dev dut0 | awk '{print $3}')"
    echo "QUEUES=$(ip netns exec "$dut" sh -c 'ls -d /sys/class/net/dut0/queues/rx-* | wc -l')"
}

case "$cmd" in
    up) up ;;
    inline) inline ;;
    down) need_root; down ;;
    ecmp)
        need_root
        cd "$(dirname "$0")/.."
        cargo build --release -j2 -p dataplane -p bench >&2
        exec target/release/ecmp-failover --rounds "${2:-1}" --hold
        ;;
    env) env_vars ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
