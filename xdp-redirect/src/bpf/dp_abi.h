/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel/user ABI of the data plane: map names, key and value layouts,
 * action codes, counter indexes and limits. This header is the only source of
 * truth: the XDP program includes it, and `xdp-redirect/build.rs` runs bindgen
 * over it to generate the Rust types (with size/offset assertions). Never
 * hand-copy anything from here into Rust.
 *
 * Rules for every struct here: fixed-width types only, explicit padding, no
 * bool, and each field says its byte order.
 */
#ifndef DP_ABI_H
#define DP_ABI_H

#include <linux/types.h>

/* Map names, as they appear in the object file and in bpffs pins. */
#define DP_MAP_XSKS "xsks"
#define DP_MAP_VERDICTS "verdicts"   /* IPv6 flows, keyed by struct dp_flow_key */
#define DP_MAP_VERDICTS4 "verdicts4" /* IPv4 flows, keyed by struct dp_flow_key4 */
#define DP_MAP_COUNTERS "counters"
#define DP_MAP_PEERS "peers" /* DEVMAP: port side -> the other port (bridge mode) */
#define DP_MAP_HEARTBEAT "heartbeat" /* mmapable ARRAY: queue -> last worker heartbeat; DP_HEARTBEAT_CLOCK -> the latest of them */
/* Host mode: ARRAY_OF_MAPS, worker -> its RINGBUF of struct dp_host_record copies. */
#define DP_MAP_HOST_RINGS "host_rings"
/* Load balancer (--lb): see the "Load balancer" section below. */
#define DP_MAP_LB_SERVICES "lb_services" /* HASH: struct dp_lb_service_key -> struct dp_lb_service */
#define DP_MAP_LB_RINGS "lb_rings"       /* ARRAY: lookup tables, two per service (see dp_lb_service.table) */
#define DP_MAP_LB_BACKENDS "lb_backends" /* ARRAY: backend index -> struct dp_lb_backend */
#define DP_MAP_LB_CONNS "lb_conns"       /* LRU HASH: struct dp_lb_conn_key -> struct dp_lb_conn */
#define DP_MAP_LB_NAT "lb_nat"           /* LRU HASH (nat mode): reply key -> struct dp_lb_nat */
#define DP_MAP_LB_STATS "lb_stats"       /* PERCPU ARRAY: services, then backends -> struct dp_lb_stats */

/* Program (function) name of the XDP entry point. */
#define DP_PROG_NAME "dp_xdp"
/* Host mode: the TC egress program that copies what the host sends. */
#define DP_PROG_EGRESS_NAME "dp_tc_egress"

/*
 * Limits, each with the reason for its size.
 */
enum dp_limits {
	/* XSKMAP slots: one per RX queue; 256 covers every NIC we know of
	 * (ice tops out at 256 combined channels). */
	DP_MAX_QUEUES = 256,
	/* Slot of the `heartbeat` array after the queues' slots: the latest
	 * heartbeat of any worker (CLOCK_MONOTONIC_COARSE ns, 0 until the first).
	 * The program stamps `last_seen_ns` from it: one load, where
	 * bpf_ktime_get_coarse_ns() costs ~25 ns a packet on this machine kind.
	 * A busy worker beats every batch, an idle one at least every 100 ms. */
	DP_HEARTBEAT_CLOCK = DP_MAX_QUEUES,
	/* Ports a program instance serves: the monitored interface (side 0)
	 * and, in bridge mode, its peer (side 1). The XSKMAP holds one socket
	 * per (side, queue) at index side * DP_MAX_QUEUES + queue. */
	DP_MAX_PORTS = 2,
	/* Default capacity of each verdict map (`verdicts4` for IPv4 flows,
	 * `verdicts` for IPv6). An entry is a 16 B (IPv4) or 40 B key, a 32 B
	 * value and ~60 B of LRU/hash bookkeeping, so the two maps take
	 * ~63 MiB of kernel memory at 262144 entries each. Overridable at load
	 * time (`--verdict-map-size`). */
	DP_VERDICT_ENTRIES_DEFAULT = 262144,
	/* 802.1Q / 802.1ad tags parsed (QinQ = 2). A third tag is passed as
	 * unparsed rather than guessed at. */
	DP_MAX_VLAN_TAGS = 2,
	/* IPv6 extension headers walked before giving up (hop-by-hop, routing,
	 * destination options, fragment, AH). Real traffic rarely has more than
	 * two; the bound keeps the verifier's state count small. */
	DP_MAX_IPV6_EXT = 4,
	/* Host mode: most bytes of a packet copied to user space. A 1500-byte
	 * MTU frame with two VLAN tags fits; longer packets (jumbo frames, the
	 * host's GSO super-packets on egress) are cut here and the record says
	 * so (caplen < len). */
	DP_HOST_SNAP = 2048,
	/* Host mode: bytes of each worker's ring buffer (a power of two of
	 * pages, as the kernel requires): ~2000 full-size copies, many more
	 * small ones. */
	DP_HOST_RING_BYTES = 4 << 20,
};

