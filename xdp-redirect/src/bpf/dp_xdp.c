// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * dp_xdp: the data plane's XDP program.
 *
 *  1. parse Ethernet, up to DP_MAX_VLAN_TAGS VLAN tags, IPv4 (options skipped)
 *     or IPv6 (up to DP_MAX_IPV6_EXT extension headers), TCP/UDP/ICMP/ICMPv6;
 *  2. build the direction-independent flow key (see dp_abi.h);
 *  3. a hit in `verdicts4` (IPv4) or `verdicts` (IPv6) acts in the kernel: PASS to the stack, DROP, or
 *     (bridge mode) FORWARD out of the other port through the `peers` DEVMAP;
 *  4. a miss goes to the AF_XDP socket bound to the port and queue the packet
 *     came in on (the only socket the kernel lets us redirect to); in host
 *     mode (dp_cfg_host) it goes to the stack instead, and a copy to the ring
 *     buffer of the flow's worker: the host never loses a packet to us.
 *
 * Host mode also runs dp_tc_egress on what the host sends, so the workers see
 * both directions of the host's flows and a "drop" verdict holds both ways.
 *
 * It never drops what it does not understand: non-IP frames (ARP, LLDP...),
 * IPv6 neighbour discovery and MLD, malformed or truncated headers and
 * fragments are passed to the stack (monitor mode) or to the other port
 * (bridge mode) and counted. It contains no policy: verdicts come from user
 * space.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "dp_abi.h"
#include "dp_hash.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Load-time knob (see dp_abi.h, DP_GLOBAL_STAMP_META). */
const volatile __u32 dp_cfg_stamp_meta = 1;
/* Load-time knobs (DP_GLOBAL_BRIDGE, DP_GLOBAL_SIDE1_IFINDEX). */
const volatile __u32 dp_cfg_bridge = 0;
const volatile __u32 dp_cfg_side1_ifindex = 0;
/* Load-time knobs (DP_GLOBAL_FAILURE_GRACE, DP_GLOBAL_FAILURE_DROP). */
const volatile __u64 dp_cfg_failure_grace_ns = 0;
const volatile __u32 dp_cfg_failure_drop = 0;
/* Load-time knobs (DP_GLOBAL_HOST, DP_GLOBAL_HOST_RINGS). */
const volatile __u32 dp_cfg_host = 0;
const volatile __u32 dp_cfg_host_rings = 1;

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, DP_MAX_PORTS * DP_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, DP_VERDICT_ENTRIES_DEFAULT);
	__type(key, struct dp_flow_key);
	__type(value, struct dp_verdict);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, DP_VERDICT_ENTRIES_DEFAULT);
	__type(key, struct dp_flow_key4);
	__type(value, struct dp_verdict);
} verdicts4 SEC(".maps");

/* Worker heartbeats, by RX queue: user space writes them through mmap (no
 * syscall), the program reads them before sending a packet to user space.
 * One more slot, DP_HEARTBEAT_CLOCK, holds the latest of them: the program's
 * clock for last-seen times. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, DP_MAX_QUEUES + 1);
	__type(key, __u32);
	__type(value, __u64);
} heartbeat SEC(".maps");

/* Bridge mode: index = ingress side, value = the interface to send to. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, DP_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} peers SEC(".maps");

/* Host mode: one ring buffer per worker, put here by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, DP_MAX_QUEUES);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_RINGBUF);
		__uint(max_entries, DP_HOST_RING_BYTES);
	});
} host_rings SEC(".maps");

/* Host mode: a record is assembled here before it goes into a ring (the
 * stack is too small for a packet). */
struct host_copy {
	struct dp_host_record hdr;
	__u8 data[DP_HOST_SNAP];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct host_copy);
} host_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DP_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Not in the UAPI headers. */
struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* ICMP and ICMPv6 share this layout for echo request/reply (RFC 792, RFC 4443).
 * linux/icmp.h drags in glibc's socket headers, which do not build for -target bpf. */
struct icmp_echo {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
/* MLD query/report/done (130-132), router solicitation/advertisement,
 * neighbour solicitation/advertisement, redirect (133-137), MLDv2 report (143):
 * IPv6's equivalent of ARP and IGMP, which must keep working whatever user
 * space does with flows. */
#define ICMPV6_IS_LINK_CONTROL(t) (((t) >= 130 && (t) <= 137) || (t) == 143)

/* IPv6 fragment header (RFC 8200 4.5); linux/ipv6.h has none for BPF. */
struct frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset (13 bits) << 3 | res (2) | M (1) */
	__be32 identification;
};

