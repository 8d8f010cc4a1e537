#!/usr/bin/env bash
# Veth testbed for the data plane: a generator namespace and a device-under-test
# namespace joined by a multiqueue veth pair, addressed from 198.18.0.0/15
# (RFC 2544 benchmarking range) with no route out of either namespace.
#
#   scripts/testbed.sh up [NAME] [QUEUES]   build it (default NAME=dp, QUEUES=4)
#   scripts/testbed.sh down [NAME]          remove it
#   scripts/testbed.sh env [NAME]           print the variables the other scripts use
#
# Layout (NAME=dp):
#   netns dp-gen: gen0 198.18.0.1/24  <-- veth, QUEUES tx/rx queues -->  netns dp-dut: dut0 198.18.0.2/24
# Then, for example:
#   sudo ip netns exec dp-dut target/release/dataplane --iface dut0 --queues 4
set -euo pipefail

cmd=${1:-}
name=${2:-dp}
queues=${3:-4}
gen="$name-gen"
dut="$name-dut"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "testbed.sh: needs root (network namespaces, veth); run it with sudo" >&2
        exit 1
    fi
}

down() {
    ip netns del "$gen" 2>/dev/null || true
    ip netns del "$dut" 2>/dev/null || true
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
    down) need_root; down ;;
    env) env_vars ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
