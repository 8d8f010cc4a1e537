#!/usr/bin/env bash
# Prepares a real multiqueue NIC for the data plane (not needed on veth):
#   - N combined channels (RX/TX queue pairs), one per worker;
#   - a symmetric RSS key (0x6d5a repeated), so both directions of a flow
#     hash to the same queue and so reach the same worker (the XDP program
#     can only redirect a packet to the socket of the queue it arrived on);
#   - RSS over the 4-tuple for TCP and UDP, IPv4 and IPv6;
#   - the queues' interrupts pinned one per core, in queue order, from
#     FIRST_CPU (the workers' --cores should match).
#
#   scripts/nic-setup.sh [-n] IFACE QUEUES [FIRST_CPU]
#     -n   print the commands, change nothing
#
# Then: dataplane --iface IFACE --queues QUEUES --cores FIRST_CPU-...
# Changes the NIC's configuration until reboot or the next change; run it only
# on an interface you mean to dedicate to the data plane.
set -euo pipefail

dry=""
if [ "${1:-}" = "-n" ]; then dry=1; shift; fi
iface=${1:-}
queues=${2:-}
first_cpu=${3:-0}
if [ -z "$iface" ] || [ -z "$queues" ]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
if [ ! -e "/sys/class/net/$iface" ]; then
    echo "nic-setup.sh: no interface '$iface' here (see 'ip link')" >&2
    exit 2
fi
case $queues$first_cpu in
*[!0-9]*) echo "nic-setup.sh: QUEUES and FIRST_CPU must be whole numbers" >&2; exit 2 ;;
esac

run() {
    if [ -n "$dry" ]; then echo "$*"; else echo "+ $*"; "$@"; fi
}

run ethtool -L "$iface" combined "$queues"
# Key length: what the NIC reports (40 or 52 bytes on common NICs).
key_len=$( (ethtool -x "$iface" 2>/dev/null || true) | awk '/RSS hash key/{getline; print}' | tr -cd ':' | wc -c)
key_len=$((key_len > 0 ? key_len + 1 : 40))
key=$(for ((i = 0; i < key_len; i += 2)); do printf '6d:5a:'; done | cut -c1-$((key_len * 3 - 1)))
run ethtool -X "$iface" hkey "$key" equal "$queues"
for flow in tcp4 udp4 tcp6 udp6; do
    run ethtool -N "$iface" rx-flow-hash "$flow" sdfn
done

# One interrupt per queue, pinned in queue order.
cpus=$(nproc)
i=0
for irq in $(awk -v ifc="$iface" '$0 ~ ifc {sub(":", "", $1); print $1}' /proc/interrupts); do
    cpu=$(((first_cpu + i) % cpus))
    if [ -n "$dry" ]; then
        echo "echo $cpu > /proc/irq/$irq/smp_affinity_list"
    else
        echo "+ irq $irq -> cpu $cpu"
        echo "$cpu" > "/proc/irq/$irq/smp_affinity_list"
    fi
    i=$((i + 1))
done
if [ "$i" -eq 0 ]; then
    echo "nic-setup.sh: no interrupts named after $iface in /proc/interrupts (virtual NIC?); affinity left alone"
fi
echo "nic-setup.sh: done; run: dataplane --iface $iface --queues $queues --cores $first_cpu-$((first_cpu + queues - 1))"