/* IPv6 extension header numbers (netinet/in.h is not usable here). */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60

enum parse_result {
	PARSE_OK = 0,
	PARSE_ERROR,    /* truncated or malformed: pass and count */
	PARSE_NON_IP,   /* not IP: pass and count */
	PARSE_DEEP_VLAN, /* more VLAN tags than DP_MAX_VLAN_TAGS (counted as non_ip) */
	PARSE_DEEP_IPV6, /* more IPv6 extension headers than DP_MAX_IPV6_EXT (counted as parse_errors) */
	PARSE_FRAGMENT, /* IP fragment: pass to the stack to reassemble */
	PARSE_LINK_CONTROL, /* ICMPv6 ND/MLD: the link's own control plane, pass */
};

/* Bounds-checked cursor over the packet: every header read goes through
 * cursor_take(), which returns NULL when the header does not fit. */
struct cursor {
	void *pos;
	void *end;
	void *start; /* the frame's first byte, for offsets */
	/* The packet's whole length from `start`: more than end - start for an
	 * skb whose payload is not in its linear part (a GSO super-packet the
	 * host sends). Length fields are checked against it; headers against
	 * `end`. */
	__u32 len;
};

static __always_inline void *cursor_take(struct cursor *c, __u32 len)
{
	void *hdr = c->pos;

	if (hdr + len > c->end)
		return NULL;
	c->pos = hdr + len;
	return hdr;
}

static __always_inline void count(__u32 idx)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &idx);

	if (value) /* per-CPU slot: no atomics needed */
		*value += 1;
}

/* Now, for last-seen times (CLOCK_MONOTONIC_COARSE ns): the clock slot that
 * the workers' heartbeats (or the balancer's loop) advance, an inlined array
 * load; the kernel's coarse clock until user space has written it. Up to one
 * idle poll (100 ms) behind: idle timeouts are seconds long. */
static __always_inline __u64 coarse_now(void)
{
	__u32 slot = DP_HEARTBEAT_CLOCK;
	__u64 *now = bpf_map_lookup_elem(&heartbeat, &slot);

	if (now && *now)
		return *now;
	return bpf_ktime_get_coarse_ns();
}

#include "dp_lb.h"

/* Lexicographic compare of two 16-byte addresses held as 4 network-order words. */
static __always_inline int addr_cmp(const __u32 *a, const __u32 *b)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 x = bpf_ntohl(a[i]);
		__u32 y = bpf_ntohl(b[i]);

		if (x < y)
			return -1;
		if (x > y)
			return 1;
	}
	return 0;
}

/* Order the endpoints so that both directions of a flow give one key.
 * Returns 1 when the sender is endpoint B. */
static __always_inline __u8 key_set_endpoints(struct dp_flow_key *key, const __u32 *src,
					      const __u32 *dst, __be16 sport, __be16 dport)
{
	int cmp = addr_cmp(src, dst);

	if (cmp < 0 || (cmp == 0 && bpf_ntohs(sport) <= bpf_ntohs(dport))) {
		__builtin_memcpy(key->addr_a, src, 16);
		__builtin_memcpy(key->addr_b, dst, 16);
		key->port_a = sport;
		key->port_b = dport;
		return 0;
	}
	__builtin_memcpy(key->addr_a, dst, 16);
	__builtin_memcpy(key->addr_b, src, 16);
	key->port_a = dport;
	key->port_b = sport;
	return 1;
}

/* Read L4 ports (or the ICMP echo identifier) at the cursor. */
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_RST 0x04

/* What the parser learnt besides the key. */
struct parse_info {
	__u8 tcp_flags; /* TCP flags byte (FIN = 0x01, RST = 0x04), 0 for other protocols */
	__u8 from_b;     /* the packet was sent by endpoint B of the key */
	__u8 ip_options; /* IPv4 header longer than 20 bytes */
	__u16 l3_off;    /* offset of the IP header in the frame */
	__u16 l4_len;    /* bytes of the IP payload (transport header and data) */
	__u8 payload;    /* TCP: the segment carries data */
	/* the addresses and ports as sent (not ordered), for the load balancer */
	__u32 src[4];
	__u32 dst[4];
	__be16 sport;
	__be16 dport;
};

