# Helpers of the pktgen scripts: the kernel pktgen interface (as in the
# kernel's samples/pktgen/functions.sh) and the fallback to the bundled
# generator. Sourced after parameters.sh.

PGDIR=/proc/net/pktgen
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

info() { if [ -n "$VERBOSE" ]; then echo "INFO: $*" >&2; fi; }

# True when the kernel's pktgen is loaded. The scripts do not load kernel
# modules themselves (that changes the whole machine): 'modprobe pktgen'
# first to use it.
kernel_pktgen_available() {
    [ -d "$PGDIR" ]
}

pg_ctrl() { echo "$1" > "$PGDIR/pgctrl"; }
pg_thread() {
    local thread=$1; shift
    echo "$*" > "$PGDIR/kpktgend_$thread"
}
pg_set() {
    local dev=$1; shift
    echo "$*" > "$PGDIR/$dev"
}

# Sets up one kernel pktgen device per thread (DEV@N) like the samples.
kernel_setup() {
    local burst=$1 flows=$2
    pg_ctrl "reset"
    local t
    for ((t = F_THREAD; t < F_THREAD + THREADS; t++)); do
        local d="$DEV@$t"
        pg_thread "$t" "rem_device_all"
        pg_thread "$t" "add_device $d"
        pg_set "$d" "flag QUEUE_MAP_CPU"
        pg_set "$d" "count $COUNT"
        pg_set "$d" "clone_skb $SKB_CLONE"
        pg_set "$d" "pkt_size $((PKT_SIZE + 4))"
        pg_set "$d" "delay 0"
        pg_set "$d" "flag NO_TIMESTAMP"
        pg_set "$d" "dst_mac $DST_MAC"
        if [ -n "$IP6" ]; then pg_set "$d" "dst6 $DEST_IP"; else pg_set "$d" "dst $DEST_IP"; fi
        pg_set "$d" "udp_src_min 1024"
        pg_set "$d" "udp_src_max $((1024 + flows - 1))"
        pg_set "$d" "flag UDPSRC_RND"
        pg_set "$d" "burst $burst"
        if [ "$RATE" -gt 0 ]; then pg_set "$d" "ratep $RATE"; fi
    done
}

kernel_run() {
    echo "Running kernel pktgen on $DEV ($THREADS thread(s), Ctrl-C to stop; bounded by -n $COUNT)"
    timeout --foreground "$DURATION" bash -c "echo start > $PGDIR/pgctrl" || true
    local t
    for ((t = F_THREAD; t < F_THREAD + THREADS; t++)); do
        echo "Device: $DEV@$t"
        grep -A2 "Result:" "$PGDIR/$DEV@$t" || true
    done
}

# The bundled generator ($PKTGEN_BIN if set), built if needed.
fallback_binary() {
    if [ -n "${PKTGEN_BIN:-}" ]; then
        echo "$PKTGEN_BIN"
        return
    fi
    local bin="$REPO/target/release/pktgen"
    if [ ! -x "$bin" ]; then
        echo "Building the bundled generator (cargo build --release -p bench --bin pktgen)..." >&2
        (cd "$REPO" && cargo build --release -j2 -q -p bench --bin pktgen) >&2
    fi
    echo "$bin"
}

fallback_run() {
    local flows=$1
    echo "NOTICE: the kernel's pktgen module is not loaded here (no $PGDIR; 'modprobe pktgen' loads it"
    echo "        where the kernel has it); using the bundled generator with the same settings."
    local bin
    bin=$(fallback_binary)
    local rate=$((RATE * THREADS))
    local batch=$BURST
    if [ "$batch" -lt 2 ]; then batch=64; fi
    if [ "$batch" -gt 256 ]; then batch=256; fi
    local total=$((COUNT * THREADS))
    if [ "$COUNT" -eq 0 ]; then total=18446744073709551615; fi
    set -- --iface "$DEV" --dst-ip "$DEST_IP" --dst-mac "$DST_MAC" --size "$PKT_SIZE" \
        --threads "$THREADS" --first-cpu "$F_THREAD" --count "$total" --duration "$DURATION" \
        --rate "$rate" --flows "$flows" --engine "$ENGINE" --batch "$batch"
    info "$bin $*"
    "$bin" "$@"
}
