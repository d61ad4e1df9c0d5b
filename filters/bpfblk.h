/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bpfblk.h - the program ABI of bpfblk storage filters.
 *
 * A filter is C compiled with `clang -O2 -g -target bpf -c`. It includes only
 * this header (no kernel headers). The Go mirror of every number here is
 * github.com/bpfblk/bpfblk/compute/abi.
 *
 * Program types (chosen by section):
 *   SEC("bpfblk/filter")  int f(struct bpfblk_ctx *ctx)
 *       runs once per block (block_count == 1); return non-zero to match.
 *       The engine emits the LBA of every matching block.
 *   SEC("bpfblk/scan")    int f(struct bpfblk_ctx *ctx)
 *       runs once per chunk of block_count blocks and reports matches itself
 *       with bpfblk_emit(ctx, value) (an LBA, a byte offset, a record number).
 *   SEC("xdp")            int f(struct xdp_md *ctx)
 *       the same data through Linux's XDP context, so one object runs both in
 *       bpfblk and in the kernel (BPF_PROG_TEST_RUN) for comparison.
 *
 * Block data is read-only for filters and scanners. Every access to it must be
 * proven inside [data, data_end) by comparing with data_end, as in XDP.
 *
 * data_end is not always data + block_count * block_size:
 *   - the last block of a file whose size is not a multiple of the block size
 *     is short: data_end is the file's end (the device pads the block with
 *     zeroes, which the program does not see);
 *   - with an overlap (`bpfblk scan --overlap BYTES`, Options.Overlap), a
 *     filter's data_end lies up to BYTES past its block's end and a scanner's
 *     past its chunk's end, into the blocks that follow (fewer at the end of
 *     the namespace), so that a pattern straddling a block boundary is found.
 *     A filter reports the block where the pattern starts; a scanner's emits
 *     at offsets in the overlap are dropped (the next chunk finds them).
 * So loop to data_end, not to block_size.
 * Parameters are `volatile const` globals set by name from Go or from
 * `bpfblk prog run --set NAME=VALUE`.
 */
#ifndef BPFBLK_H
#define BPFBLK_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;

/* The context of filter and scan programs: 40 bytes, read-only. */
struct bpfblk_ctx {
	__u64 data;        /* offset 0: address of the first byte of the chunk */
	__u64 data_end;    /* offset 8: one past the last byte */
	__u64 lba;         /* offset 16: LBA of the first block */
	__u32 nsid;        /* offset 24: namespace id */
	__u32 block_size;  /* offset 28: bytes per block */
	__u32 block_count; /* offset 32: blocks in [data, data_end) */
	__u32 reserved;    /* offset 36: zero */
};

/* Linux's XDP context, for programs that also run in the kernel. */
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

#define SEC(name) __attribute__((section(name), used))
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* BTF-defined maps, as in libbpf. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_EXIST 2

/* Helpers: generated from the table in compute/abi/helpers.go by go generate ./compute/abi. Do not edit. */
/* Map helpers keep their Linux ids. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static long (*bpf_trace_printk)(const char *fmt, __u32 fmt_size, ...) = (void *)6;
/*
 * bpfblk_emit appends value to the run's match list; -28 (ENOSPC) when full.
 * A scanner emits byte offsets from data. The host sizes the list so that
 * every value arrives (a run that filled it is run again with more room,
 * when the program has no writable maps); values that still do not fit are
 * reported as lost, never dropped silently.
 */
static long (*bpfblk_emit)(struct bpfblk_ctx *ctx, __u64 value) = (void *)0x1000;
/* bpfblk_memcmp compares len bytes: <0, 0, >0 like memcmp. */
static long (*bpfblk_memcmp)(const void *a, const void *b, __u32 len) = (void *)0x1001;
/* bpfblk_memmem returns the offset of needle in haystack, or -1. */
static long (*bpfblk_memmem)(const void *hay, __u32 hay_len, const void *needle, __u32 needle_len) = (void *)0x1002;
/* End of the generated helpers. */

#define bpfblk_printk(fmt, ...)                                              \
	({                                                                   \
		char ____fmt[] = fmt;                                        \
		bpf_trace_printk(____fmt, sizeof(____fmt), ##__VA_ARGS__);   \
	})

#define BPFBLK_DATA(ctx) ((const __u8 *)(long)(ctx)->data)
#define BPFBLK_DATA_END(ctx) ((const __u8 *)(long)(ctx)->data_end)

#endif /* BPFBLK_H */