static __always_inline int parse_l4(struct cursor *c, __u8 proto, __be16 *sport, __be16 *dport,
				    struct parse_info *info)
{
	switch (proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = cursor_take(c, sizeof(*tcp));

		if (!tcp || tcp->doff < 5)
			return PARSE_ERROR;
		/* the options must be in the packet too */
		if ((void *)tcp + tcp->doff * 4 > c->end)
			return PARSE_ERROR;
		info->payload = info->l4_len > tcp->doff * 4;
		*sport = tcp->source;
		*dport = tcp->dest;
		info->tcp_flags = ((__u8 *)tcp)[13];
		return PARSE_OK;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = cursor_take(c, sizeof(*udp));

		if (!udp)
			return PARSE_ERROR;
		*sport = udp->source;
		*dport = udp->dest;
		return PARSE_OK;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		struct icmp_echo *icmp = cursor_take(c, sizeof(*icmp));

		if (!icmp)
			return PARSE_ERROR;
		if (proto == IPPROTO_ICMPV6 && ICMPV6_IS_LINK_CONTROL(icmp->type))
			return PARSE_LINK_CONTROL;
		if ((proto == IPPROTO_ICMP &&
		     (icmp->type == ICMP_ECHO || icmp->type == ICMP_ECHOREPLY)) ||
		    (proto == IPPROTO_ICMPV6 &&
		     (icmp->type == ICMPV6_ECHO_REQUEST || icmp->type == ICMPV6_ECHO_REPLY))) {
			*sport = icmp->id;
			*dport = icmp->id;
		}
		return PARSE_OK;
	}
	default:
		/* Other IP protocols (GRE, ESP, SCTP...) are flows without ports. */
		return PARSE_OK;
	}
}

static __always_inline int parse_ipv4(struct cursor *c, struct dp_flow_key *key,
				      struct parse_info *info)
{
	struct iphdr *ip = c->pos;
	__u32 src[4] = {}, dst[4] = {};
	__be16 sport = 0, dport = 0;
	__u32 hlen;
	int ret;

	if ((void *)(ip + 1) > c->end)
		return PARSE_ERROR;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_ERROR;
	info->l3_off = c->pos - c->start;
	info->ip_options = ip->ihl > 5;
	hlen = ip->ihl * 4;
	/* the total length it claims must be in the packet, the header with
	 * its options in what we can read */
	if (bpf_ntohs(ip->tot_len) < hlen ||
	    (__u32)(c->pos - c->start) + bpf_ntohs(ip->tot_len) > c->len)
		return PARSE_ERROR;
	if (!cursor_take(c, hlen))
		return PARSE_ERROR;
	info->l4_len = bpf_ntohs(ip->tot_len) - hlen;
	/* MF set or a non-zero offset: a fragment */
	if (ip->frag_off & bpf_htons(0x3fff))
		return PARSE_FRAGMENT;

	ret = parse_l4(c, ip->protocol, &sport, &dport, info);
	if (ret != PARSE_OK)
		return ret;

	src[0] = ip->saddr;
	dst[0] = ip->daddr;
	key->family = DP_FAMILY_IPV4;
	key->proto = ip->protocol;
	if (dp_cfg_lb) {
		info->src[0] = src[0];
		info->dst[0] = dst[0];
		info->sport = sport;
		info->dport = dport;
		return PARSE_OK; /* the balancer keys connections by direction */
	}
	info->from_b = key_set_endpoints(key, src, dst, sport, dport);
	return PARSE_OK;
}

static __always_inline int parse_ipv6(struct cursor *c, struct dp_flow_key *key,
				      struct parse_info *info)
{
	struct ipv6hdr *ip6 = cursor_take(c, sizeof(struct ipv6hdr));
	__u32 src[4], dst[4];
	__be16 sport = 0, dport = 0;
	__u8 nexthdr;
	int ret;

