// SPDX-License-Identifier: GPL-2.0
/*
 * cairn XDP load balancer (runs on the node receiving VIP traffic).
 *
 * For a packet to a configured service (VIP, port, protocol), or (VIP, any port, protocol):
 * pick a backend node (LRU flow table with per-CPU LRU lists for non-SYN packets, else the
 * VIP's Maglev ring indexed by jhash of the 5-tuple), prepend an outer IPv4 (IP-in-IP, RFC 2003) or IPv6
 * (RFC 2473) header from this node to the backend node, set the outer MACs stored with the
 * backend, and XDP_TX it (or bpf_redirect to the configured egress interface). The inner packet is not
 * modified, so the backend sees the client's address and replies directly (DSR).
 *
 * Decisions (tested in tests/fixtures.rs):
 *  - not addressed to a VIP address, not IP, or an L3 header too short to read: XDP_PASS untouched;
 *  - to a VIP address but no matching service (other port, other protocol, ICMP other than
 *    "fragmentation needed"/"packet too big"): XDP_PASS, the node's stack answers;
 *  - IP fragments to a VIP address: XDP_DROP (LB_DROP_FRAGMENT): only the first carries ports,
 *    so fragments of one datagram could not be kept together;
 *  - IPv4 options: forwarded (the L4 header is found by IHL; the inner packet is not changed);
 *  - IPv6 extension headers before TCP/UDP: XDP_DROP (LB_DROP_IPV6_EXT);
 *  - inner length + outer header > configured MTU: XDP_DROP (LB_DROP_TOO_BIG); the fabric
 *    between nodes must carry client MTU + 40 bytes;
 *  - ICMP frag-needed / ICMPv6 packet-too-big to a VIP: hashed on the embedded header with
 *    addresses and ports swapped, so it reaches the backend owning the connection;
 *  - a tunnel (outer protocol / next header 4 or 41) whose inner destination is in
 *    `lb_decap_vips`: stripped and passed to the stack, exactly as xdp_decap does (decap_core.h),
 *    because one interface carries one XDP program and a node is often both load balancer and
 *    backend; a tunnel to another inner address: XDP_PASS untouched. Both counted in
 *    `lb_decap_stats` (only tunnel packets are: `passed` counts tunnels not stripped). Outer
 *    fragments and outer lengths beyond the frame follow the rules above (passed, not counted).
 *
 * Cost: a flow-table hit makes two hash lookups (service, flow) and three inlined array
 * lookups (config, counters, backend with its MACs); the flow hash is computed only on a miss
 * or for an IPv6 outer flow label. `vip_addrs` is consulted only for fragments and malformed
 * packets, to tell a VIP's (dropped, counted) from anyone else's (passed). The tunnel end's
 * maps are read only for packets whose outer protocol is 4 or 41, after the TCP/UDP test.
 *
 * It must not modify packets it passes, nor trust any length field before checking it.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"
#include "lb_hash.h"
#include "pckt_parsing.h"
#include "decap_core.h"

/* A parsed packet to a VIP address. */
struct packet {
	struct flow_key flow;
	struct l2_info l2;
	/* Family of the client packet (LB_FAMILY_V4/V6). */
	__u8 family;
	__u8 tcp_flags;
	/* The flow comes from the embedded header of an ICMP error (already swapped). */
	__u8 icmp_error;
	/* DSCP/ECN byte of the client packet, copied to the outer header. */
	__u8 tos;
	/* Length of the client's IP packet (header + payload). */
	__u16 ip_len;
};

static __always_inline struct vip_stats *stats_for(__u32 slot)
{
	return bpf_map_lookup_elem(&vip_stats, &slot);
}

static __always_inline int drop(__u32 slot, enum lb_drop_reason reason)
{
	struct vip_stats *stats = stats_for(slot);

	if (stats && reason < LB_DROP_MAX)
		stats->drops[reason] += 1;
	return XDP_DROP;
}

/* Off the forwarding path: drop and count if `dst` is a VIP address, else pass untouched. */
static __always_inline int drop_if_vip(struct lb_addr *dst, __u32 global,
				       enum lb_drop_reason reason)
{
	if (bpf_map_lookup_elem(&vip_addrs, dst))
		return drop(global, reason);
	return XDP_PASS;
}

