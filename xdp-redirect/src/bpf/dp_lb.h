/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The load balancer path of dp_xdp (load-time knob dp_cfg_lb), included by
 * dp_xdp.c after its parser. See "Load balancer" in dp_abi.h for the maps.
 *
 * For a packet to a service:
 *   1. its connection (client-to-VIP 5-tuple) in `lb_conns`: known
 *      connections keep their backend whatever the tables say now;
 *   2. else slot jhash(5-tuple) % DP_LB_RING_SIZE of the service's live table
 *      picks the backend, and the connection is remembered;
 *   3. the next hop's MAC comes from the configured gateway or bpf_fib_lookup;
 *   4. ipip: an outer IPv4 (IPv6) header toward the backend is pushed in
 *      front of the packet; nat: the destination address is rewritten
 *      (checksums updated incrementally) and the reply mapping remembered;
 *   5. out of the interface it came in on (XDP_TX), or the one the FIB names.
 * A packet the balancer must not mangle (IP options, a VLAN tag, no route)
 * goes to the stack untouched and is counted; fragments never get here (the
 * parser passes them).
 */
#ifndef DP_LB_H
#define DP_LB_H

#include "dp_hash.h"

/* Load-time knobs (DP_GLOBAL_LB, DP_GLOBAL_LB_NAT, DP_GLOBAL_LB_GATEWAY). */
const volatile __u32 dp_cfg_lb = 0;
const volatile __u32 dp_cfg_lb_nat = 0;
const volatile __u8 dp_cfg_lb_gateway[8] = {};

#ifndef AF_INET
#define AF_INET 2
#define AF_INET6 10
#endif
#define IPPROTO_IPIP_ 4
#define IPPROTO_IPV6_ 41
#define TCP_FLAG_SYN 0x02

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DP_LB_MAX_SERVICES);
	__type(key, struct dp_lb_service_key);
	__type(value, struct dp_lb_service);
} lb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE); /* user space writes tables without syscalls */
	__uint(max_entries, DP_LB_MAX_SERVICES * 2 * DP_LB_RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} lb_rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DP_LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct dp_lb_backend);
} lb_backends SEC(".maps");

