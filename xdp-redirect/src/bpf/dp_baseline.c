// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Baseline programs for benchmarks: the cheapest possible XDP programs,
 * measured in the same run as dp_xdp so its cost can be stated as a ratio and
 * a difference rather than an absolute figure on a noisy machine.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

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

/*
 * In-kernel traffic generator for BPF_PROG_TEST_RUN with
 * BPF_F_TEST_XDP_LIVE_FRAMES (what xdp-trafficgen does): each run rewrites
 * the UDP ports of the template frame to pick a flow, then XDP_TX sends it
 * out of the ingress interface. Flow mix, from `gen_config`:
 *   every `short_every`-th packet belongs to a short flow of `short_len`
 *   packets (a new flow each time); the others cycle over `long_flows` long
 *   flows. The template's UDP checksum must be 0 (none), as ports change.
 * Each CPU generates its own flows (as RSS would give each queue its own),
 * so two generator threads never update the same flow's state.
 */
struct gen_config {
	__u32 long_flows;
	__u32 short_every; /* 0: no short flows */
	__u32 short_len;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_config);
} gen_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

/* Ethernet (14) + IPv4 without options (20): where the UDP ports are. */
#define GEN_UDP_OFFSET 34

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__be16 *ports = data + GEN_UDP_OFFSET;
	__u32 zero = 0;
	struct gen_config *cfg = bpf_map_lookup_elem(&gen_config, &zero);
	__u64 *seq = bpf_map_lookup_elem(&gen_seq, &zero);
	__u64 n, flow;
	__u32 cpu;
	__u16 sport, dport;

	if (!cfg || !seq || (void *)(ports + 2) > end)
		return XDP_ABORTED;
	n = (*seq)++;
	cpu = bpf_get_smp_processor_id() % 8;
	if (cfg->short_every && n % cfg->short_every == 0) {
		flow = (n / cfg->short_every) / (cfg->short_len ? cfg->short_len : 1);
		sport = 10000 + flow % 50000;
		dport = 20000 + cpu * 2000 + (flow / 50000) % 2000;
	} else {
		flow = n % (cfg->long_flows ? cfg->long_flows : 1);
		sport = 1000 + cpu * 1000 + flow % 1000;
		dport = 9;
	}
	ports[0] = bpf_htons(sport);
	ports[1] = bpf_htons(dport);
	return XDP_TX;
}
