// SPDX-License-Identifier: GPL-2.0
/*
 * cairn XDP decapsulation (runs on backend nodes whose tunnels arrive on an interface without
 * the load balancer; `xdp_lb` does the same on its own interface, see decap_core.h).
 *
 * Strips an outer IPv4 (protocol 4 or 41, RFC 2003 / RFC 4213) or IPv6 (next header 4 or 41,
 * RFC 2473) header whose inner destination is a VIP listed in `decap_vips`, rewrites the
 * Ethernet (and VLAN) header's protocol for the inner packet and returns XDP_PASS, so the
 * stack receives the client's packet unchanged, source address included. This kernel has no
 * ipip module, so the tunnel end is this program. Every packet not decapsulated is counted
 * `passed`.
 *
 * It must not touch anything else: non-tunnel packets, outer fragments, outer IPv6 extension
 * headers and tunnels to non-VIP inner addresses are passed untouched.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_consts.h"
#include "lb_structs.h"
#include "decap_maps.h"
#include "pckt_parsing.h"
#include "decap_core.h"

static __always_inline struct decap_stats *decap_counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&decap_stats, &zero);
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct decap_stats *stats = decap_counters();
	struct l2_info l2 = {};
	void *l3 = NULL;

	if (parse_l2(data, data_end, &l2, &l3) >= 0)
		goto pass;
	if (l2.proto == bpf_htons(ETH_P_IPV4)) {
		struct iphdr *iph = l3;
		int outer_len;

		if ((void *)(iph + 1) > data_end)
			goto pass;
		if (iph->ihl < 5 || (iph->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET_MASK)))
			goto pass;
		outer_len = iph->ihl * 4;
		return decap_tunnel(ctx, &l2, l3 + outer_len, iph->protocol, outer_len, &decap_vips,
				    stats);
	} else {
		struct ipv6hdr *ip6h = l3;

		if ((void *)(ip6h + 1) > data_end)
			goto pass;
		return decap_tunnel(ctx, &l2, ip6h + 1, ip6h->nexthdr, sizeof(*ip6h), &decap_vips,
				    stats);
	}
pass:
	if (stats)
		stats->passed += 1;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