/* What the kernel does with a flow that has an entry in `verdicts4` or `verdicts`. */
enum dp_action {
	/* No decision: the entry only carries counters (not used by the
	 * program for the fast path; a miss is what sends a flow to user space). */
	DP_ACTION_NONE = 0,
	/* Hand the packet to the kernel network stack (XDP_PASS). */
	DP_ACTION_PASS = 1,
	/* Drop in XDP. */
	DP_ACTION_DROP = 2,
	/* Bridge mode: send out of the other port (bpf_redirect_map on
	 * `peers`), never touching the stack or user space. Outside bridge mode
	 * the program treats it as PASS. */
	DP_ACTION_FORWARD = 3,
};

/* Bits of `struct dp_verdict.flags`, set by the program. */
enum dp_verdict_flags {
	/* A TCP FIN or RST of the flow went through the kernel path: user
	 * space applies the shorter closing timeout. */
	DP_VERDICT_F_CLOSING = 1,
};

/* Address families in `struct dp_flow_key.family` (numerically AF_INET/AF_INET6). */
enum dp_family {
	DP_FAMILY_IPV4 = 2,
	DP_FAMILY_IPV6 = 10,
};

/*
 * Direction-independent flow key.
 *
 * The two endpoints (address, port) are ordered so that both directions of a
 * flow give the same key: endpoint A is the one whose address is smaller when
 * the 16 address bytes are compared as unsigned bytes in order (memcmp), and on
 * equal addresses, whose port is smaller as a number. IPv4 addresses occupy the
 * first 4 bytes of `addr_a`/`addr_b`, the other 12 are zero.
 *
 * Ports: TCP/UDP ports; for ICMP/ICMPv6 echo request and reply, both are the
 * echo identifier; otherwise zero.
 */
struct dp_flow_key {
	__u8 addr_a[16]; /* network byte order */
	__u8 addr_b[16]; /* network byte order */
	__be16 port_a;   /* network byte order */
	__be16 port_b;   /* network byte order */
	__u8 family;     /* enum dp_family */
	__u8 proto;      /* IP protocol number (IPPROTO_*) */
	__u16 vlan;      /* innermost VLAN id (12 bits), 0 when untagged; host byte order */
};

/*
 * Key of the IPv4 verdict map (`verdicts4`): the IPv4 fields of a
 * `struct dp_flow_key` with the same endpoint order, in 16 bytes instead of
 * 40. The kernel hashes and compares the whole key on every lookup, and the
 * lookup is most of the cost of a decided packet, so IPv4 flows (nearly all
 * of them on most links) get their own map, as in Suricata's XDP bypass
 * (`flow_table_v4` / `flow_table_v6`).
 */
struct dp_flow_key4 {
	__be32 addr_a;   /* network byte order */
	__be32 addr_b;   /* network byte order */
	__be16 port_a;   /* network byte order */
	__be16 port_b;   /* network byte order */
	__u8 proto;      /* IP protocol number (IPPROTO_*) */
	__u8 pad;        /* zero */
	__u16 vlan;      /* innermost VLAN id (12 bits), 0 when untagged; host byte order */
};

/*
 * Value of the `verdicts` and `verdicts4` maps. User space writes `action` (and zeroes the
 * counters); the program adds to the counters of every packet it handles for
 * the flow and stamps `last_seen_ns`.
 */
struct dp_verdict {
	__u32 action;        /* enum dp_action; host byte order */
	__u32 flags;         /* enum dp_verdict_flags, set by the program; user space writes 0; host byte order */
	/* packets and bytes (L2 frame length) the kernel handled since the
	 * verdict, by sender: [0] sent by endpoint A of the key, [1] by B;
	 * host byte order */
	__u64 packets[2];
	__u64 bytes[2];
	__u64 last_seen_ns;  /* time of the last packet, CLOCK_MONOTONIC_COARSE ns: the workers' clock
			      * (DP_HEARTBEAT_CLOCK, up to ~100 ms behind), or bpf_ktime_get_coarse_ns()
			      * while no worker has beaten */
};

