#!/usr/bin/env bash
# The data plane on a veth testbed, start to finish: install what is missing,
# build, bring up a 4-queue veth pair between a generator namespace and a
# device-under-test namespace with a real web and DNS server on the device,
# run `dataplane --queues 4` there in its default host mode (passive: the
# host keeps every packet), show curl and ping going through it as if it were
# absent, put a few seconds of generated UDP and TCP flows on it, print its
# per-queue counters, latency histograms and the flow log's record of the
# web request, and tear everything down (also on Ctrl-C or error).
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
srv_pid=""
cleanup() {
    if [ -n "$dp_pid" ] && kill -0 "$dp_pid" 2>/dev/null; then
        kill -TERM "$dp_pid" 2>/dev/null || true
        wait "$dp_pid" 2>/dev/null || true
    fi
    if [ -n "$srv_pid" ] && kill -0 "$srv_pid" 2>/dev/null; then
        kill -TERM "$srv_pid" 2>/dev/null || true
        wait "$srv_pid" 2>/dev/null || true
    fi
    scripts/testbed.sh down "$name" || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# curl from the generator to the device's web server (no name lookup).
fetch() {
    ip netns exec "$name-gen" curl -sS --noproxy '*' --max-time 5 -o /dev/null \
        -w 'HTTP %{http_code}, %{size_download} bytes in %{time_total} s' \
        --resolve www.demo.test:80:198.18.0.2 http://www.demo.test/
}

echo "== testbed: namespaces $name-gen and $name-dut, veth gen0 <-> dut0 with 4 queues, 198.18.0.0/24"
scripts/testbed.sh up "$name" 4 >/dev/null

echo "== a web (HTTP, HTTPS) and DNS server on the device, 198.18.0.2 (tests/peers/servers.py)"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=demo \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
ip netns exec "$name-dut" python3 tests/peers/servers.py 198.18.0.2 "$work/cert.pem" "$work/key.pem" \
    >"$work/servers.out" 2>&1 &
srv_pid=$!
for _ in $(seq 1 100); do
    grep -q ready "$work/servers.out" && break
    kill -0 "$srv_pid" 2>/dev/null || { cat "$work/servers.out"; exit 1; }
    sleep 0.1
done
echo "   without the data plane: curl http://www.demo.test/ -> $(fetch)"

echo "== dataplane --iface dut0 --queues 4 --dpi (in $name-dut; host mode, the default)"
ip netns exec "$name-dut" target/release/dataplane --iface dut0 --queues 4 --dpi --duration 60 \
    --stats-json "$work/stats.json" --flow-log "$work/flows.jsonl" \
    --timeout-tcp 5 --timeout-tcp-closing 1 >"$work/dataplane.out" 2>&1 &
dp_pid=$!
for _ in $(seq 1 100); do
    grep -q "dataplane: running" "$work/dataplane.out" && break
    kill -0 "$dp_pid" 2>/dev/null || { cat "$work/dataplane.out"; exit 1; }
    sleep 0.1
done
grep "dataplane: running" "$work/dataplane.out" || { cat "$work/dataplane.out"; exit 1; }
echo "   with the data plane:    curl http://www.demo.test/ -> $(fetch)"
echo "   ping: $(ip netns exec "$name-gen" ping -c 3 -i 0.2 -W 2 198.18.0.2 | grep 'packet loss')"

echo "== load: flowgen in $name-gen, 320 flows x 200 packets at 40 kpps"
ip netns exec "$name-gen" target/release/flowgen --dst-ip 198.18.0.2 --udp-flows 256 --tcp-flows 64 \
    --packets-per-flow 200 --rate 40000 --duration 10 "$@"

echo "== stopping the dataplane (SIGINT): it detaches XDP and prints its summary"
kill -INT "$dp_pid"
wait "$dp_pid"
dp_pid=""
cat "$work/dataplane.out"
echo
echo "== the flow log's record of the web request (--flow-log):"
grep '"www.demo.test"' "$work/flows.jsonl" | head -n 1
echo
echo "== stats JSON (--stats-json), first lines:"
head -n 12 "$work/stats.json"