/* One hash table with per-CPU LRU lists (BPF_F_NO_COMMON_LRU): no shared LRU
 * lock on the packet path, yet a connection whose packets are processed on
 * another CPU (RSS rehash, veth's sender-CPU NAPI) still finds its entry,
 * which a per-CPU hash would lose, moving the connection to another backend. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, DP_LB_CONN_ENTRIES);
	__type(key, struct dp_lb_conn_key);
	__type(value, struct dp_lb_conn);
} lb_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, DP_LB_CONN_ENTRIES);
	__type(key, struct dp_lb_conn_key);
	__type(value, struct dp_lb_nat);
} lb_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DP_LB_MAX_SERVICES + DP_LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct dp_lb_stats);
} lb_stats SEC(".maps");

#define TCP_FLAG_ACK 0x10

/* A TCP segment that opens a connection: SYN without ACK. */
static __always_inline int is_syn(__u8 proto, __u8 tcp_flags)
{
	return proto == IPPROTO_TCP && (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

/* jhash2 over the 10 words of a connection key. */
static __always_inline __u32 lb_hash(const struct dp_lb_conn_key *key)
{
	_Static_assert(sizeof(struct dp_lb_conn_key) == 40, "dp_jhash10 hashes 10 words");
	return dp_jhash10((const __u32 *)key, 0x4c42); /* seed: "LB" */
}

static __always_inline void lb_stat(__u32 slot, __u32 len, __u32 new_conn)
{
	struct dp_lb_stats *s = bpf_map_lookup_elem(&lb_stats, &slot);

	if (!s)
		return;
	s->packets += 1;
	s->bytes += len;
	s->new_conns += new_conn;
}

static __always_inline __u16 csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/* IPv4 header checksum of a 20-byte header (no options here: they are passed). */
static __always_inline void ipv4_csum(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 sum = 0;

	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	ip->check = csum_fold(sum);
}

/* Replaces the `words`-word address at `addr` by `to`, updating the L4
 * checksum at `l4_csum` (NULL: none, or UDP/IPv4 without checksum) and, for
 * IPv4, the header checksum. */
static __always_inline void rewrite_addr(__u32 *addr, const __u32 *to, int v6, __sum16 *l4_csum,
					 struct iphdr *ip4)
{
	__u32 diff = 0;

	if (v6) {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			diff += ~addr[i];
			diff = diff < ~addr[i] ? diff + 1 : diff; /* end-around carry */
			diff += to[i];
			diff = diff < to[i] ? diff + 1 : diff;
			addr[i] = to[i];
		}
	} else {
		diff = ~addr[0];
		diff += to[0];
		diff = diff < to[0] ? diff + 1 : diff;
		addr[0] = to[0];
	}
	if (l4_csum) {
		__u32 sum = (__u16)~*l4_csum;

		sum += (diff & 0xffff) + (diff >> 16);
		*l4_csum = csum_fold(sum);
	}
	if (ip4)
		ipv4_csum(ip4);
}

/* Next hop for `dst` (from `src`): its MAC and ours into `mac` (dest 0-5,
 * source 6-11), egress ifindex returned, 0 when there is none (no route, no
 * neighbour entry yet). Reads the frame's Ethernet header, changes nothing. */
static __always_inline __u32 lb_next_hop(struct xdp_md *ctx, __u32 in_ifindex,
					 const struct ethhdr *eth, __u8 *mac, int v6,
					 const __u32 *src, const __u32 *dst, __u8 proto)
{
	struct bpf_fib_lookup fib = {};

	if (dp_cfg_lb_gateway[6]) {
#pragma unroll
		for (int i = 0; i < ETH_ALEN; i++)
			mac[i] = dp_cfg_lb_gateway[i];
		/* the frame came to our MAC: it becomes the source */
		__builtin_memcpy(mac + ETH_ALEN, eth->h_dest, ETH_ALEN);
		return in_ifindex;
	}
	fib.ifindex = in_ifindex;
	fib.l4_protocol = proto;
	if (v6) {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, src, 16);
		__builtin_memcpy(fib.ipv6_dst, dst, 16);
	} else {
		fib.family = AF_INET;
		fib.ipv4_src = src[0];
		fib.ipv4_dst = dst[0];
	}
	/* A forwarding lookup, as the stack would route the packet: the kernel
	 * answers only with forwarding enabled on the ingress interface (user
	 * space checks that at start-up). */
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	__builtin_memcpy(mac, fib.dmac, ETH_ALEN);
	__builtin_memcpy(mac + ETH_ALEN, fib.smac, ETH_ALEN);
	return fib.ifindex;
}

static __always_inline int lb_send(__u32 in_ifindex, __u32 ifindex)
{
	if (ifindex == in_ifindex)
		return XDP_TX;
	return bpf_redirect(ifindex, 0);
}

/* What the parser found. On the balancer's path the IP header is always
 * right after an untagged Ethernet header and has no options or extension
 * headers (those packets are passed), so every offset below is a constant. */
struct lb_packet {
	__u32 ifindex; /* ingress (read once: clang must not pick ctx fields by pointer) */
	__u32 l3_off;
	__u8 v6;
	__u8 tcp_flags;
	__u8 payload; /* TCP: the segment carries data */
};

#define LB_L3_OFF sizeof(struct ethhdr)

/* A service with inspection (DP_LB_SERVICE_F_INSPECT): what its packet
 * needs (dp_xdp.c, which has the verdict maps and the sockets). */
enum lb_inspect_need {
	LB_INSPECT_NO = 0,   /* decided allow, or nothing to read: balance it */
	LB_INSPECT_DROP = 1, /* decided drop */
	LB_INSPECT_USER = 2, /* undecided, with data: to user space, ready to send */
};
#define LB_INSPECT_F_DATA 0x100
int dp_lb_inspect(const struct dp_lb_conn_key *fk, __u32 flags, __u32 len);
static __always_inline int lb_to_user(struct xdp_md *ctx);
int dp_lb_stamp(struct xdp_md *ctx, const struct dp_lb_conn_key *ckey, __u32 flags);

