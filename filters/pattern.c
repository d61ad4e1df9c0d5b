//go:build ignore

// SPDX-License-Identifier: Apache-2.0
/*
 * pattern.c - match blocks that contain a byte pattern (1..8 bytes).
 *
 * The search is written with plain loads and loops over [data, data_end) so
 * that the same code also runs in the Linux kernel (pattern_xdp). Each
 * position is tested with one unaligned 8-byte load, masked to the pattern
 * length; the positions in the last 8 bytes are tested by shifting the final
 * window. Blocks of up to 4 KiB + 8 bytes are searched completely (larger
 * ones: the first 4 KiB and the last 8 bytes, if within 32 KiB), and
 * blocks shorter than 8 bytes never match.
 *
 * With an overlap (bpfblk scan --overlap), data_end lies past the block's
 * end: the pattern may end there, but it must start inside the block, so
 * that a pattern across a boundary matches the block where it starts and
 * only that one.
 */
#include "bpfblk.h"

volatile const __u64 pattern = 0;     /* the pattern bytes, little-endian */
volatile const __u32 pattern_len = 0; /* 1..8 */

#define MAX_BYTES 4096

/*
 * contains tests the positions of [data, end); with limited, only those
 * before starts. (pattern_xdp passes 0: its code stays what the kernel's
 * verifier accepts.)
 */
static __always_inline int contains(const __u8 *data, const __u8 *end, __u64 starts, const int limited)
{
	__u32 n = pattern_len;
	if (n == 0 || n > 8)
		return 0;
	__u64 mask = n == 8 ? ~0ULL : (1ULL << (n * 8)) - 1;
	__u64 pat = pattern & mask;
	const __u8 *p = data;
	for (int i = 0; i < MAX_BYTES; i++) {
		if (p + 8 > end || (limited && i >= starts))
			break;
		if (((*(const __u64 *)p ^ pat) & mask) == 0)
			return 1;
		p++;
	}
	/*
	 * Tail: the positions after the last full 8-byte window are all inside
	 * the final window [end-8, end); test them by shifting it.
	 */
	__u64 len = end - data;
	if (len < 8)
		return 0;
	const __u8 *w = data + ((len - 8) & 0x7fff);
	if (w + 8 > end)
		return 0;
	__u64 v = *(const __u64 *)w;
	for (__u32 k = 1; k < 8; k++) {
		if (k + n > 8 || (limited && len - 8 + k >= starts))
			break;
		if ((((v >> (k * 8)) ^ pat) & mask) == 0)
			return 1;
	}
	return 0;
}

SEC("bpfblk/filter")
int pattern_filter(struct bpfblk_ctx *ctx)
{
	return contains(BPFBLK_DATA(ctx), BPFBLK_DATA_END(ctx), ctx->block_size, 1);
}

/* The same filter through the bpfblk_memmem helper. */
SEC("bpfblk/filter")
int pattern_memmem(struct bpfblk_ctx *ctx)
{
	__u64 pat = pattern;
	__u32 n = pattern_len;
	if (n == 0 || n > 8)
		return 0;
	long off = bpfblk_memmem(BPFBLK_DATA(ctx), ctx->data_end - ctx->data, &pat, n);
	return off >= 0 && off < ctx->block_size; /* it starts in the block */
}

SEC("xdp")
int pattern_xdp(struct xdp_md *ctx)
{
	return contains((const __u8 *)(long)ctx->data, (const __u8 *)(long)ctx->data_end, 0, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
