// SPDX-License-Identifier: GPL-2.0
/*
 * Helper programs for veth plumbing, tests and benchmarks.
 *  - xdp_pass: XDP_PASS everything. A veth whose peer is the target of XDP_TX or bpf_redirect
 *    needs an XDP program of its own; this is that program.
 *  - xdp_count_drop: counts packets and bytes, then drops them (the receiving end of a
 *    throughput benchmark).
 * Neither reads packet contents.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* key 0 -> per-CPU {packets, bytes} seen by xdp_count_drop */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64[2]);
	__uint(max_entries, 1);
} sink_counts SEC(".maps");

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_count_drop(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *counts = bpf_map_lookup_elem(&sink_counts, &zero);

	if (counts) {
		counts[0] += 1;
		counts[1] += ctx->data_end - ctx->data;
	}
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
