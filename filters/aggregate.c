//go:build ignore

// SPDX-License-Identifier: Apache-2.0
/*
 * aggregate.c - count and sum of a record field, in total and per key.
 *
 * Records are 16 bytes: { __u32 key; __u32 value; __u64 payload; }. The
 * scanner adds every record to totals[0] (count) and totals[1] (sum of value)
 * and to by_key[key] = { count, sum }. Each core has its own maps; the host
 * merges them by adding (see engine.MergeMaps).
 */
#include "bpfblk.h"

struct record {
	__u32 key;
	__u32 value;
	__u64 payload;
};

struct stats {
	__u64 count;
	__u64 sum;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(max_entries, 1024);
} by_key SEC(".maps");

#define MAX_RECORDS (1 << 16)

SEC("bpfblk/scan")
int aggregate(struct bpfblk_ctx *ctx)
{
	const __u8 *data = BPFBLK_DATA(ctx);
	const __u8 *end = BPFBLK_DATA_END(ctx);
	__u32 k0 = 0, k1 = 1;
	__u64 *count = bpf_map_lookup_elem(&totals, &k0);
	__u64 *sum = bpf_map_lookup_elem(&totals, &k1);
	if (!count || !sum)
		return 0;
	__u32 n = 0;
	for (__u32 i = 0; i < MAX_RECORDS; i++) {
		const struct record *r = (const void *)(data + (__u64)i * sizeof(struct record));
		if ((const __u8 *)(r + 1) > end)
			break;
		__u32 key = r->key;
		__u32 value = r->value;
		*count += 1;
		*sum += value;
		struct stats *s = bpf_map_lookup_elem(&by_key, &key);
		if (s) {
			s->count += 1;
			s->sum += value;
		} else {
			struct stats init = { 1, value };
			bpf_map_update_elem(&by_key, &key, &init, BPF_NOEXIST);
		}
		n++;
	}
	return n;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