/*
 * Indexes into the per-CPU `counters` array (each a __u64 per CPU).
 * Every packet increments DP_CNT_RX and exactly one of the outcome counters
 * below it, so  rx = to_user + no_socket + bypass_pass + bypass_drop +
 *                     bypass_forward + parse_errors + non_ip + fragments +
 *                     link_control.
 * In bridge mode the packets counted as parse_errors, non_ip, fragments and
 * link_control are also counted in DP_CNT_BRIDGED when they were sent to the
 * peer port (the bridge forwards what it does not understand), which is not
 * an outcome of its own and stays out of the sum.
 */
enum dp_counter {
	DP_CNT_RX = 0,           /* every packet the program saw */
	DP_CNT_TO_USER = 1,      /* redirected to the AF_XDP socket of its queue (host mode:
				  * passed to the stack and copied to the flow's worker) */
	DP_CNT_NO_SOCKET = 2,    /* undecided, but no socket on its queue: passed */
	DP_CNT_BYPASS_PASS = 3,  /* verdict PASS: handed to the stack in kernel */
	DP_CNT_BYPASS_DROP = 4,  /* verdict DROP: dropped in kernel */
	DP_CNT_PARSE_ERRORS = 5, /* truncated or malformed headers: passed */
	DP_CNT_NON_IP = 6,       /* not IPv4/IPv6 (ARP, LLDP, ...) or 3+ VLAN tags: passed */
	DP_CNT_FRAGMENTS = 7,    /* IPv4/IPv6 fragments: passed to the stack to reassemble (not inline) */
	DP_CNT_LINK_CONTROL = 8, /* ICMPv6 neighbour discovery and MLD: passed, like ARP */
	DP_CNT_BYPASS_FORWARD = 9, /* verdict FORWARD: sent to the peer port in kernel */
	DP_CNT_BRIDGED = 10,     /* bridge mode: unparsed traffic sent to the peer (see above) */
	DP_CNT_FAILOVER = 11,    /* undecided, but the queue's worker missed its heartbeat:
				  * the failure action applied instead of user space */
	/* Load balancer mode (dp_cfg_lb): every parsed IP packet ends in exactly
	 * one of the next five instead of the verdict/user-space outcomes; a
	 * packet of a service with inspection may also end in to_user,
	 * no_socket, failover (those three: sent ready for its backend, or
	 * not), bypass_drop (its flow's verdict is drop) or lb_inspect_egress. */
	DP_CNT_LB_FORWARDED = 12, /* service packet sent to its backend */
	DP_CNT_LB_REPLIES = 13,   /* nat mode: backend reply rewritten to come from the VIP */
	DP_CNT_LB_PASSED = 14,    /* service packet handed to the stack untouched: IP options,
				   * VLAN tag, or no route/neighbour to the backend */
	DP_CNT_LB_NO_BACKEND = 15, /* service packet dropped: every weight is zero */
	DP_CNT_LB_OTHER = 16,     /* not for a service: handed to the stack */
	/* Not outcomes: the connection table of service packets. */
	DP_CNT_LB_CONN_HITS = 17,   /* packet of a known connection */
	DP_CNT_LB_CONN_MISSES = 18, /* new connection: backend from the lookup table */
	DP_CNT_LB_CONN_LOST = 19,   /* a miss on a TCP packet without SYN: the connection
				     * lost its entry (evicted, or older than the balancer) */
	DP_CNT_LB_NO_ROUTE = 20,    /* of LB_PASSED: no route or neighbour entry to the backend */
	/* Host mode (dp_cfg_host): an undecided packet is passed to the stack
	 * and copied to its worker's ring (DP_CNT_TO_USER), or passed without a
	 * copy because that ring was full (this outcome). */
	DP_CNT_COPY_LOST = 21,
	/* Host mode, the TC egress program: what the host sends. Not part of
	 * the sum of ingress outcomes above; every egress packet increments
	 * DP_CNT_EGRESS and exactly one of the next five:
	 *   egress = egress_to_user + egress_copy_lost + egress_bypass_pass +
	 *            egress_bypass_drop + egress_other */
	DP_CNT_EGRESS = 22,
	DP_CNT_EGRESS_TO_USER = 23,     /* undecided: sent, and copied to user space */
	DP_CNT_EGRESS_COPY_LOST = 24,   /* undecided: sent without a copy (ring full) */
	DP_CNT_EGRESS_BYPASS_PASS = 25, /* decided allow: sent */
	DP_CNT_EGRESS_BYPASS_DROP = 26, /* decided drop: dropped */
	DP_CNT_EGRESS_OTHER = 27,       /* not IP, fragment, link control or unparsed: sent */
	/* Not an outcome: bridge mode, frames the program could not key (IP
	 * fragments, more VLAN tags or IPv6 extension headers than it walks,
	 * or malformed IP) sent to user space, which reassembles, reads
	 * further or drops them, instead of being bridged uninspected (their
	 * outcome is to_user or the failure action). */
	DP_CNT_UNPARSED_TO_USER = 28,
	/* Load balancer, a service with inspection: an undecided packet whose
	 * backend is reached through another interface than the one it came
	 * in on, which the AF_XDP socket cannot send to: dropped (an outcome). */
	DP_CNT_LB_INSPECT_EGRESS = 29,
	DP_CNT_MAX = 30,
};