	if (!ip6 || ip6->version != 6)
		return PARSE_ERROR;
	info->l3_off = (void *)ip6 - c->start;
	if ((__u32)((void *)(ip6 + 1) - c->start) + bpf_ntohs(ip6->payload_len) > c->len)
		return PARSE_ERROR;
	nexthdr = ip6->nexthdr;

#pragma unroll
	for (int i = 0; i < DP_MAX_IPV6_EXT; i++) {
		struct ipv6_opt_hdr *ext;

		if (nexthdr == NEXTHDR_FRAGMENT) {
			struct frag_hdr *frag = cursor_take(c, sizeof(*frag));

			if (!frag)
				return PARSE_ERROR;
			/* An atomic fragment (RFC 6946: offset 0, no more
			 * fragments) is a whole packet: walk past it, or a
			 * sender could carry a flow past inspection with one
			 * on every packet. */
			if (frag->frag_off & bpf_htons(0xfff9))
				return PARSE_FRAGMENT;
			nexthdr = frag->nexthdr;
			continue;
		}
		if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING &&
		    nexthdr != NEXTHDR_DEST && nexthdr != NEXTHDR_AUTH)
			break;
		ext = cursor_take(c, sizeof(*ext));
		if (!ext)
			return PARSE_ERROR;
		/* AH counts its length in 4-byte units minus 2, the others in
		 * 8-byte units minus 1 (RFC 4302, RFC 8200) */
		if (!cursor_take(c, nexthdr == NEXTHDR_AUTH ? (ext->hdrlen + 2) * 4 - 2
							    : (ext->hdrlen + 1) * 8 - 2))
			return PARSE_ERROR;
		nexthdr = ext->nexthdr;
	}
	if (nexthdr == NEXTHDR_HOP || nexthdr == NEXTHDR_ROUTING || nexthdr == NEXTHDR_DEST ||
	    nexthdr == NEXTHDR_AUTH || nexthdr == NEXTHDR_FRAGMENT)
		return PARSE_DEEP_IPV6; /* more extension headers than we walk */

	/* extension headers are IPv6's options: the balancer leaves them alone */
	info->ip_options = c->pos != (void *)(ip6 + 1);
	info->l4_len = bpf_ntohs(ip6->payload_len) - (__u16)(c->pos - (void *)(ip6 + 1));
	ret = parse_l4(c, nexthdr, &sport, &dport, info);
	if (ret != PARSE_OK)
		return ret;

	__builtin_memcpy(src, &ip6->saddr, 16);
	__builtin_memcpy(dst, &ip6->daddr, 16);
	key->family = DP_FAMILY_IPV6;
	key->proto = nexthdr;
	if (dp_cfg_lb) {
		__builtin_memcpy(info->src, src, 16);
		__builtin_memcpy(info->dst, dst, 16);
		info->sport = sport;
		info->dport = dport;
		return PARSE_OK;
	}
	info->from_b = key_set_endpoints(key, src, dst, sport, dport);
	return PARSE_OK;
}

/* Parses the frame between `data` and `data_end` (packet pointers of an XDP
 * or a TC program); `len` is the whole packet's length (see struct cursor). */
static __always_inline int parse_packet(void *data, void *data_end, __u32 len,
					struct dp_flow_key *key, struct parse_info *info)
{
	struct cursor c = {
		.pos = data,
		.end = data_end,
		.start = data,
		.len = len,
	};
	struct ethhdr *eth = cursor_take(&c, sizeof(*eth));
	__be16 proto;

	if (!eth)
		return PARSE_ERROR;
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < DP_MAX_VLAN_TAGS; i++) {
		struct vlan_hdr *vlan;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		vlan = cursor_take(&c, sizeof(*vlan));
		if (!vlan)
			return PARSE_ERROR;
		key->vlan = bpf_ntohs(vlan->tci) & 0x0fff;
		proto = vlan->encapsulated_proto;
	}

	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(&c, key, info);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(&c, key, info);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return PARSE_DEEP_VLAN;
	return PARSE_NON_IP;
}

/* Put the receive time in front of the frame for user space (best effort). */
static __always_inline void stamp_meta(struct xdp_md *ctx)
{
	struct dp_xdp_meta *meta;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*meta)))
		return;
	meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > (void *)(long)ctx->data)
		return;
	meta->rx_ns = bpf_ktime_get_ns();
}

/* Ingress side: 1 for the bridge peer port, 0 for the monitored port. */
static __always_inline __u32 ingress_side(struct xdp_md *ctx)
{
	return dp_cfg_bridge && ctx->ingress_ifindex == dp_cfg_side1_ifindex ? 1 : 0;
}

/* Frames the program does not decide on: to the stack (monitor mode) or to
 * the other port (bridge mode; XDP_PASS if the peer is missing). */