/* The TCP or UDP checksum of the packet at `l4`; NULL if truncated, or for
 * UDP over IPv4 without a checksum (it stays without one). */
static __always_inline __sum16 *l4_csum_at(void *l4, __u8 proto, int v6, void *end)
{
	__sum16 *csum;

	if (proto == IPPROTO_TCP)
		csum = l4 + 16;
	else if (proto == IPPROTO_UDP)
		csum = l4 + 6;
	else
		return NULL;
	if ((void *)(csum + 1) > end)
		return NULL;
	if (!v6 && proto == IPPROTO_UDP && *csum == 0)
		return NULL;
	return csum;
}

/* Rewrites the source (`src` = 1) or destination address of the packet to
 * `to`, with its checksums; -1 if truncated. */
static __always_inline int lb_rewrite(struct xdp_md *ctx, int v6, int src, const __u32 *to,
				      __u8 proto)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	if (v6) {
		struct ipv6hdr *ip6 = data + LB_L3_OFF;

		if ((void *)(ip6 + 1) > end)
			return -1;
		rewrite_addr(src ? (__u32 *)&ip6->saddr : (__u32 *)&ip6->daddr, to, 1,
			     l4_csum_at(ip6 + 1, proto, 1, end), NULL);
	} else {
		struct iphdr *ip = data + LB_L3_OFF;

		if ((void *)(ip + 1) > end)
			return -1;
		rewrite_addr(src ? &ip->saddr : &ip->daddr, to, 0, l4_csum_at(ip + 1, proto, 0, end),
			     ip);
	}
	return 0;
}

/* nat mode: a reply of a backend (src = backend) gets the VIP as source. */
static __always_inline int lb_reply(struct xdp_md *ctx, struct dp_lb_conn_key *rkey,
				    struct lb_packet *p, __u32 options, __u32 len)
{
	struct dp_lb_nat *nat = bpf_map_lookup_elem(&lb_nat, rkey);
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex, vip[4];
	__u8 mac[2 * ETH_ALEN];

	if (!nat || options || p->l3_off != LB_L3_OFF) {
		count(DP_CNT_LB_OTHER);
		return XDP_PASS;
	}
	__builtin_memcpy(vip, nat->vip, 16);
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	ifindex = lb_next_hop(ctx, p->ifindex, eth, mac, p->v6, vip, (__u32 *)rkey->dst, rkey->proto);
	if (!ifindex) {
		count(DP_CNT_LB_NO_ROUTE);
		count(DP_CNT_LB_PASSED);
		return XDP_PASS;
	}
	if (lb_rewrite(ctx, p->v6, 1, vip, rkey->proto)) {
		count(DP_CNT_PARSE_ERRORS);
		return XDP_PASS;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, mac, 2 * ETH_ALEN);
	lb_stat(nat->service & 0xf, len, 0);
	count(DP_CNT_LB_REPLIES);
	return lb_send(p->ifindex, ifindex);
}

/* Pushes the outer header toward the backend (ipip mode). Returns the
 * egress ifindex, 0 when there is no next hop (the frame is untouched), -1
 * when the frame could not be grown. */
