/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bigmaps.c - programs whose maps are too large for the default map memory
 * limit, and a small one, for the --map-memory tests. Built with
 *   clang -O2 -g -target bpf -I../../../filters -c bigmaps.c -o bigmaps.o
 *   llvm-strip -g bigmaps.o
 */
#include "bpfblk.h"

struct key256 {
	__u8 b[256];
};

/* 2^28 entries with 256-byte keys: over 64 GiB as allocated. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct key256);
	__type(value, __u8);
	__uint(max_entries, 1 << 28);
} huge SEC(".maps");

SEC("bpfblk/scan")
int huge_hash(struct bpfblk_ctx *ctx)
{
	struct key256 k = {};
	return bpf_map_lookup_elem(&huge, &k) != 0;
}

struct page {
	__u8 b[4096];
};

/* Eight arrays of 65536 4 KiB values: 256 MiB each, 2 GiB in all. */
#define ARRAY(name)                                    \
	struct {                                       \
		__uint(type, BPF_MAP_TYPE_ARRAY);      \
		__type(key, __u32);                    \
		__type(value, struct page);            \
		__uint(max_entries, 65536);            \
	} name SEC(".maps")

ARRAY(a0);
ARRAY(a1);
ARRAY(a2);
ARRAY(a3);
ARRAY(a4);
ARRAY(a5);
ARRAY(a6);
ARRAY(a7);

SEC("bpfblk/scan")
int eight_arrays(struct bpfblk_ctx *ctx)
{
	__u32 k = 0;
	int n = 0;

	n += bpf_map_lookup_elem(&a0, &k) != 0;
	n += bpf_map_lookup_elem(&a1, &k) != 0;
	n += bpf_map_lookup_elem(&a2, &k) != 0;
	n += bpf_map_lookup_elem(&a3, &k) != 0;
	n += bpf_map_lookup_elem(&a4, &k) != 0;
	n += bpf_map_lookup_elem(&a5, &k) != 0;
	n += bpf_map_lookup_elem(&a6, &k) != 0;
	n += bpf_map_lookup_elem(&a7, &k) != 0;
	return n;
}

struct pair {
	__u64 count;
	__u64 sum;
};

/* 16 KiB: fits the default limit, for tests of small limits. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct pair);
	__uint(max_entries, 1024);
} counts SEC(".maps");

SEC("bpfblk/scan")
int small(struct bpfblk_ctx *ctx)
{
	__u32 k = 0;
	struct pair *p = bpf_map_lookup_elem(&counts, &k);

	if (p)
		p->count++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
