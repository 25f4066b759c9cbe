/* Maps of decap.bpf.c (lb.bpf.c has its own: lb_decap_vips, lb_decap_stats in lb_maps.h). */
#ifndef CAIRN_DECAP_MAPS_H
#define CAIRN_DECAP_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_structs.h"

/* VIP address -> 1: inner destinations this node accepts from the load balancers */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_addr);
	__type(value, __u32);
	__uint(max_entries, 1024);
} decap_vips SEC(".maps");

/* key 0 -> per-CPU counters of the decap program */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct decap_stats);
	__uint(max_entries, 1);
} decap_stats SEC(".maps");

#endif