/* Fills ports and flags from a TCP/UDP header at l4. */
static __always_inline int parse_ports(void *l4, void *data_end, __u8 proto, struct packet *pkt,
				       struct lb_addr *dst, __u32 global)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return drop_if_vip(dst, global, LB_DROP_MALFORMED);
		pkt->flow.sport = tcp->source;
		pkt->flow.dport = tcp->dest;
		pkt->tcp_flags = ((__u8 *)tcp)[13];
	} else {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return drop_if_vip(dst, global, LB_DROP_MALFORMED);
		pkt->flow.sport = udp->source;
		pkt->flow.dport = udp->dest;
	}
	pkt->flow.proto = proto;
	return LB_CONTINUE;
}

/* The flow of an ICMP error's embedded IPv4 header, swapped to the client → VIP direction. */
static __always_inline int parse_icmp4_error(void *inner, void *data_end, struct packet *pkt,
					     struct lb_addr *dst, __u32 global)
{
	struct iphdr *iph = inner;
	struct l4_ports *ports;
	__u8 ihl;

	if ((void *)(iph + 1) > data_end)
		return drop_if_vip(dst, global, LB_DROP_MALFORMED);
	ihl = iph->ihl;
	if (ihl < 5)
		return drop_if_vip(dst, global, LB_DROP_MALFORMED);
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		return XDP_PASS;
	ports = inner + ihl * 4;
	if ((void *)(ports + 1) > data_end)
		return drop_if_vip(dst, global, LB_DROP_MALFORMED);
	pkt->flow.src[0] = iph->daddr;
	pkt->flow.dst[0] = iph->saddr;
	pkt->flow.sport = ports->dest;
	pkt->flow.dport = ports->source;
	pkt->flow.proto = iph->protocol;
	pkt->icmp_error = 1;
	return LB_CONTINUE;
}

static __always_inline int parse_icmp6_error(void *inner, void *data_end, struct packet *pkt,
					     struct lb_addr *dst, __u32 global)
{
	struct ipv6hdr *ip6h = inner;
	struct l4_ports *ports;

	if ((void *)(ip6h + 1) > data_end)
		return drop_if_vip(dst, global, LB_DROP_MALFORMED);
	if (ip6h->nexthdr != IPPROTO_TCP && ip6h->nexthdr != IPPROTO_UDP)
		return XDP_PASS;
	ports = (void *)(ip6h + 1);
	if ((void *)(ports + 1) > data_end)
		return drop_if_vip(dst, global, LB_DROP_MALFORMED);
	__builtin_memcpy(pkt->flow.src, ip6h->daddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(pkt->flow.dst, ip6h->saddr.in6_u.u6_addr32, 16);
	pkt->flow.sport = ports->dest;
	pkt->flow.dport = ports->source;
	pkt->flow.proto = ip6h->nexthdr;
	pkt->icmp_error = 1;
	return LB_CONTINUE;
}

static __always_inline struct decap_stats *decap_counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&lb_decap_stats, &zero);
}

static __always_inline int parse_ipv4(struct xdp_md *ctx, void *l3, void *data_end,
				      struct packet *pkt, __u32 global)
{
	struct iphdr *iph = l3;
	struct lb_addr dst;
	__u16 tot_len;
	__u8 ihl;

	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	addr_from_v4(&dst, iph->daddr);
	ihl = iph->ihl;
	tot_len = bpf_ntohs(iph->tot_len);
	if (ihl < 5 || tot_len < ihl * 4 ||
	    (void *)iph + tot_len > data_end)
		return drop_if_vip(&dst, global, LB_DROP_MALFORMED);
	if (iph->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET_MASK))
		return drop_if_vip(&dst, global, LB_DROP_FRAGMENT);
	pkt->family = LB_FAMILY_V4;
	pkt->tos = iph->tos;
	pkt->ip_len = tot_len;
	pkt->flow.src[0] = iph->saddr;
	pkt->flow.dst[0] = iph->daddr;
	if (iph->protocol == IPPROTO_TCP || iph->protocol == IPPROTO_UDP)
		return parse_ports((void *)iph + ihl * 4, data_end, iph->protocol, pkt, &dst, global);
	if (is_tunnel_proto(iph->protocol))
		return decap_tunnel(ctx, &pkt->l2, (void *)iph + ihl * 4, iph->protocol, ihl * 4,
				    &lb_decap_vips, decap_counters());
	if (iph->protocol == IPPROTO_ICMP) {
		struct icmp_hdr_ *icmp = (void *)iph + ihl * 4;

		if ((void *)(icmp + 1) > data_end)
			return drop_if_vip(&dst, global, LB_DROP_MALFORMED);
		if (icmp->type == ICMP_DEST_UNREACH_ && icmp->code == ICMP_FRAG_NEEDED_)
			return parse_icmp4_error((void *)(icmp + 1), data_end, pkt, &dst, global);
	}
	return XDP_PASS;
}