/*
 * XDP metadata the program puts in front of every frame it redirects to user
 * space (bpf_xdp_adjust_meta). User space reads it from the headroom of the
 * UMEM frame, just before the packet data.
 */
struct dp_xdp_meta {
	__u64 rx_ns; /* bpf_ktime_get_ns() when XDP saw the packet; CLOCK_MONOTONIC */
};

/*
 * Load balancer, a frame of a service with inspection: in front of
 * struct dp_xdp_meta (so 32 bytes before the packet data). The balancer
 * rewrote the frame for the backend; a reset sent back to the client goes
 * to the MAC the frame came from, and in nat mode comes from the VIP.
 */
/* Bits of dp_lb_meta.flags */
enum dp_lb_meta_flags {
	/* The first packet user space gets of a connection a SYN opened (see
	 * DP_LB_CONN_F_FRESH); the SYN removed any verdict of an earlier
	 * connection with the same 5-tuple. */
	DP_LB_META_F_NEW = 1,
};

struct dp_lb_meta {
	__u8 peer_mac[6]; /* the frame's Ethernet source as received */
	__u16 flags;      /* enum dp_lb_meta_flags; host byte order */
	__u8 vip[16];     /* the service's address, network byte order; IPv4 in the first 4 */
};

/*
 * Host mode: what the programs put in a worker's ring buffer for each
 * packet of an undecided flow, followed by the packet's first `caplen`
 * bytes from its Ethernet header on. The ring is picked by the flow
 * (dp_jhash10 of its direction-independent key, modulo the rings in use),
 * so both directions of a flow reach one worker.
 */
struct dp_host_record {
	__u64 rx_ns;     /* bpf_ktime_get_ns() when the program saw it; CLOCK_MONOTONIC */
	__u32 len;       /* the packet's length; host byte order */
	__u16 caplen;    /* bytes that follow, <= DP_HOST_SNAP; host byte order */
	__u8 direction;  /* 0 = received (XDP), 1 = sent by the host (TC egress) */
	__u8 pad;        /* zero */
};

/*
 * Configuration of the benchmark generator `xdp_gen` (dp_baseline.c), run by
 * BPF_PROG_TEST_RUN with live frames: each run rewrites the template frame's
 * ports to pick a flow and optionally stamps a sequence number and the send
 * time into the payload, fixing the L4 checksum incrementally.
 *
 * Flow choice for the n-th frame of a CPU: if short_every != 0 and
 * n % short_every == 0, a short flow (a new one every short_len such frames:
 * sport = 10000 + k % 50000, dport = 20000 + cpu * 2000 + (k / 50000) % 2000);
 * otherwise long flow n % long_flows (sport = sport_base + cpu * long_flows +
 * flow, dport = dport). Each CPU thus sends its own flows, as RSS would give
 * each queue its own. With short_fixed_dport, short flows keep dport and
 * take sport = 10000 + (cpu % 2) * 27500 + k % 27500 (distinct for two
 * sending CPUs, up to 27500 short flows each).
 */
