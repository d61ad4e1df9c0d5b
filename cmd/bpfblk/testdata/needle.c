/* SPDX-License-Identifier: Apache-2.0 */
/*
 * needle.c - a filter with a text parameter, for the --set tests: blocks that
 * contain the NUL-terminated text in needle. Built with
 *   clang -O2 -g -target bpf -fdebug-compilation-dir=. -I../../../filters -c needle.c -o needle.o
 *   llvm-strip -g needle.o
 */
#include "bpfblk.h"

volatile const char needle[16] = "";

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
	return bpfblk_memmem(BPFBLK_DATA(ctx), ctx->data_end - ctx->data, n, len) >= 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