static __always_inline int not_decided(struct xdp_md *ctx, __u32 reason)
{
	count(reason);
	if (!dp_cfg_bridge)
		return XDP_PASS;
	count(DP_CNT_BRIDGED);
	return bpf_redirect_map(&peers, ingress_side(ctx), XDP_PASS);
}

/* Undecided traffic that user space cannot take: counted as `reason`, then
 * dropped with --on-failure drop, else passed on as if decided "allow". */
static __always_inline int on_failure(struct xdp_md *ctx, __u32 reason)
{
	count(reason);
	if (dp_cfg_failure_drop)
		return XDP_DROP;
	if (dp_cfg_bridge)
		return bpf_redirect_map(&peers, ingress_side(ctx), XDP_PASS);
	return XDP_PASS;
}

/* The 16-byte key of an IPv4 flow's entry in `verdicts4`. */
static __always_inline struct dp_flow_key4 flow_key4(const struct dp_flow_key *key)
{
	struct dp_flow_key4 key4 = {
		.port_a = key->port_a,
		.port_b = key->port_b,
		.proto = key->proto,
		.vlan = key->vlan,
	};

	__builtin_memcpy(&key4.addr_a, key->addr_a, 4);
	__builtin_memcpy(&key4.addr_b, key->addr_b, 4);
	return key4;
}

/* The flow's entry: IPv4 flows live in `verdicts4` under a 16-byte key (the
 * kernel hashes and compares fewer than half the bytes), IPv6 flows in
 * `verdicts`. */
static __always_inline struct dp_verdict *verdict_lookup(const struct dp_flow_key *key)
{
	if (key->family == DP_FAMILY_IPV4) {
		struct dp_flow_key4 key4 = flow_key4(key);

		return bpf_map_lookup_elem(&verdicts4, &key4);
	}
	return bpf_map_lookup_elem(&verdicts, key);
}

/* Removes the flow's entry, if any (see verdict_lookup). */
static __always_inline void verdict_remove(const struct dp_flow_key *key)
{
	if (key->family == DP_FAMILY_IPV4) {
		struct dp_flow_key4 key4 = flow_key4(key);

		bpf_map_delete_elem(&verdicts4, &key4);
		return;
	}
	bpf_map_delete_elem(&verdicts, key);
}

/* A packet of a decided flow, received (XDP) or sent (TC): counted on its
 * entry, which is stamped with the time and marked closing on FIN or RST. */
static __always_inline void verdict_account(struct dp_verdict *verdict, __u32 len,
					    const struct parse_info *info)
{
	__u8 tcp_flags = info->tcp_flags;

	if (info->from_b) {
		__sync_fetch_and_add(&verdict->packets[1], 1);
		__sync_fetch_and_add(&verdict->bytes[1], len);
	} else {
		__sync_fetch_and_add(&verdict->packets[0], 1);
		__sync_fetch_and_add(&verdict->bytes[0], len);
	}
	verdict->last_seen_ns = coarse_now();
	/* a plain store: setting the same bit from two CPUs is idempotent,
	 * and 32-bit atomics need -mcpu=v3 */
	if ((tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) && !(verdict->flags & DP_VERDICT_F_CLOSING))
		verdict->flags |= DP_VERDICT_F_CLOSING;
}

/* The worker of the packet's queue missed its heartbeat for longer than
 * the grace time (never, without one). */
static __always_inline int queue_worker_stalled(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;
	__u64 *beat;

	if (!dp_cfg_failure_grace_ns)
		return 0;
	beat = bpf_map_lookup_elem(&heartbeat, &queue);
	/* 0: no worker ever served this queue (then no socket either) */
	return beat && *beat && bpf_ktime_get_coarse_ns() - *beat > dp_cfg_failure_grace_ns;
}

/* To the AF_XDP socket of the packet's port and queue, unless that queue's
 * worker stopped beating or has no socket: then the failure action, so a
 * stuck or dead user space never blackholes the link silently. */
static __always_inline int to_user_space(struct xdp_md *ctx)
{
	__u32 slot;
	int ret;

	if (queue_worker_stalled(ctx))
		return on_failure(ctx, DP_CNT_FAILOVER);
	if (dp_cfg_stamp_meta)
		stamp_meta(ctx);
	slot = ingress_side(ctx) * DP_MAX_QUEUES + ctx->rx_queue_index;
	ret = bpf_redirect_map(&xsks, slot, 0);
	if (ret == XDP_REDIRECT) {
		count(DP_CNT_TO_USER);
		return ret;
	}
	/* no socket on this queue (none yet, or its process is gone) */
	return on_failure(ctx, DP_CNT_NO_SOCKET);
}