struct dp_gen_config {
	__u32 long_flows;  /* >= 1; host byte order */
	__u32 short_every; /* 0: no short flows; host byte order */
	__u32 short_len;   /* packets per short flow, >= 1; host byte order */
	__u16 l4_off;      /* offset of the L4 source port in the frame; host byte order */
	__u16 csum_off;    /* offset of the L4 checksum, 0 = leave it (UDP/IPv4 with checksum 0) */
	__u16 stamp_off;   /* offset of a struct dp_gen_stamp in the payload, 0 = no stamp */
	__u16 sport_base;  /* host byte order */
	__u16 dport;       /* host byte order */
	/* Bytes of `header` written over the start of every frame before its
	 * ports are set (0..=64): with live frames the pages are recycled, and
	 * a receiver that rewrites headers in place (a NAT, an encapsulating
	 * balancer) would otherwise change every later frame of that page. */
	__u16 header_len;  /* host byte order */
	__u8 header[64];   /* the template frame's first header_len bytes */
	/* 1: short flows keep `dport` and differ by sport only (a service on
	 * one port, such as a balancer's VIP); host byte order */
	__u16 short_fixed_dport;
	__u16 pad;         /* zero */
};

/* What `xdp_gen` writes into the payload with stamp_off set (latency runs). */
struct dp_gen_stamp {
	__u64 seq;     /* per-CPU sequence number; network byte order */
	__u64 sent_ns; /* bpf_ktime_get_ns() when the frame was made; network byte order */
};

/*
 * Load-time knobs (`const volatile` globals in the program, set by the loader
 * with EbpfLoader::override_global before load). Named here so the loader
 * refers to them by these strings.
 */
#define DP_GLOBAL_STAMP_META "dp_cfg_stamp_meta" /* __u32: 1 = write struct dp_xdp_meta */
/* __u32: 0 = monitor mode (one port); 1 = bridge mode: frames the program does
 * not hand to a verdict or to user space go out of the other port. */
#define DP_GLOBAL_BRIDGE "dp_cfg_bridge"
/* __u32: ifindex of the side-1 port (bridge mode); every other ingress
 * interface is side 0. */
#define DP_GLOBAL_SIDE1_IFINDEX "dp_cfg_side1_ifindex"
/* __u64: grace time in ns after which a queue whose worker has not written its
 * heartbeat (CLOCK_MONOTONIC_COARSE ns in `heartbeat`) is considered dead;
 * 0 = never. */
#define DP_GLOBAL_FAILURE_GRACE "dp_cfg_failure_grace_ns"
/* __u32: what undecided flows get when their queue has no socket or a dead
 * worker: 0 = pass (to the stack, or across the bridge), 1 = drop. */
#define DP_GLOBAL_FAILURE_DROP "dp_cfg_failure_drop"
/* __u32: 1 = host mode: undecided packets go to the stack and a copy to the
 * flow's worker ring (`host_rings`), never to an AF_XDP socket. */
#define DP_GLOBAL_HOST "dp_cfg_host"
/* __u32: host mode: rings in use in `host_rings` (>= 1). */
#define DP_GLOBAL_HOST_RINGS "dp_cfg_host_rings"

/*
 * Load balancer.
 *
 * A packet to a service (VIP, port, protocol) belongs to a connection
 * (struct dp_lb_conn_key, the client-to-VIP 5-tuple). A known connection
 * keeps its backend; a new one takes the backend of slot
 * hash(5-tuple) % DP_LB_RING_SIZE of its service's current lookup table.
 * Each service owns two tables in `lb_rings`, at
 * (service id * 2 + table) * DP_LB_RING_SIZE: user space fills the one not in
 * use, then flips `dp_lb_service.table` with one map update, so a lookup
 * never sees a half-written table.
 */
enum dp_lb_limits {
	DP_LB_MAX_SERVICES = 16,
	/* Slots per lookup table: prime (Maglev), ~100x a typical backend count. */
	DP_LB_RING_SIZE = 65537,
	DP_LB_MAX_BACKENDS = 1024,
	/* Connections tracked: 40 B key + 16 B value + LRU bookkeeping ~ 30 MiB. */
	DP_LB_CONN_ENTRIES = 262144,
	/* A lookup-table slot (or connection) without a backend. */
	DP_LB_NO_BACKEND = 0xffffffff,
};

enum dp_lb_mode {
	/* IPv4-in-IPv4 / IPv6-in-IPv6 to the backend, which answers the client
	 * directly (direct server return). */
	DP_LB_MODE_IPIP = 0,
	/* Destination rewritten to the backend; replies come back through us. */
	DP_LB_MODE_NAT = 1,
};

