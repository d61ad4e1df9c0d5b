// Idioms clang emits for typical filters: a bpf-to-bpf call, .data and .bss
// globals, a scanner looping over blocks with emit, bpfblk_memcmp against a
// stack buffer. Compiled by TestClangIdioms when clang is installed.
#include "../../../filters/bpfblk.h"

volatile const __u32 magic = 0x4b4c4250; /* "PBLK" */
__u64 blocks_seen = 0;                    /* .bss */
__u64 calls = 1;                          /* .data */

static __attribute__((noinline)) int block_has_magic(const __u8 *p, const __u8 *end)
{
	if (p + 4 > end)
		return 0;
	calls++;
	return *(const __u32 *)p == magic;
}

SEC("bpfblk/scan")
int magic_blocks(struct bpfblk_ctx *ctx)
{
	const __u8 *data = BPFBLK_DATA(ctx);
	const __u8 *end = BPFBLK_DATA_END(ctx);
	__u32 bs = ctx->block_size;
	int n = 0;
	if (bs < 4 || bs > 65536)
		return -1;
	for (__u32 b = 0; b < 1024; b++) {
		if (b >= ctx->block_count)
			break;
		const __u8 *p = data + (__u64)b * bs;
		if (p + 4 > end)
			break;
		blocks_seen++;
		if (block_has_magic(p, end)) {
			bpfblk_emit(ctx, ctx->lba + b);
			n++;
		}
	}
	return n;
}

SEC("bpfblk/filter")
int starts_with_hello(struct bpfblk_ctx *ctx)
{
	char hello[8] = "hello";
	const __u8 *data = BPFBLK_DATA(ctx);
	if (data + 5 > BPFBLK_DATA_END(ctx))
		return 0;
	return bpfblk_memcmp(data, hello, 5) == 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