static __always_inline int lb_encap(struct xdp_md *ctx, const struct dp_lb_backend *be,
				    struct lb_packet *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 mac[2 * ETH_ALEN];
	__u32 ifindex;
	int hdr = p->v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);

	if ((void *)(eth + 1) > end)
		return -1;
	/* the next hop first: without one, the frame must stay as it came */
	ifindex = lb_next_hop(ctx, p->ifindex, eth, mac, p->v6, (const __u32 *)be->src,
			      (const __u32 *)be->addr, p->v6 ? IPPROTO_IPV6_ : IPPROTO_IPIP_);
	if (!ifindex)
		return 0;
	if (bpf_xdp_adjust_head(ctx, -hdr))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)eth + sizeof(*eth) + hdr > end)
		return -1;
	__builtin_memcpy(eth->h_dest, mac, 2 * ETH_ALEN);
	if (p->v6) {
		struct ipv6hdr *outer = (void *)(eth + 1);
		struct ipv6hdr *inner = (void *)(outer + 1);

		if ((void *)(inner + 1) > end)
			return -1;
		eth->h_proto = bpf_htons(ETH_P_IPV6);
		__builtin_memset(outer, 0, sizeof(*outer));
		outer->version = 6;
		outer->payload_len = bpf_htons(bpf_ntohs(inner->payload_len) + sizeof(*inner));
		outer->nexthdr = IPPROTO_IPV6_;
		outer->hop_limit = 64;
		__builtin_memcpy(&outer->saddr, be->src, 16);
		__builtin_memcpy(&outer->daddr, be->addr, 16);
	} else {
		struct iphdr *outer = (void *)(eth + 1);
		struct iphdr *inner = (void *)(outer + 1);

		if ((void *)(inner + 1) > end)
			return -1;
		eth->h_proto = bpf_htons(ETH_P_IP);
		outer->version = 4;
		outer->ihl = 5;
		outer->tos = inner->tos;
		outer->tot_len = bpf_htons(bpf_ntohs(inner->tot_len) + sizeof(*outer));
		outer->id = 0;
		outer->frag_off = 0;
		outer->ttl = 64;
		outer->protocol = IPPROTO_IPIP_;
		__builtin_memcpy(&outer->saddr, be->src, 4);
		__builtin_memcpy(&outer->daddr, be->addr, 4);
		ipv4_csum(outer);
	}
	return ifindex;
}

/* nat mode: the destination becomes the backend. */
static __always_inline int lb_dnat(struct xdp_md *ctx, const struct dp_lb_backend *be,
				   struct lb_packet *p, __u8 proto, const __u32 *client)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 mac[2 * ETH_ALEN];
	__u32 ifindex;

	if ((void *)(eth + 1) > end)
		return -1;
	ifindex = lb_next_hop(ctx, p->ifindex, eth, mac, p->v6, client, (const __u32 *)be->addr,
			      proto);
	if (!ifindex)
		return 0;
	__builtin_memcpy(eth->h_dest, mac, 2 * ETH_ALEN);
	if (lb_rewrite(ctx, p->v6, 0, (const __u32 *)be->addr, proto))
		return -1;
	return ifindex;
}

/* The load balancer's verdict on a parsed IP packet (see the top of this file). */
static __always_inline int lb_process(struct xdp_md *ctx, struct dp_lb_conn_key *ckey,
				      struct lb_packet *p, __u32 options, __u32 len)
{
	struct dp_lb_service_key skey = {};
	struct dp_lb_service *svc;
	struct dp_lb_conn *conn;
	struct dp_lb_backend *be = NULL;
	__u32 backend = DP_LB_NO_BACKEND, new_conn = 0;
	int ifindex, inspect = LB_INSPECT_NO;

	__builtin_memcpy(skey.addr, ckey->dst, 16);
	skey.port = ckey->dport;
	skey.proto = ckey->proto;
	skey.family = ckey->family;
	svc = bpf_map_lookup_elem(&lb_services, &skey);
	if (!svc) {
		if (dp_cfg_lb_nat)
			return lb_reply(ctx, ckey, p, options, len);
		count(DP_CNT_LB_OTHER);
		return XDP_PASS;
	}
	if (options || p->l3_off != LB_L3_OFF) {
		/* IP options or a VLAN tag: the stack's job, not ours to mangle */
		count(DP_CNT_LB_PASSED);
		return XDP_PASS;
	}