/* Bits of dp_lb_service.flags */
enum dp_lb_service_flags {
	/* A connection whose backend is down is balanced again (else it stays). */
	DP_LB_SERVICE_F_RESET_DOWN = 1,
	/* Inspect, then balance: a connection's data packets go to user space
	 * (ready for the backend) until its verdict is in the verdict map. */
	DP_LB_SERVICE_F_INSPECT = 2,
};

/* Bits of dp_lb_backend.flags */
enum dp_lb_backend_flags {
	DP_LB_BACKEND_F_DOWN = 1, /* failed its health check */
};

struct dp_lb_service_key {
	__u8 addr[16]; /* VIP, network byte order; IPv4 in the first 4 bytes */
	__be16 port;   /* network byte order */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family;   /* enum dp_family */
};

struct dp_lb_service {
	__u32 id;    /* 0..DP_LB_MAX_SERVICES: its tables and its lb_stats slot; host byte order */
	__u32 table; /* 0 or 1: which of its two tables is live; host byte order */
	__u32 mode;  /* enum dp_lb_mode; host byte order */
	__u32 flags; /* enum dp_lb_service_flags; host byte order */
};

struct dp_lb_backend {
	__u8 addr[16]; /* network byte order; IPv4 in the first 4 bytes */
	__u8 src[16];  /* ipip: outer source address (ours), network byte order */
	__u8 family;   /* enum dp_family; 0 = unused slot */
	__u8 flags;    /* enum dp_lb_backend_flags */
	__u16 pad;     /* zero */
	__u32 pad2;    /* zero */
};

/* A connection as the client sends it (not direction-independent). */
struct dp_lb_conn_key {
	__u8 src[16];  /* client address, network byte order */
	__u8 dst[16];  /* VIP, network byte order */
	__be16 sport;  /* network byte order */
	__be16 dport;  /* network byte order */
	__u8 proto;
	__u8 family;   /* enum dp_family */
	__u16 pad;     /* zero */
};

/* Bits of dp_lb_conn.flags */
enum dp_lb_conn_flags {
	/* Made by a SYN to a service with inspection, and no packet of it has
	 * gone to user space yet: the first one that does says it starts a new
	 * connection (DP_LB_META_F_NEW), so a flow user space still holds
	 * under the same 5-tuple is over. */
	DP_LB_CONN_F_FRESH = 1,
};

struct dp_lb_conn {
	__u32 backend;      /* index into lb_backends; host byte order */
	__u16 service;      /* service id; host byte order */
	__u16 flags;        /* enum dp_lb_conn_flags; host byte order */
	__u64 last_seen_ns; /* CLOCK_MONOTONIC_COARSE ns, from the program's clock (DP_HEARTBEAT_CLOCK, which
			     * `dataplane --lb` advances every 20 ms) */
};

/* nat mode: key = struct dp_lb_conn_key of the reply (src = backend,
 * dst = client, sport = service port, dport = client port). */
struct dp_lb_nat {
	__u8 vip[16];  /* network byte order */
	__u32 service; /* service id; host byte order */
	__u32 pad;     /* zero */
};

/* Per-CPU counters of a backend (lb_stats[DP_LB_MAX_SERVICES + index]: what
 * was forwarded to it) and of a service (lb_stats[id]: its nat replies
 * only). Every backend index belongs to one service, so a service's total is
 * its slot plus its backends', summed in user space: the packet path updates
 * one slot per forwarded packet, not two. */
struct dp_lb_stats {
	__u64 packets;   /* host byte order */
	__u64 bytes;     /* L2 frame length as received; host byte order */
	__u64 new_conns; /* host byte order */
};

/* __u32: 1 = load balancer mode (services, then everything else to the stack). */
#define DP_GLOBAL_LB "dp_cfg_lb"
/* __u32: 1 = some service is in nat mode: look up replies in lb_nat. */
#define DP_GLOBAL_LB_NAT "dp_cfg_lb_nat"
/* __u8[8]: next-hop MAC for everything the balancer sends (bytes 0-5), used
 * when byte 6 is 1; otherwise bpf_fib_lookup finds the next hop. */
#define DP_GLOBAL_LB_GATEWAY "dp_cfg_lb_gateway"

#endif /* DP_ABI_H */