/* Host mode: the ring of the worker that owns the flow. The key is
 * direction-independent, so both directions pick the same ring. */
static __always_inline __u32 host_owner(const struct dp_flow_key *key)
{
	_Static_assert(sizeof(struct dp_flow_key) == 40, "dp_jhash10 hashes 10 words");
	return dp_jhash10((const void *)key, 0x4850 /* "HP" */) % dp_cfg_host_rings;
}

/* Bytes of a `len`-byte packet to copy, 1..=DP_HOST_SNAP (len >= 1). The
 * mask states the bound in a form the verifier tracks through clang's
 * reordering (a plain comparison was checked on another register copy). */
static __always_inline __u32 snap_len(__u32 len)
{
	__u32 caplen = len < DP_HOST_SNAP ? len : DP_HOST_SNAP;

	_Static_assert((DP_HOST_SNAP & (DP_HOST_SNAP - 1)) == 0, "the mask needs a power of two");
	return ((caplen - 1) & (DP_HOST_SNAP - 1)) + 1;
}

/* The scratch record, its header filled in; NULL if the per-CPU slot is missing. */
static __always_inline struct host_copy *host_record(__u32 len, __u32 caplen, __u32 direction)
{
	__u32 zero = 0;
	struct host_copy *rec = bpf_map_lookup_elem(&host_scratch, &zero);

	if (!rec)
		return NULL;
	rec->hdr.rx_ns = bpf_ktime_get_ns();
	rec->hdr.len = len;
	rec->hdr.caplen = caplen;
	rec->hdr.direction = direction;
	rec->hdr.pad = 0;
	return rec;
}

/* Puts the assembled record into the owner's ring; 0 on success. */
static __always_inline int host_output(struct host_copy *rec, __u32 owner)
{
	void *ring = bpf_map_lookup_elem(&host_rings, &owner);
	__u64 caplen = rec->hdr.caplen;

	if (!ring || caplen > DP_HOST_SNAP)
		return -1;
	return bpf_ringbuf_output(ring, rec, sizeof(rec->hdr) + caplen, 0);
}

/* Host mode, an XDP packet of an undecided flow: a copy to its worker. */
static __always_inline int host_copy_xdp(struct xdp_md *ctx, __u32 len, __u32 owner)
{
	__u32 caplen = snap_len(len);
	struct host_copy *rec = host_record(len, caplen, 0);

	if (!rec)
		return -1;
	if (bpf_xdp_load_bytes(ctx, 0, rec->data, caplen))
		return -1;
	return host_output(rec, owner);
}

/* Load balancer, a service with inspection (declared in dp_lb.h): the
 * flow's verdict, as user space wrote it under the flow's key (`fk`: the
 * client's packet as user space reads it, to the VIP, or in nat mode to
 * the backend). A decided flow's packet is counted on its entry. `flags`:
 * the TCP flags byte, and bit 8 set if the segment carries data.
 *
 * A global function, verified once on its own: inlined, its branches
 * multiplied the balancer's paths past the verifier's budget. */