static __always_inline int parse_ipv6(struct xdp_md *ctx, void *l3, void *data_end,
				      struct packet *pkt, __u32 global)
{
	struct ipv6hdr *ip6h = l3;
	struct lb_addr dst;
	__u8 nexthdr;

	if ((void *)(ip6h + 1) > data_end)
		return XDP_PASS;
	addr_from_v6(&dst, &ip6h->daddr);
	if ((void *)(ip6h + 1) + bpf_ntohs(ip6h->payload_len) > data_end)
		return drop_if_vip(&dst, global, LB_DROP_MALFORMED);
	pkt->family = LB_FAMILY_V6;
	pkt->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
	pkt->ip_len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	__builtin_memcpy(pkt->flow.src, ip6h->saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(pkt->flow.dst, ip6h->daddr.in6_u.u6_addr32, 16);
	nexthdr = ip6h->nexthdr;
	if (nexthdr == IPPROTO_TCP || nexthdr == IPPROTO_UDP)
		return parse_ports((void *)(ip6h + 1), data_end, nexthdr, pkt, &dst, global);
	if (is_tunnel_proto(nexthdr))
		return decap_tunnel(ctx, &pkt->l2, (void *)(ip6h + 1), nexthdr, sizeof(*ip6h),
				    &lb_decap_vips, decap_counters());
	if (nexthdr == IPV6_NH_FRAGMENT)
		return drop_if_vip(&dst, global, LB_DROP_FRAGMENT);
	if (nexthdr == IPV6_NH_HOP || nexthdr == IPV6_NH_ROUTING || nexthdr == IPV6_NH_DEST)
		return drop_if_vip(&dst, global, LB_DROP_IPV6_EXT);
	if (nexthdr == IPPROTO_ICMPV6) {
		struct icmp_hdr_ *icmp6 = (void *)(ip6h + 1);

		if ((void *)(icmp6 + 1) > data_end)
			return drop_if_vip(&dst, global, LB_DROP_MALFORMED);
		if (icmp6->type == ICMPV6_PKT_TOOBIG_)
			return parse_icmp6_error((void *)(icmp6 + 1), data_end, pkt, &dst, global);
	}
	return XDP_PASS;
}

/*
 * The service of the packet: (VIP, port, proto), then (VIP, any port, proto) only when the
 * first misses and some "any port" service exists.
 */
static __always_inline struct vip_meta *lookup_service(struct packet *pkt, struct lb_config *cfg)
{
	struct vip_key key = {};
	struct vip_meta *meta;

	__builtin_memcpy(key.addr.addr, pkt->flow.dst, 16);
	key.addr.family = pkt->family;
	key.port = pkt->flow.dport;
	key.proto = pkt->flow.proto;
	meta = bpf_map_lookup_elem(&vips, &key);
	if (meta || !cfg->any_port_services)
		return meta;
	key.port = 0;
	return bpf_map_lookup_elem(&vips, &key);
}

/* The backend from the flow table, if the flow is known and its backend still live. */
static __always_inline struct backend *flow_backend(struct packet *pkt)
{
	struct flow_value *value = bpf_map_lookup_elem(&flows, &pkt->flow);
	struct backend *backend;
	__u32 index;

	if (!value || value->backend == LB_NO_BACKEND)
		return NULL;
	index = value->backend;
	backend = bpf_map_lookup_elem(&backends, &index);
	if (!backend || backend->addr.family == 0)
		return NULL;
	return backend;
}

static __always_inline __u32 maglev_backend(struct lb_config *cfg, __u32 vip_num, __u32 hash)
{
	__u32 slot;
	__u32 *index;

	if (cfg->ring_size == 0)
		return LB_NO_BACKEND;
	slot = vip_num * cfg->ring_size + hash % cfg->ring_size;
	index = bpf_map_lookup_elem(&maglev_rings, &slot);
	return index ? *index : LB_NO_BACKEND;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Writes the outer Ethernet (and VLAN) header; returns a pointer just past it, or NULL. */
static __always_inline void *write_l2(void *data, void *data_end, struct packet *pkt,
				      struct backend *nh, __be16 proto)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return NULL;
	__builtin_memcpy(eth->h_dest, nh->dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->src_mac, ETH_ALEN);
	if (pkt->l2.has_vlan) {
		struct vlan_hdr_ *vlan = (void *)(eth + 1);

		if ((void *)(vlan + 1) > data_end)
			return NULL;
		eth->h_proto = pkt->l2.vlan_proto;
		vlan->tci = pkt->l2.vlan_tci;
		vlan->proto = proto;
		return vlan + 1;
	}
	eth->h_proto = proto;
	return eth + 1;
}

/* Prepends the outer header towards `backend`. LB_CONTINUE, or XDP_DROP (counted). */
static __always_inline int encapsulate(struct xdp_md *ctx, struct packet *pkt, struct lb_config *cfg,
				       struct backend *backend, __u32 slot, __u32 hash)
{
	__u8 inner_proto = pkt->family == LB_FAMILY_V4 ? IPPROTO_IPIP_ : IPPROTO_IPV6_;
	void *data, *data_end, *l3;

