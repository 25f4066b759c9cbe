// SPDX-License-Identifier: GPL-2.0
/*
 * cairn XDP decapsulation (runs on backend nodes).
 *
 * Strips an outer IPv4 (protocol 4 or 41, RFC 2003 / RFC 4213) or IPv6 (next header 4 or 41,
 * RFC 2473) header whose inner destination is a VIP listed in `decap_vips`, rewrites the
 * Ethernet (and VLAN) header's protocol for the inner packet and returns XDP_PASS, so the
 * stack receives the client's packet unchanged, source address included. This kernel has no
 * ipip module, so the tunnel end is this program.
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

static __always_inline struct decap_stats *decap_counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&decap_stats, &zero);
}

/* Whether the inner packet at `inner` (protocol 4 or 41) is addressed to a known VIP. */
static __always_inline int inner_is_vip(void *inner, void *data_end, __u8 inner_proto,
					__be16 *inner_eth_proto)
{
	struct lb_addr dst;

	if (inner_proto == IPPROTO_IPIP_) {
		struct iphdr *iph = inner;

		if ((void *)(iph + 1) > data_end)
			return 0;
		addr_from_v4(&dst, iph->daddr);
		*inner_eth_proto = bpf_htons(ETH_P_IPV4);
	} else if (inner_proto == IPPROTO_IPV6_) {
		struct ipv6hdr *ip6h = inner;

		if ((void *)(ip6h + 1) > data_end)
			return 0;
		addr_from_v6(&dst, &ip6h->daddr);
		*inner_eth_proto = bpf_htons(ETH_P_IPV6_);
	} else {
		return 0;
	}
	return bpf_map_lookup_elem(&decap_vips, &dst) != NULL;
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct decap_stats *stats = decap_counters();
	struct l2_info l2 = {};
	__be16 inner_eth_proto = 0;
	void *l3 = NULL;
	struct ethhdr *eth;
	struct ethhdr saved;
	int outer_len;

	if (parse_l2(data, data_end, &l2, &l3) >= 0)
		goto pass;
	if (l2.proto == bpf_htons(ETH_P_IPV4)) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) > data_end)
			goto pass;
		if (iph->ihl < 5 || (iph->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET_MASK)))
			goto pass;
		outer_len = iph->ihl * 4;
		if (!inner_is_vip(l3 + outer_len, data_end, iph->protocol, &inner_eth_proto))
			goto pass;
	} else {
		struct ipv6hdr *ip6h = l3;

		if ((void *)(ip6h + 1) > data_end)
			goto pass;
		outer_len = sizeof(*ip6h);
		if (!inner_is_vip(ip6h + 1, data_end, ip6h->nexthdr, &inner_eth_proto))
			goto pass;
	}
	eth = data;
	if ((void *)(eth + 1) > data_end)
		goto pass;
	__builtin_memcpy(&saved, eth, sizeof(saved));
	if (bpf_xdp_adjust_head(ctx, outer_len)) {
		if (stats)
			stats->malformed += 1;
		return XDP_DROP;
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, saved.h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_source, saved.h_source, ETH_ALEN);
	if (l2.has_vlan) {
		struct vlan_hdr_ *vlan = (void *)(eth + 1);

		if ((void *)(vlan + 1) > data_end)
			return XDP_DROP;
		eth->h_proto = l2.vlan_proto;
		vlan->tci = l2.vlan_tci;
		vlan->proto = inner_eth_proto;
	} else {
		eth->h_proto = inner_eth_proto;
	}
	if (stats)
		stats->decapsulated += 1;
	return XDP_PASS;
pass:
	if (stats)
		stats->passed += 1;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
