/* Maps of lb.bpf.c. Sizes here are defaults; user space resizes them before loading. */
#ifndef CAIRN_LB_MAPS_H
#define CAIRN_LB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_structs.h"

/* node settings: key 0 -> lb_config */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(max_entries, 1);
} lb_config SEC(".maps");

/*
 * VIP address -> 1 (any service on it). Consulted only off the forwarding path, to decide
 * whether a fragment or a malformed packet is addressed to a VIP (drop, counted) or not (pass).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_addr);
	__type(value, __u32);
	__uint(max_entries, 512);
} vip_addrs SEC(".maps");

/* (VIP, port or 0, proto) -> vip_meta */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
	__uint(max_entries, 512);
} vips SEC(".maps");

/* vip_num * ring_size + slot -> backend index (LB_NO_BACKEND = empty) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 16381);
} maglev_rings SEC(".maps");

/* backend index -> backend node address and outer MACs (index 0 unused) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(max_entries, 4096);
} backends SEC(".maps");

/*
 * 5-tuple -> backend index. Per-CPU LRU lists (BPF_F_NO_COMMON_LRU: each CPU evicts from its
 * own list, no shared lock), but entries are visible from every CPU, so a flow whose packets
 * move to another CPU (RSS rebalancing, a veth sender migrating) keeps its backend.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
	__uint(max_entries, 65536);
} flows SEC(".maps");

/*
 * VIP address -> 1: inner destinations of tunnels this node strips (it is also a backend; see
 * decap_core.h). Read only for packets whose outer protocol is 4 or 41.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_addr);
	__type(value, __u32);
	__uint(max_entries, 1024);
} lb_decap_vips SEC(".maps");

/* key 0 -> per-CPU counters of the tunnel end (only tunnel packets are counted) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct decap_stats);
	__uint(max_entries, 1);
} lb_decap_stats SEC(".maps");

/* vip_num (or global_stats_slot) -> per-CPU counters */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct vip_stats);
	__uint(max_entries, 513);
} vip_stats SEC(".maps");

#endif