	if (backend->addr.family == LB_FAMILY_V4) {
		struct iphdr *outer;
		__u32 sum = 0;
		__u16 *words;

		if (cfg->local_v4.family != LB_FAMILY_V4)
			return drop(slot, LB_DROP_NO_SOURCE);
		if (pkt->ip_len + sizeof(*outer) > cfg->mtu)
			return drop(slot, LB_DROP_TOO_BIG);
		if (bpf_xdp_adjust_head(ctx, -(int)sizeof(*outer)))
			return drop(slot, LB_DROP_ENCAP_FAILED);
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		l3 = write_l2(data, data_end, pkt, backend, bpf_htons(ETH_P_IPV4));
		if (!l3)
			return drop(slot, LB_DROP_ENCAP_FAILED);
		outer = l3;
		if ((void *)(outer + 1) > data_end)
			return drop(slot, LB_DROP_ENCAP_FAILED);
		outer->version = 4;
		outer->ihl = 5;
		outer->tos = pkt->tos;
		outer->tot_len = bpf_htons(pkt->ip_len + sizeof(*outer));
		outer->id = 0;
		outer->frag_off = 0;
		outer->ttl = LB_OUTER_TTL;
		outer->protocol = inner_proto;
		outer->check = 0;
		outer->saddr = cfg->local_v4.addr[0];
		outer->daddr = backend->addr.addr[0];
		words = (__u16 *)outer;
#pragma unroll
		for (int i = 0; i < (int)(sizeof(*outer) / 2); i++)
			sum += words[i];
		outer->check = csum_fold(sum);
	} else {
		struct ipv6hdr *outer;

		if (cfg->local_v6.family != LB_FAMILY_V6)
			return drop(slot, LB_DROP_NO_SOURCE);
		if (pkt->ip_len + sizeof(*outer) > cfg->mtu)
			return drop(slot, LB_DROP_TOO_BIG);
		if (bpf_xdp_adjust_head(ctx, -(int)sizeof(*outer)))
			return drop(slot, LB_DROP_ENCAP_FAILED);
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		l3 = write_l2(data, data_end, pkt, backend, bpf_htons(ETH_P_IPV6_));
		if (!l3)
			return drop(slot, LB_DROP_ENCAP_FAILED);
		outer = l3;
		if ((void *)(outer + 1) > data_end)
			return drop(slot, LB_DROP_ENCAP_FAILED);
		/* Flow label from the flow hash (RFC 6438) gives the fabric ECMP entropy. */
		outer->version = 6;
		outer->priority = pkt->tos >> 4;
		outer->flow_lbl[0] = ((pkt->tos & 0x0f) << 4) | ((hash >> 16) & 0x0f);
		outer->flow_lbl[1] = (hash >> 8) & 0xff;
		outer->flow_lbl[2] = hash & 0xff;
		outer->payload_len = bpf_htons(pkt->ip_len);
		outer->nexthdr = inner_proto;
		outer->hop_limit = LB_OUTER_TTL;
		__builtin_memcpy(outer->saddr.in6_u.u6_addr32, cfg->local_v6.addr, 16);
		__builtin_memcpy(outer->daddr.in6_u.u6_addr32, backend->addr.addr, 16);
	}
	return LB_CONTINUE;
}

/* Picks the backend, encapsulates and returns the final verdict for a VIP packet. */
static __always_inline int forward(struct xdp_md *ctx, struct packet *pkt, struct lb_config *cfg,
				   struct vip_meta *meta, __u64 frame_len)
{
	__u32 slot = meta->vip_num;
	struct vip_stats *stats = stats_for(slot);
	struct backend *backend = NULL;
	__u32 hash = 0;
	int is_syn = pkt->flow.proto == IPPROTO_TCP && (pkt->tcp_flags & LB_TCP_SYN) &&
		     !(pkt->tcp_flags & LB_TCP_ACK);
	int act;

