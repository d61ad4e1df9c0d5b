/* SPDX-License-Identifier: Apache-2.0 */
/*
 * needle.c - a filter with a text parameter, for the --set tests: blocks that
 * contain the NUL-terminated text in needle, counted per namespace in the
 * by_ns map (for the map output tests). Built with
 *   clang -O2 -g -target bpf -fdebug-compilation-dir=. -I../../../filters -c needle.c -o needle.o
 *   llvm-strip -g needle.o
 */
#include "bpfblk.h"

volatile const char needle[16] = "";

struct hits {
	__u64 blocks;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct hits);
	__uint(max_entries, 64);
} by_ns SEC(".maps");

SEC("bpfblk/filter")
int needle_filter(struct bpfblk_ctx *ctx)
{
	char n[16];
	__u32 len = 0;
	for (int i = 0; i < 16; i++) {
		n[i] = needle[i];
		if (n[i] && len == i)
			len = i + 1;
	}
	if (len == 0)
		return 0;
	if (bpfblk_memmem(BPFBLK_DATA(ctx), ctx->data_end - ctx->data, n, len) < 0)
		return 0;
	__u32 ns = ctx->nsid;
	struct hits *h = bpf_map_lookup_elem(&by_ns, &ns);
	if (h) {
		h->blocks += 1;
		h->bytes += ctx->block_size;
	} else {
		struct hits init = { 1, ctx->block_size };
		bpf_map_update_elem(&by_ns, &ns, &init, BPF_NOEXIST);
	}
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
