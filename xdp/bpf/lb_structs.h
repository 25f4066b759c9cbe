/* Map keys and values of the LB and decap programs. Mirrored in Rust by src/abi.rs. */
#ifndef CAIRN_LB_STRUCTS_H
#define CAIRN_LB_STRUCTS_H

#include <linux/types.h>
#include "lb_consts.h"

/* An IP address: IPv4 in addr[0] (network order), rest zero; family LB_FAMILY_V4/V6. */
struct lb_addr {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

/* A service: VIP address, L4 port (network order, 0 = any port) and IP protocol. */
struct vip_key {
	struct lb_addr addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

/* What the program needs to know about a service. */
struct vip_meta {
	/* Index of the VIP's ring in `maglev_rings` and of its counters in `vip_stats`. */
	__u32 vip_num;
	__u32 flags;
};

/*
 * A backend node: the outer destination address and the outer MACs towards it, in one value so
 * that one (inlined) array lookup gives both. family 0 = unused index.
 */
struct backend {
	struct lb_addr addr;
	__u8 dst_mac[6];
	__u8 src_mac[6];
	/* Non-zero when the MACs are set (the backend's own next hop, or the default copied in). */
	__u16 hop_valid;
	/* Non-zero when the MACs are the backend's own next hop (user space bookkeeping). */
	__u16 hop_own;
};

/* Outer Ethernet addresses (the default next hop, kept in lb_config for restarts). */
struct next_hop {
	__u8 dst_mac[6];
	__u8 src_mac[6];
	/* Non-zero when the entry is set. */
	__u32 valid;
};

/* Node-wide settings, one entry. */
struct lb_config {
	/* Maglev ring size (a prime); each VIP owns ring_size consecutive slots. */
	__u32 ring_size;
	/* Seed of the flow hash; equal on every node. */
	__u32 hash_seed;
	/* Slot of `vip_stats` holding counters not attributable to one service. */
	__u32 global_stats_slot;
	/* Outer packets longer than this (bytes of IP) are dropped (LB_DROP_TOO_BIG). */
	__u32 mtu;
	/* 0: XDP_TX back out of the ingress interface; else bpf_redirect to this ifindex. */
	__u32 egress_ifindex;
	/* This node's outer source addresses (family 0 = not configured). */
	struct lb_addr local_v4;
	struct lb_addr local_v6;
	/* Number of "any port" services: 0 skips the second service lookup. */
	__u32 any_port_services;
	/* Default next hop, copied by user space into backends without their own (not read here). */
	struct next_hop default_hop;
};

/* A flow's 5-tuple; also the input of the Maglev hash (10 words, see src/hash.rs). */
struct flow_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* The backend a flow was sent to. */
struct flow_value {
	__u32 backend;
};

/* Per-service (per-CPU) counters. */
struct vip_stats {
	__u64 packets;
	__u64 bytes;
	__u64 flow_hits;
	__u64 flow_misses;
	__u64 drops[LB_DROP_MAX];
};

/* Per-CPU counters of the decap program. */
struct decap_stats {
	__u64 decapsulated;
	__u64 passed;
	__u64 malformed;
};

#endif