__attribute__((noinline)) int dp_lb_inspect(const struct dp_lb_conn_key *fk, __u32 flags,
					    __u32 len)
{
	struct dp_flow_key key;
	struct parse_info info = {};
	struct dp_verdict *verdict;

	if (!fk)
		return LB_INSPECT_USER;
	__builtin_memset(&key, 0, sizeof(key));
	key.family = fk->family;
	key.proto = fk->proto;
	info.tcp_flags = flags & 0xff;
	info.from_b = key_set_endpoints(&key, (const __u32 *)fk->src, (const __u32 *)fk->dst,
					fk->sport, fk->dport);
	/* A SYN opens a new connection (the balancer's entry is replaced
	 * too): a verdict under its 5-tuple was an earlier connection's. */
	if (fk->proto == IPPROTO_TCP &&
	    (flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN) {
		verdict_remove(&key);
		return LB_INSPECT_NO;
	}
	verdict = verdict_lookup(&key);
	if (verdict && verdict->action != DP_ACTION_NONE) {
		verdict_account(verdict, len, &info);
		return verdict->action == DP_ACTION_DROP ? LB_INSPECT_DROP : LB_INSPECT_NO;
	}
	/* the handshake and bare ACKs carry nothing to read: balanced here (a
	 * FIN or RST goes up, so the worker sees the flow end) */
	if (fk->proto == IPPROTO_TCP && !(flags & LB_INSPECT_F_DATA) &&
	    !(flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		return LB_INSPECT_NO;
	return LB_INSPECT_USER;
}

/* Load balancer, an undecided frame of a service with inspection, before
 * the balancer rewrites it: its metadata (struct dp_lb_meta with the
 * Ethernet source as received and the VIP, then struct dp_xdp_meta), which
 * bpf_xdp_adjust_head moves along with the frame. A global function, for
 * the verifier's sake (see dp_lb_inspect). */
__attribute__((noinline)) int dp_lb_stamp(struct xdp_md *ctx, const struct dp_lb_conn_key *ckey,
				       __u32 flags)
{
	struct dp_lb_meta *meta;
	struct ethhdr *eth;

	if (!ctx || !ckey || bpf_xdp_adjust_meta(ctx, -(int)(sizeof(*meta) + sizeof(struct dp_xdp_meta))))
		return -1;
	meta = (void *)(long)ctx->data_meta;
	eth = (void *)(long)ctx->data;
	if ((void *)(meta + 1) + sizeof(struct dp_xdp_meta) > (void *)eth ||
	    (void *)(eth + 1) > (void *)(long)ctx->data_end)
		return -1;
	__builtin_memcpy(meta->peer_mac, eth->h_source, ETH_ALEN);
	meta->flags = flags;
	__builtin_memcpy(meta->vip, ckey->dst, 16);
	((struct dp_xdp_meta *)(meta + 1))->rx_ns = bpf_ktime_get_ns();
	return 0;
}

/* Load balancer: a frame the balancer made ready for its backend goes to
 * the AF_XDP socket of its queue instead, to be inspected and sent (or
 * not) from user space. No socket, or a worker past its heartbeat: the
 * failure action (drop, or send it uninspected). */
static __always_inline int lb_to_user(struct xdp_md *ctx)
{
	__u32 reason = DP_CNT_FAILOVER;

	if (!queue_worker_stalled(ctx)) {
		if (bpf_redirect_map(&xsks, ctx->rx_queue_index, 0) == XDP_REDIRECT) {
			count(DP_CNT_TO_USER);
			return XDP_REDIRECT;
		}
		reason = DP_CNT_NO_SOCKET;
	}
	count(reason);
	if (dp_cfg_failure_drop)
		return XDP_DROP;
	return XDP_TX; /* the frame is ready for its backend, out of this interface */
}

SEC("xdp")
int dp_xdp(struct xdp_md *ctx)
{
	struct dp_flow_key key;
	struct parse_info info = {};
	struct dp_verdict *verdict;
	__u32 len = ctx->data_end - ctx->data;
	int ret;

	__builtin_memset(&key, 0, sizeof(key));
	count(DP_CNT_RX);

	ret = parse_packet((void *)(long)ctx->data, (void *)(long)ctx->data_end, len, &key, &info);
	switch (ret) {
	case PARSE_OK:
		break;
	case PARSE_NON_IP:
		return not_decided(ctx, DP_CNT_NON_IP);
	case PARSE_FRAGMENT:
		/* Inline, a fragment goes to user space, which reassembles the
		 * datagram, inspects it and forwards or drops every fragment:
		 * fragmenting a request must not carry it past inspection. */
		if (dp_cfg_bridge) {
			count(DP_CNT_UNPARSED_TO_USER);
			return to_user_space(ctx);
		}
		return not_decided(ctx, DP_CNT_FRAGMENTS);
	case PARSE_LINK_CONTROL:
		return not_decided(ctx, DP_CNT_LINK_CONTROL);
	default:
		/* Deeper than we parse, or malformed. Inline, nothing goes around
		 * inspection: user space reads further, and forwards or drops. */
		if (dp_cfg_bridge) {
			count(DP_CNT_UNPARSED_TO_USER);
			return to_user_space(ctx);
		}
		return not_decided(ctx, ret == PARSE_DEEP_VLAN ? DP_CNT_NON_IP : DP_CNT_PARSE_ERRORS);
	}

	if (dp_cfg_lb) {
		struct dp_lb_conn_key ckey = {};
		struct lb_packet p = {
			.ifindex = ctx->ingress_ifindex,
			.l3_off = info.l3_off,
			.v6 = key.family == DP_FAMILY_IPV6,
			.tcp_flags = info.tcp_flags,
			.payload = info.payload,
		};

		__builtin_memcpy(ckey.src, info.src, 16);
		__builtin_memcpy(ckey.dst, info.dst, 16);
		ckey.sport = info.sport;
		ckey.dport = info.dport;
		ckey.proto = key.proto;
		ckey.family = key.family;
		return lb_process(ctx, &ckey, &p, info.ip_options, len);
	}

	verdict = verdict_lookup(&key);
	if (verdict && verdict->action != DP_ACTION_NONE) {
		verdict_account(verdict, len, &info);
		if (verdict->action == DP_ACTION_DROP) {
			count(DP_CNT_BYPASS_DROP);
			return XDP_DROP;
		}
		if (verdict->action == DP_ACTION_FORWARD && dp_cfg_bridge) {
			count(DP_CNT_BYPASS_FORWARD);
			return bpf_redirect_map(&peers, ingress_side(ctx), XDP_PASS);
		}
		count(DP_CNT_BYPASS_PASS);
		return XDP_PASS;
	}

	if (dp_cfg_host) {
		/* Passive: the stack gets the packet whatever happens here; the
		 * flow's worker gets a copy unless it is dead (the failure action
		 * then) or its ring is full (counted). */
		__u32 owner = host_owner(&key);
		__u64 *beat = bpf_map_lookup_elem(&heartbeat, &owner);

		if (dp_cfg_failure_grace_ns && beat && *beat &&
		    bpf_ktime_get_coarse_ns() - *beat > dp_cfg_failure_grace_ns)
			return on_failure(ctx, DP_CNT_FAILOVER);
		if (host_copy_xdp(ctx, len, owner)) {
			count(DP_CNT_COPY_LOST);
			return XDP_PASS;
		}
		count(DP_CNT_TO_USER);
		return XDP_PASS;
	}

	return to_user_space(ctx);
}

/* Host mode, a packet the host sends of an undecided flow: a copy to its worker. */
static __always_inline int host_copy_skb(struct __sk_buff *skb, __u32 owner)
{
	__u32 caplen = snap_len(skb->len);
	struct host_copy *rec = host_record(skb->len, caplen, 1);

	if (!rec)
		return -1;
	if (bpf_skb_load_bytes(skb, 0, rec->data, caplen))
		return -1;
	return host_output(rec, owner);
}

/* Bytes of headers the parser may need in the linear part of an skb:
 * Ethernet, two VLAN tags, IPv6 with DP_MAX_IPV6_EXT short extension
 * headers, and TCP with options. */
#define EGRESS_HEADERS 192

/*
 * Host mode, TC egress: what the host sends, seen by the same verdicts as
 * what it receives. A decided flow's packets are counted on its entry and
 * sent (or dropped, for "drop"); an undecided flow's packets are sent and
 * copied to the flow's worker; anything unparsed is sent untouched.
 */
SEC("classifier")
int dp_tc_egress(struct __sk_buff *skb)
{
	struct dp_flow_key key;
	struct parse_info info = {};
	struct dp_verdict *verdict;
	__u32 linear;

	if (!dp_cfg_host)
		return TC_ACT_OK;
	__builtin_memset(&key, 0, sizeof(key));
	count(DP_CNT_EGRESS);
	linear = skb->data_end - skb->data;
	if (linear < EGRESS_HEADERS && skb->len > linear)
		bpf_skb_pull_data(skb, skb->len < EGRESS_HEADERS ? skb->len : EGRESS_HEADERS);
	if (parse_packet((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, &key,
			 &info) != PARSE_OK) {
		count(DP_CNT_EGRESS_OTHER);
		return TC_ACT_OK;
	}
	verdict = verdict_lookup(&key);
	if (verdict && verdict->action != DP_ACTION_NONE) {
		verdict_account(verdict, skb->len, &info);
		if (verdict->action == DP_ACTION_DROP) {
			count(DP_CNT_EGRESS_BYPASS_DROP);
			return TC_ACT_SHOT;
		}
		count(DP_CNT_EGRESS_BYPASS_PASS);
		return TC_ACT_OK;
	}
	if (host_copy_skb(skb, host_owner(&key)))
		count(DP_CNT_EGRESS_COPY_LOST);
	else
		count(DP_CNT_EGRESS_TO_USER);
	return TC_ACT_OK;
}
