/*
 * Packet parsing for lb.bpf.c and decap.bpf.c: Ethernet with at most one 802.1Q/802.1ad tag,
 * IPv4 (RFC 791, options skipped by IHL), IPv6 (RFC 8200, no extension headers), TCP, UDP and
 * the embedded header of ICMP "fragmentation needed" (RFC 792/1191) / ICMPv6 "packet too big"
 * (RFC 4443 §3.2). Every read is preceded by its own bounds check against data_end.
 * Nothing here writes to the packet.
 */
#ifndef CAIRN_PCKT_PARSING_H
#define CAIRN_PCKT_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "lb_structs.h"

struct vlan_hdr_ {
	__be16 tci;
	__be16 proto;
};

/* Where the L3 header starts and what the L2 header looked like. */
struct l2_info {
	__be16 proto;
	__be16 vlan_tci;
	__be16 vlan_proto;
	__u8 has_vlan;
};

/*
 * Parses Ethernet and one VLAN tag; *l3 is set to the IP header. LB_CONTINUE, or XDP_PASS for
 * anything not IP.
 */
static __always_inline int parse_l2(void *data, void *data_end, struct l2_info *l2, void **l3)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	l2->proto = eth->h_proto;
	*l3 = eth + 1;
	l2->has_vlan = 0;
	if (l2->proto == bpf_htons(ETH_P_8021Q_) || l2->proto == bpf_htons(ETH_P_8021AD_)) {
		struct vlan_hdr_ *vlan = (void *)(eth + 1);

		if ((void *)(vlan + 1) > data_end)
			return XDP_PASS;
		l2->has_vlan = 1;
		l2->vlan_proto = eth->h_proto;
		l2->vlan_tci = vlan->tci;
		l2->proto = vlan->proto;
		*l3 = vlan + 1;
	}
	if (l2->proto != bpf_htons(ETH_P_IPV4) && l2->proto != bpf_htons(ETH_P_IPV6_))
		return XDP_PASS;
	return LB_CONTINUE;
}

/* ICMP and ICMPv6 share this 8-byte header layout (type, code, checksum, 4 bytes). */
struct icmp_hdr_ {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};

/* The ports of a TCP/UDP header, the first 4 bytes of either. */
struct l4_ports {
	__be16 source;
	__be16 dest;
};

static __always_inline void addr_from_v4(struct lb_addr *out, __be32 addr)
{
	out->addr[0] = addr;
	out->addr[1] = 0;
	out->addr[2] = 0;
	out->addr[3] = 0;
	out->family = LB_FAMILY_V4;
	out->pad[0] = out->pad[1] = out->pad[2] = 0;
}

static __always_inline void addr_from_v6(struct lb_addr *out, const struct in6_addr *addr)
{
	__builtin_memcpy(out->addr, addr->in6_u.u6_addr32, 16);
	out->family = LB_FAMILY_V6;
	out->pad[0] = out->pad[1] = out->pad[2] = 0;
}

#endif
