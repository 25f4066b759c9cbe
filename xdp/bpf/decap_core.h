/*
 * The tunnel end, shared by decap.bpf.c (`xdp_decap`) and lb.bpf.c (`xdp_lb`, for nodes that
 * balance and are backends on one interface): strips an outer IPv4 (protocol 4 or 41,
 * RFC 2003 / RFC 4213) or IPv6 (next header 4 or 41, RFC 2473) header whose inner destination
 * is a VIP listed in the caller's VIP map, rewrites the Ethernet (and VLAN) header's protocol
 * for the inner packet and returns XDP_PASS, so the stack receives the client's packet
 * unchanged, source address included. The outer destination is not checked: the VIP list is
 * the filter (a tunnel to a VIP this node serves is for this node, whichever of its addresses
 * it was sent to).
 *
 * The caller has parsed L2 and checked the outer header (IPv4: IHL >= 5, not a fragment); maps
 * are passed in so that each program uses its own. Every pointer is checked against data_end
 * before it is read. Nothing but a decapsulated packet is modified.
 */
#ifndef CAIRN_DECAP_CORE_H
#define CAIRN_DECAP_CORE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_consts.h"
#include "lb_structs.h"
#include "pckt_parsing.h"

/* Whether `proto` (outer IPv4 protocol / IPv6 next header) announces a tunnelled IP packet. */
static __always_inline int is_tunnel_proto(__u8 proto)
{
	return proto == IPPROTO_IPIP_ || proto == IPPROTO_IPV6_;
}

/*
 * Whether the inner packet at `inner` (protocol 4 or 41) is addressed to a VIP of `vips`; sets
 * the inner packet's Ethernet protocol.
 */
static __always_inline int decap_inner_is_vip(void *inner, void *data_end, __u8 inner_proto,
					      void *vips, __be16 *inner_eth_proto)
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
	return bpf_map_lookup_elem(vips, &dst) != NULL;
}

/*
 * The verdict for a packet whose outer IP header (`outer_len` bytes, already checked by the
 * caller) carries `inner_proto`: stripped and XDP_PASS (counted `decapsulated`) when the inner
 * destination is in `vips`; XDP_PASS untouched (counted `passed`) otherwise; XDP_DROP (counted
 * `malformed`) when the kernel refuses to shrink the packet. `stats` may be NULL. Packet
 * pointers the caller holds are invalid afterwards.
 */
static __always_inline int decap_tunnel(struct xdp_md *ctx, const struct l2_info *l2,
					void *inner, __u8 inner_proto, int outer_len, void *vips,
					struct decap_stats *stats)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__be16 inner_eth_proto = 0;
	struct ethhdr *eth = data;
	struct ethhdr saved;

	if (!decap_inner_is_vip(inner, data_end, inner_proto, vips, &inner_eth_proto))
		goto pass;
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
	if (l2->has_vlan) {
		struct vlan_hdr_ *vlan = (void *)(eth + 1);

		if ((void *)(vlan + 1) > data_end)
			return XDP_DROP;
		eth->h_proto = l2->vlan_proto;
		vlan->tci = l2->vlan_tci;
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

#endif
