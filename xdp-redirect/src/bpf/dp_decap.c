// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdp_decap: for load-balancer backends in ipip mode (direct server return),
 * like Katran's decap program. Removes the outer IPv4 header of IPv4-in-IPv4
 * (protocol 4) and the outer IPv6 header of IPv6-in-IPv6 (next header 41)
 * and hands the inner packet, addressed to the VIP, to the stack; everything
 * else passes untouched. For kernels without the ipip/ip6_tunnel modules,
 * and cheaper than a tunnel device even with them.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* 0: decapsulated, 1: passed untouched */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} decap_counters SEC(".maps");

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&decap_counters, &idx);

	if (v)
		*v += 1;
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ethhdr copy;
	int outer;

	if ((void *)(eth + 1) > end)
		goto pass;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		/* no options on the balancer's outer header: anything else is not ours */
		if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != 4 ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			goto pass;
		outer = sizeof(struct iphdr);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != 41)
			goto pass;
		outer = sizeof(struct ipv6hdr);
	} else {
		goto pass;
	}
	__builtin_memcpy(&copy, eth, sizeof(copy));
	if (bpf_xdp_adjust_head(ctx, outer))
		goto pass;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(eth, &copy, sizeof(copy));
	bump(0);
	return XDP_PASS;
pass:
	bump(1);
	return XDP_PASS;
}
