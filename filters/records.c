//go:build ignore

// SPDX-License-Identifier: Apache-2.0
/*
 * records.c - record field range filter.
 *
 * The data is an array of fixed-size records. For every record whose
 * little-endian __u32 field at field_offset lies in [lo, hi], the scanner
 * emits the record's byte offset from the start of the chunk.
 */
#include "bpfblk.h"

volatile const __u32 record_size = 16;  /* bytes per record, 4..4096 */
volatile const __u32 field_offset = 4;  /* offset of the __u32 field */
volatile const __u32 lo = 0;
volatile const __u32 hi = 0xffffffff;

#define MAX_RECORDS (1 << 16)

SEC("bpfblk/scan")
int records_in_range(struct bpfblk_ctx *ctx)
{
	const __u8 *data = BPFBLK_DATA(ctx);
	const __u8 *end = BPFBLK_DATA_END(ctx);
	__u32 size = record_size, off = field_offset;
	__u32 matches = 0;

	if (size < 4 || size > 4096 || off > size - 4)
		return 0;
	for (__u32 i = 0; i < MAX_RECORDS; i++) {
		__u64 pos = (__u64)i * size;
		if (pos + size > (__u64)(end - data))
			break;
		const __u8 *f = data + pos + off;
		if (f + 4 > end)
			break;
		__u32 v = *(const __u32 *)f;
		if (v >= lo && v <= hi) {
			bpfblk_emit(ctx, pos);
			matches++;
		}
	}
	return matches;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
