/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Hashing for the programs: Bob Jenkins' lookup3 (the kernel's jhash2) over
 * the ten 32-bit words of a 40-byte key (struct dp_flow_key,
 * struct dp_lb_conn_key). Self-contained: needs only linux/types.h.
 */
#ifndef DP_HASH_H
#define DP_HASH_H

#include <linux/types.h>

#define DP_ROL32(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
/* lookup3's final mix: spreads every input bit over the 32-bit result. */
#define DP_JHASH_FINAL(a, b, c)                                                                    \
	do {                                                                                       \
		c ^= b; c -= DP_ROL32(b, 14);                                                      \
		a ^= c; a -= DP_ROL32(c, 11);                                                      \
		b ^= a; b -= DP_ROL32(a, 25);                                                      \
		c ^= b; c -= DP_ROL32(b, 16);                                                      \
		a ^= c; a -= DP_ROL32(c, 4);                                                       \
		b ^= a; b -= DP_ROL32(a, 14);                                                      \
		c ^= b; c -= DP_ROL32(b, 24);                                                      \
	} while (0)
#define DP_JHASH_MIX(a, b, c)                                                                      \
	do {                                                                                       \
		a -= c; a ^= DP_ROL32(c, 4);  c += b;                                              \
		b -= a; b ^= DP_ROL32(a, 6);  a += c;                                              \
		c -= b; c ^= DP_ROL32(b, 8);  b += a;                                              \
		a -= c; a ^= DP_ROL32(c, 16); c += b;                                              \
		b -= a; b ^= DP_ROL32(a, 19); a += c;                                              \
		c -= b; c ^= DP_ROL32(b, 4);  b += a;                                              \
	} while (0)

/* jhash2 of the 10 words at `k` (a 40-byte key), with a seed per use so that
 * two uses of one key do not correlate. */
static __always_inline __u32 dp_jhash10(const __u32 *k, __u32 seed)
{
	__u32 a, b, c;

	a = b = c = 0xdeadbeef + (10 << 2) + seed;
	a += k[0]; b += k[1]; c += k[2];
	DP_JHASH_MIX(a, b, c);
	a += k[3]; b += k[4]; c += k[5];
	DP_JHASH_MIX(a, b, c);
	a += k[6]; b += k[7]; c += k[8];
	DP_JHASH_MIX(a, b, c);
	a += k[9];
	DP_JHASH_FINAL(a, b, c);
	return c;
}

#endif /* DP_HASH_H */