	/* A TCP SYN (without ACK) opens a new connection, even from a source
	 * port an old one used: it takes the current table, and its entry
	 * replaces the old one (as Katran does), so a drained or re-weighted
	 * backend gets no new connection through a stale entry. */
	conn = is_syn(ckey->proto, p->tcp_flags) ? NULL : bpf_map_lookup_elem(&lb_conns, ckey);
	if (conn && conn->backend < DP_LB_MAX_BACKENDS) {
		be = bpf_map_lookup_elem(&lb_backends, &conn->backend);
		if (be && be->family && (!(be->flags & DP_LB_BACKEND_F_DOWN) ||
					 !(svc->flags & DP_LB_SERVICE_F_RESET_DOWN))) {
			backend = conn->backend;
			conn->last_seen_ns = coarse_now();
			count(DP_CNT_LB_CONN_HITS);
		}
	}
	if (backend == DP_LB_NO_BACKEND) {
		__u32 slot = ((svc->id & 0xf) * 2 + (svc->table & 1)) * DP_LB_RING_SIZE +
			     lb_hash(ckey) % DP_LB_RING_SIZE;
		__u32 *pick = bpf_map_lookup_elem(&lb_rings, &slot);
		struct dp_lb_conn fresh = {};

		if (pick && *pick < DP_LB_MAX_BACKENDS)
			be = bpf_map_lookup_elem(&lb_backends, pick);
		if (!pick || !be || !be->family) {
			count(DP_CNT_LB_NO_BACKEND);
			return XDP_DROP;
		}
		backend = *pick;
		fresh.backend = backend;
		fresh.service = svc->id;
		if ((svc->flags & DP_LB_SERVICE_F_INSPECT) && is_syn(ckey->proto, p->tcp_flags))
			fresh.flags = DP_LB_CONN_F_FRESH;
		fresh.last_seen_ns = coarse_now();
		bpf_map_update_elem(&lb_conns, ckey, &fresh, BPF_ANY);
		count(DP_CNT_LB_CONN_MISSES);
		if (ckey->proto == IPPROTO_TCP && !(p->tcp_flags & TCP_FLAG_SYN))
			count(DP_CNT_LB_CONN_LOST);
		new_conn = 1;
		if (svc->mode == DP_LB_MODE_NAT) {
			struct dp_lb_conn_key rkey = {};
			struct dp_lb_nat nat = {};

			__builtin_memcpy(rkey.src, be->addr, 16);
			__builtin_memcpy(rkey.dst, ckey->src, 16);
			rkey.sport = ckey->dport;
			rkey.dport = ckey->sport;
			rkey.proto = ckey->proto;
			rkey.family = ckey->family;
			__builtin_memcpy(nat.vip, ckey->dst, 16);
			nat.service = svc->id;
			bpf_map_update_elem(&lb_nat, &rkey, &nat, BPF_ANY);
		}
	}
	if (!be)
		return XDP_PASS;
	if (svc->flags & DP_LB_SERVICE_F_INSPECT) {
		struct dp_lb_conn_key fk = *ckey;

		if (svc->mode == DP_LB_MODE_NAT)
			__builtin_memcpy(fk.dst, be->addr, 16);
		inspect = dp_lb_inspect(&fk, p->tcp_flags | (p->payload ? LB_INSPECT_F_DATA : 0),
					len);
		if (inspect == LB_INSPECT_DROP) {
			count(DP_CNT_BYPASS_DROP);
			return XDP_DROP;
		}
		if (inspect == LB_INSPECT_USER) {
			__u32 meta_flags = 0;

			if (conn && (conn->flags & DP_LB_CONN_F_FRESH)) {
				conn->flags &= ~DP_LB_CONN_F_FRESH;
				meta_flags = DP_LB_META_F_NEW;
			}
			dp_lb_stamp(ctx, ckey, meta_flags);
		}
	}

	if (svc->mode == DP_LB_MODE_NAT)
		ifindex = lb_dnat(ctx, be, p, ckey->proto, (const __u32 *)ckey->src);
	else
		ifindex = lb_encap(ctx, be, p);
	if (ifindex < 0) {
		count(DP_CNT_PARSE_ERRORS);
		return XDP_DROP; /* the frame is half-rewritten: do not let it go */
	}
	if (ifindex == 0) {
		count(DP_CNT_LB_NO_ROUTE);
		count(DP_CNT_LB_PASSED);
		return XDP_PASS;
	}
	lb_stat(DP_LB_MAX_SERVICES + (backend & (DP_LB_MAX_BACKENDS - 1)), len, new_conn);
	if (inspect == LB_INSPECT_USER) {
		/* user space sends it from the socket of the interface it came in on */
		if (ifindex != (int)p->ifindex) {
			count(DP_CNT_LB_INSPECT_EGRESS);
			return XDP_DROP;
		}
		return lb_to_user(ctx);
	}
	count(DP_CNT_LB_FORWARDED);
	return lb_send(p->ifindex, ifindex);
}

#endif /* DP_LB_H */
