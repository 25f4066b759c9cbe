/* Constants shared by lb.bpf.c and decap.bpf.c. Mirrored in Rust by src/abi.rs: keep in sync. */
#ifndef CAIRN_LB_CONSTS_H
#define CAIRN_LB_CONSTS_H

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
/* The flow hash reads packet bytes as native words; user space assumes little-endian. */
#error "cairn's XDP programs support little-endian hosts only"
#endif

/* Helper return value meaning "no verdict yet, keep going"; verdicts are >= 0. */
#define LB_CONTINUE (-1)

#define ETH_P_IPV4 0x0800
#define ETH_P_IPV6_ 0x86DD
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8

#define IPPROTO_IPIP_ 4
#define IPPROTO_IPV6_ 41

#define IPV4_HDR_LEN 20
#define IPV6_HDR_LEN 40
#define VLAN_HDR_LEN 4

/* IPv4 flags/fragment-offset field: "more fragments" and the offset itself. */
#define IPV4_MF 0x2000
#define IPV4_OFFSET_MASK 0x1FFF

#define LB_TCP_SYN 0x02
#define LB_TCP_ACK 0x10

/* ICMP destination unreachable / fragmentation needed (RFC 792, RFC 1191). */
#define ICMP_DEST_UNREACH_ 3
#define ICMP_FRAG_NEEDED_ 4
/* ICMPv6 packet too big (RFC 4443 §3.2). */
#define ICMPV6_PKT_TOOBIG_ 2
#define ICMP_HDR_LEN 8

/* IPv6 extension headers that may follow the fixed header. */
#define IPV6_NH_HOP 0
#define IPV6_NH_ROUTING 43
#define IPV6_NH_FRAGMENT 44
#define IPV6_NH_DEST 60

/* Address family tags used in keys (0 = unused entry). */
#define LB_FAMILY_V4 4
#define LB_FAMILY_V6 6

/* Outer TTL / hop limit of encapsulated packets. */
#define LB_OUTER_TTL 64

/* Backend index 0 means "none": an empty ring slot or a flow entry not set on this CPU. */
#define LB_NO_BACKEND 0

/* Drop reasons, one counter each (mirrored by `DropReason` in src/abi.rs). */
enum lb_drop_reason {
	/* An IP fragment addressed to a VIP address (ports unknown: cannot be hashed). */
	LB_DROP_FRAGMENT = 0,
	/* Lengths that contradict the packet or a truncated L3/L4 header, for a VIP address. */
	LB_DROP_MALFORMED = 1,
	/* An IPv6 extension header (other than fragment) before the transport header. */
	LB_DROP_IPV6_EXT = 2,
	/* Inner packet plus outer header would exceed the configured MTU. */
	LB_DROP_TOO_BIG = 3,
	/* The VIP has no backend with a weight. */
	LB_DROP_NO_BACKEND = 4,
	/* No next hop (MACs) for the chosen backend and no default. */
	LB_DROP_NO_NEXT_HOP = 5,
	/* No local source address of the backend's family configured. */
	LB_DROP_NO_SOURCE = 6,
	/* bpf_xdp_adjust_head refused to grow the packet. */
	LB_DROP_ENCAP_FAILED = 7,
	LB_DROP_MAX = 8,
};

#endif
