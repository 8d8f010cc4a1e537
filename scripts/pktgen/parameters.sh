# Common flags of the pktgen scripts, as in the kernel's samples/pktgen
# (parameters.sh). Sourced; sets DEV DEST_IP DST_MAC PKT_SIZE THREADS COUNT
# BURST F_THREAD IP6 VERBOSE DEBUG FLOWS RATE ENGINE.

usage() {
    cat <<USAGE
Usage: $0 -i ethX [options]
  -i : (\$DEV)       output interface/device (required)
  -s : (\$PKT_SIZE)  packet size in bytes, without the 4-byte FCS (default 60)
  -d : (\$DEST_IP)   destination IP; CIDR or MIN-MAX ranges are not supported (default 198.18.0.2)
  -m : (\$DST_MAC)   destination MAC address (default: broadcast ff:ff:ff:ff:ff:ff)
  -t : (\$THREADS)   threads to start, one per core (default 1)
  -f : (\$F_THREAD)  index of the first thread's core (default 0)
  -c : (\$SKB_CLONE) SKB clones per packet (kernel pktgen only; ignored by the fallback)
  -n : (\$COUNT)     packets to send per thread, 0 = until -w seconds (default 100000)
  -b : (\$BURST)     burst: packets sent back to back (kernel pktgen), frames per batch (fallback, 1-256)
  -l : (\$FLOWS)     flows: source ports varied over this many values (default 1)
  -r : (\$RATE)      packets per second per thread, 0 = as fast as possible (default 0)
  -w : (\$DURATION)  stop after this many seconds (default 30; every run is bounded)
  -e : (\$ENGINE)    fallback engine: auto|xdp-live|afxdp|afpacket (default auto)
  -6 : (\$IP6)       IPv6 (give -d an IPv6 address)
  -v : (\$VERBOSE)   verbose
  -x : (\$DEBUG)     debug (set -x)
  -h :               this help

With the kernel's pktgen module loaded (/proc/net/pktgen exists; the script
does not load modules itself: 'modprobe pktgen'), the script drives it like
the kernel's samples; otherwise it says so and runs the bundled generator
(target/release/pktgen, built if missing) with the same settings, printing
which engine it used.
USAGE
}

PKT_SIZE=60
DEST_IP=""
DST_MAC="ff:ff:ff:ff:ff:ff"
THREADS=1
F_THREAD=0
SKB_CLONE=0
COUNT=100000
BURST=1
FLOWS=1
RATE=0
DURATION=30
ENGINE=auto
IP6=""
VERBOSE=""
DEBUG=""
DEV=""

while getopts "s:i:d:m:f:t:c:n:b:l:r:w:e:vxh6" option; do
    case $option in
    i) DEV=$OPTARG ;;
    s) PKT_SIZE=$OPTARG ;;
    d) DEST_IP=$OPTARG ;;
    m) DST_MAC=$OPTARG ;;
    f) F_THREAD=$OPTARG ;;
    t) THREADS=$OPTARG ;;
    c) SKB_CLONE=$OPTARG ;;
    n) COUNT=$OPTARG ;;
    b) BURST=$OPTARG ;;
    l) FLOWS=$OPTARG ;;
    r) RATE=$OPTARG ;;
    w) DURATION=$OPTARG ;;
    e) ENGINE=$OPTARG ;;
    6) IP6=6 ;;
    v) VERBOSE=yes ;;
    x) DEBUG=yes ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

if [ -z "$DEV" ]; then
    echo "ERROR: an output device is required (-i ethX); see -h" >&2
    exit 2
fi
if [ ! -e "/sys/class/net/$DEV" ]; then
    echo "ERROR: no interface '$DEV' in this network namespace (see 'ip link')" >&2
    exit 2
fi
for n in "$PKT_SIZE" "$THREADS" "$F_THREAD" "$COUNT" "$BURST" "$FLOWS" "$RATE"; do
    case $n in
    '' | *[!0-9]*) echo "ERROR: '$n' is not a whole number; see -h" >&2; exit 2 ;;
    esac
done
if [ -z "$DEST_IP" ]; then
    if [ -n "$IP6" ]; then DEST_IP="2001:db8::2"; else DEST_IP="198.18.0.2"; fi
fi
if [ -n "$DEBUG" ]; then set -x; fi
