/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rejected.c - filters the verifier must reject, for the tests of its
 * messages (source lines) and its log (the path and register states).
 * Built with
 *   clang -O2 -g -target bpf -fdebug-compilation-dir=. -I../../../filters -c rejected.c -o rejected.o
 *   llvm-strip -g rejected.o
 */
#include "bpfblk.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} counts SEC(".maps");

/* Reads data[n] where only 8 bytes were checked against data_end. */
SEC("bpfblk/filter")
int unchecked_read(struct bpfblk_ctx *ctx)
{
	const __u8 *data = BPFBLK_DATA(ctx);
	const __u8 *end = BPFBLK_DATA_END(ctx);
	__u32 n = ctx->block_size;

	if (data + 8 > end)
		return 0;
	if (n > 64)
		return data[n] == 'E';
	return data[0] == 'E';
}

/* Uses a map lookup's result without the NULL check. */
SEC("bpfblk/filter")
int null_value(struct bpfblk_ctx *ctx)
{
	__u32 key = ctx->nsid & 3;
	__u64 *v = bpf_map_lookup_elem(&counts, &key);

	*v += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
