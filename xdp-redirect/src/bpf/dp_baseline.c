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

/* Send every frame back out of the port it came in on (XDP_TX) with the
 * MACs swapped, touching nothing else: the ceiling of one-armed forwarding
 * (what a balancer that did no work would reach). */
SEC("xdp")
int xdp_tx_all(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	unsigned char tmp[6];

	if (data + 12 > end)
		return XDP_DROP;
	__builtin_memcpy(tmp, data, 6);
	__builtin_memcpy(data, data + 6, 6);
	__builtin_memcpy(data + 6, tmp, 6);
	return XDP_TX;
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
 * the template frame's ports (and stamp) per `struct dp_gen_config` (see
 * dp_abi.h), then XDP_TX sends it out of the ingress interface. Live frames
 * reuse pages without re-initialising them, so every field that changes is
 * rewritten on every run, and the checksum is updated from the values the
 * frame holds, whatever run wrote them.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dp_gen_config);
} gen_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

/* Bounds the verifier needs for the configured offsets. */
#define GEN_MAX_OFF 1500

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;

#pragma unroll
	for (int i = 0; i < 4; i++)
		if (s >> 16)
			s = (s & 0xffff) + (s >> 16);
	return ~s;
}

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct dp_gen_config *cfg = bpf_map_lookup_elem(&gen_config, &zero);
	__u64 *seq = bpf_map_lookup_elem(&gen_seq, &zero);
	__u32 old_ports, new_ports;
	struct dp_gen_stamp old_stamp = {}, new_stamp = {};
	__u16 *ports, *csum = NULL;
	struct dp_gen_stamp *stamp = NULL;
	__u64 n, flow;
	__u32 cpu, off;
	__u16 sport, dport;
	__s64 sum;

	if (!cfg || !seq)
		return XDP_ABORTED;
	/* restore the template's headers, 8 bytes at a time */
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (i * 8 >= cfg->header_len || data + i * 8 + 8 > end)
			break;
		__builtin_memcpy(data + i * 8, cfg->header + i * 8, 8);
	}
	off = cfg->l4_off;
	if (off > GEN_MAX_OFF)
		return XDP_ABORTED;
	ports = data + off;
	if ((void *)(ports + 2) > end)
		return XDP_ABORTED;
	if (cfg->csum_off) {
		off = cfg->csum_off;
		if (off > GEN_MAX_OFF)
			return XDP_ABORTED;
		csum = data + off;
		if ((void *)(csum + 1) > end)
			return XDP_ABORTED;
	}
	if (cfg->stamp_off) {
		off = cfg->stamp_off;
		if (off > GEN_MAX_OFF)
			return XDP_ABORTED;
		stamp = data + off;
		if ((void *)(stamp + 1) > end)
			return XDP_ABORTED;
	}

	n = (*seq)++;
	cpu = bpf_get_smp_processor_id() % 8;
	if (cfg->short_every && n % cfg->short_every == 0) {
		flow = (n / cfg->short_every) / (cfg->short_len ? cfg->short_len : 1);
		if (cfg->short_fixed_dport) {
			/* each of the (up to 2) sending CPUs its own 27500 */
			sport = 10000 + (cpu % 2) * 27500 + flow % 27500;
			dport = cfg->dport;
		} else {
			sport = 10000 + flow % 50000;
			dport = 20000 + cpu * 2000 + (flow / 50000) % 2000;
		}
	} else {
		__u32 flows = cfg->long_flows ? cfg->long_flows : 1;

		flow = n % flows;
		sport = cfg->sport_base + cpu * flows + flow;
		dport = cfg->dport;
	}

	__builtin_memcpy(&old_ports, ports, 4);
	ports[0] = bpf_htons(sport);
	ports[1] = bpf_htons(dport);
	__builtin_memcpy(&new_ports, ports, 4);
	if (stamp) {
		__builtin_memcpy(&old_stamp, stamp, sizeof(old_stamp));
		new_stamp.seq = bpf_cpu_to_be64(n);
		new_stamp.sent_ns = bpf_cpu_to_be64(bpf_ktime_get_ns());
		__builtin_memcpy(stamp, &new_stamp, sizeof(new_stamp));
	}
	if (csum) {
		sum = bpf_csum_diff(&old_ports, 4, &new_ports, 4, ~((__u32)*csum) & 0xffff);
		if (stamp)
			sum = bpf_csum_diff((__be32 *)&old_stamp, sizeof(old_stamp),
					    (__be32 *)&new_stamp, sizeof(new_stamp), sum);
		*csum = csum_fold(sum) ?: 0xffff;
	}
	return XDP_TX;
}

/*
 * Latency sink: for every UDP frame (IPv4 or IPv6, no VLAN) whose payload
 * starts with a struct dp_gen_stamp, the one-way latency (now - sent_ns, the
 * same CLOCK_MONOTONIC on one host) goes into a ring buffer for user space;
 * then the frame is dropped. Counters: [0] stamped frames, [1] frames without
 * a stamp, [2] samples lost to a full ring buffer.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} latency_samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} latency_counters SEC(".maps");

static __always_inline void latency_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&latency_counters, &idx);

	if (v)
		*v += 1;
}

SEC("xdp")
int xdp_latency(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 now = bpf_ktime_get_ns();
	struct dp_gen_stamp *stamp;
	__u16 proto;
	__u32 l4;
	__u64 sent, *slot;

	if (data + 14 > end)
		goto unstamped;
	proto = *(__u16 *)(data + 12);
	if (proto == bpf_htons(0x0800)) {
		if (data + 34 > end || *(__u8 *)(data + 23) != 17 || (*(__u8 *)(data + 14) & 0x0f) != 5)
			goto unstamped;
		l4 = 34;
	} else if (proto == bpf_htons(0x86dd)) {
		if (data + 54 > end || *(__u8 *)(data + 20) != 17)
			goto unstamped;
		l4 = 54;
	} else {
		goto unstamped;
	}
	stamp = data + l4 + 8;
	if ((void *)(stamp + 1) > end)
		goto unstamped;
	sent = bpf_be64_to_cpu(stamp->sent_ns);
	if (sent == 0 || sent > now)
		goto unstamped;
	latency_count(0);
	slot = bpf_ringbuf_reserve(&latency_samples, sizeof(*slot), 0);
	if (!slot) {
		latency_count(2);
		return XDP_DROP;
	}
	*slot = now - sent;
	bpf_ringbuf_submit(slot, BPF_RB_NO_WAKEUP);
	return XDP_DROP;
unstamped:
	/* ARP, ping and the rest go on to the stack: latency under load can
	 * be measured with ping too. */
	latency_count(1);
	return XDP_PASS;
}
