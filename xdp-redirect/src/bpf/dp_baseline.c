// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Baseline programs for benchmarks: the cheapest possible XDP programs,
 * measured in the same run as dp_xdp so its cost can be stated as a ratio and
 * a difference rather than an absolute figure on a noisy machine.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "dp_abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, DP_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} bare_xsks SEC(".maps");

/* Kernel ceiling: drop everything. */
SEC("xdp")
int xdp_drop_all(struct xdp_md *ctx)
{
	return XDP_DROP;
}

/* Hand everything to the stack untouched. */
SEC("xdp")
int xdp_pass_all(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* User-space ceiling: every packet to the AF_XDP socket of its queue, no parsing. */
SEC("xdp")
int xdp_xsk_all(struct xdp_md *ctx)
{
	return bpf_redirect_map(&bare_xsks, ctx->rx_queue_index, XDP_PASS);
}

/* A bare inline bridge: every frame out of the other port. Keyed by the
 * ingress ifindex, the value is the egress ifindex. The reference for the
 * data plane's bridge mode. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, DP_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} bare_peers SEC(".maps");

SEC("xdp")
int xdp_bridge(struct xdp_md *ctx)
{
	return bpf_redirect_map(&bare_peers, ctx->ingress_ifindex, XDP_PASS);
}

/* Traffic sink for benchmarks: counts frames and bytes per CPU, drops them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sink_counters SEC(".maps");

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	__u32 packets = 0, bytes = 1;
	__u64 *p = bpf_map_lookup_elem(&sink_counters, &packets);
	__u64 *b = bpf_map_lookup_elem(&sink_counters, &bytes);

	if (p)
		*p += 1;
	if (b)
		*b += ctx->data_end - ctx->data;
	return XDP_DROP;
}
