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
