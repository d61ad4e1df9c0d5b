/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hostile.c - filters that never finish on their own, for the tests of how
 * the CLI stops them (SIGINT). Built into hostile.o, which is committed:
 *
 *   clang -O2 -g -target bpf -I../../../filters -c hostile.c -o hostile.o &&
 *   llvm-strip -g hostile.o
 */
#include "bpfblk.h"

/* A long straight-line function: a call that runs ~120 instructions. */
static __attribute__((noinline)) __u64 work(__u64 x)
{
#define STEP x = x * 3 + 1; x ^= x >> 7;
#define STEP8 STEP STEP STEP STEP STEP STEP STEP STEP
	STEP8 STEP8 STEP8 STEP8
	return x;
}

/* Loops forever calling work: the amplifier the budget must charge. */
SEC("bpfblk/filter")
int spin(struct bpfblk_ctx *ctx)
{
	volatile __u32 go = 1;
	__u64 n = ctx->lba;
	while (go)
		n = work(n);
	return n & 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
