/* jhash2 (Bob Jenkins' lookup3), identical to src/hash.rs and include/linux/jhash.h. */
#ifndef CAIRN_LB_HASH_H
#define CAIRN_LB_HASH_H

#include <linux/types.h>

#define LB_JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 lb_rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

#define lb_jhash_mix(a, b, c)                       \
	{                                           \
		a -= c; a ^= lb_rol32(c, 4);  c += b; \
		b -= a; b ^= lb_rol32(a, 6);  a += c; \
		c -= b; c ^= lb_rol32(b, 8);  b += a; \
		a -= c; a ^= lb_rol32(c, 16); c += b; \
		b -= a; b ^= lb_rol32(a, 19); a += c; \
		c -= b; c ^= lb_rol32(b, 4);  b += a; \
	}

#define lb_jhash_final(a, b, c)               \
	{                                     \
		c ^= b; c -= lb_rol32(b, 14); \
		a ^= c; a -= lb_rol32(c, 11); \
		b ^= a; b -= lb_rol32(a, 25); \
		c ^= b; c -= lb_rol32(b, 16); \
		a ^= c; a -= lb_rol32(c, 4);  \
		b ^= a; b -= lb_rol32(a, 14); \
		c ^= b; c -= lb_rol32(b, 24); \
	}

/* The hash of a 10-word flow key (struct flow_key). */
static __always_inline __u32 lb_hash_flow(const __u32 *k, __u32 seed)
{
	__u32 a, b, c;

	a = b = c = LB_JHASH_INITVAL + (10 << 2) + seed;
	a += k[0]; b += k[1]; c += k[2];
	lb_jhash_mix(a, b, c);
	a += k[3]; b += k[4]; c += k[5];
	lb_jhash_mix(a, b, c);
	a += k[6]; b += k[7]; c += k[8];
	lb_jhash_mix(a, b, c);
	a += k[9];
	lb_jhash_final(a, b, c);
	return c;
}

#endif
