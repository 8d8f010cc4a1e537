#!/usr/bin/env bash
# The data plane on a veth testbed, start to finish: install what is missing,
# build, bring up a 4-queue veth pair between a generator namespace and a
# device-under-test namespace, run `dataplane --queues 4` under a few seconds
# of generated UDP and TCP flows, print its per-queue counters and latency
# histograms, and tear everything down (also on Ctrl-C or error).
#   scripts/demo.sh [FLOWGEN ARGS...]   e.g. --rate 100000 --packets-per-flow 500
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: needs root (XDP, AF_XDP, network namespaces); run 'sudo -E scripts/demo.sh'" >&2
    exit 1
fi
scripts/install-deps.sh
cargo build -j2 --release -p dataplane -p bench --bins

name="demo$$"
work=$(mktemp -d)
dp_pid=""
cleanup() {
    if [ -n "$dp_pid" ] && kill -0 "$dp_pid" 2>/dev/null; then
        kill -TERM "$dp_pid" 2>/dev/null || true
        wait "$dp_pid" 2>/dev/null || true
    fi
    scripts/testbed.sh down "$name" || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== testbed: namespaces $name-gen and $name-dut, veth gen0 <-> dut0 with 4 queues, 198.18.0.0/24"
scripts/testbed.sh up "$name" 4 >/dev/null

echo "== dataplane --iface dut0 --queues 4 (in $name-dut)"
ip netns exec "$name-dut" target/release/dataplane --iface dut0 --queues 4 --duration 60 \
    --stats-json "$work/stats.json" >"$work/dataplane.out" 2>&1 &
dp_pid=$!
for _ in $(seq 1 100); do
    grep -q "dataplane: running" "$work/dataplane.out" && break
    kill -0 "$dp_pid" 2>/dev/null || { cat "$work/dataplane.out"; exit 1; }
    sleep 0.1
done
grep "dataplane: running" "$work/dataplane.out" || { cat "$work/dataplane.out"; exit 1; }

echo "== load: flowgen in $name-gen, 320 flows x 200 packets at 40 kpps"
ip netns exec "$name-gen" target/release/flowgen --dst-ip 198.18.0.2 --udp-flows 256 --tcp-flows 64 \
    --packets-per-flow 200 --rate 40000 --duration 10 "$@"

echo "== stopping the dataplane (SIGINT): it detaches XDP and prints its summary"
kill -INT "$dp_pid"
wait "$dp_pid"
dp_pid=""
cat "$work/dataplane.out"
echo
echo "== stats JSON (--stats-json), first lines:"
head -n 12 "$work/stats.json"