	if (!is_syn)
		backend = flow_backend(pkt);
	if (backend) {
		if (stats)
			stats->flow_hits += 1;
		/* The hash is only needed for the outer IPv6 flow label. */
		if (backend->addr.family == LB_FAMILY_V6)
			hash = lb_hash_flow((__u32 *)&pkt->flow, cfg->hash_seed);
	} else {
		__u32 index;

		if (stats)
			stats->flow_misses += 1;
		hash = lb_hash_flow((__u32 *)&pkt->flow, cfg->hash_seed);
		index = maglev_backend(cfg, slot, hash);
		if (index == LB_NO_BACKEND)
			return drop(slot, LB_DROP_NO_BACKEND);
		backend = bpf_map_lookup_elem(&backends, &index);
		if (!backend || backend->addr.family == 0)
			return drop(slot, LB_DROP_NO_BACKEND);
		if (!pkt->icmp_error) {
			struct flow_value value = { .backend = index };

			bpf_map_update_elem(&flows, &pkt->flow, &value, BPF_ANY);
		}
	}
	if (!backend->hop_valid)
		return drop(slot, LB_DROP_NO_NEXT_HOP);
	act = encapsulate(ctx, pkt, cfg, backend, slot, hash);
	if (act >= 0)
		return act;
	if (stats) {
		stats->packets += 1;
		stats->bytes += frame_len;
	}
	if (cfg->egress_ifindex)
		return bpf_redirect(cfg->egress_ifindex, 0);
	return XDP_TX;
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct packet pkt = {};
	struct vip_meta *meta;
	struct lb_config *cfg;
	void *l3 = NULL;
	__u32 zero = 0;
	int act;

	act = parse_l2(data, data_end, &pkt.l2, &l3);
	if (act >= 0)
		return act;
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	if (!cfg)
		return XDP_PASS;
	if (pkt.l2.proto == bpf_htons(ETH_P_IPV4))
		act = parse_ipv4(ctx, l3, data_end, &pkt, cfg->global_stats_slot);
	else
		act = parse_ipv6(ctx, l3, data_end, &pkt, cfg->global_stats_slot);
	if (act >= 0)
		return act;
	meta = lookup_service(&pkt, cfg);
	if (!meta)
		return XDP_PASS;
	return forward(ctx, &pkt, cfg, meta, data_end - data);
}

char LICENSE[] SEC("license") = "GPL";
