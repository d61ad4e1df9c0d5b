// Package abi is the Go mirror of filters/bpfblk.h: the program context layout,
// the program types, the helper table and the helpers' return codes. The
// engine, the verifier and the filters all agree on these numbers. The
// helpers are defined once, in the table Helpers returns: the verifier checks
// calls by it, the engine dispatches by it and the helper section of bpfblk.h
// is generated from it (go generate ./compute/abi); the context layout is
// checked against the header by this package's tests.
package abi

// Context layout (struct bpfblk_ctx in bpfblk.h). All fields are little-endian.
// data and data_end are 64-bit addresses in the engine's address space, so a C
// program writes `void *data = (void *)(long)ctx->data;` exactly as in XDP.
const (
	CtxData       = 0  // __u64 data: first byte of the chunk
	CtxDataEnd    = 8  // __u64 data_end: one past the last byte
	CtxLBA        = 16 // __u64 lba: first logical block of the chunk
	CtxNSID       = 24 // __u32 nsid: namespace id
	CtxBlockSize  = 28 // __u32 block_size: bytes per block
	CtxBlockCount = 32 // __u32 block_count: blocks in data
	CtxReserved   = 36 // __u32 reserved: always 0
	CtxSize       = 40 // sizeof(struct bpfblk_ctx)
)

// XDP compatibility context (struct xdp_md) offsets. Programs in an "xdp"
// section run in the engine with this context so that the very same object can
// be run in the Linux kernel through BPF_PROG_TEST_RUN for comparison.
const (
	XDPData     = 0  // __u32 data
	XDPDataEnd  = 4  // __u32 data_end
	XDPDataMeta = 8  // __u32 data_meta
	XDPCtxSize  = 24 // sizeof(struct xdp_md)
)

// Type is the kind of a program, chosen by its ELF section name.
type Type uint8

// Program types.
const (
	// TypeRaw is a program with no context struct: r1 = data, r2 = length.
	// It is what `bpfblk prog run --raw` runs; data is writable.
	TypeRaw Type = iota
	// TypeFilter (SEC("bpfblk/filter")) runs once per block with block_count = 1
	// and returns 1 when the block matches; the engine emits the block's LBA.
	TypeFilter
	// TypeScan (SEC("bpfblk/scan")) runs once per chunk of blocks and reports
	// matches itself through bpfblk_emit.
	TypeScan
	// TypeXDP (SEC("xdp")) runs with the struct xdp_md context over writable
	// data, for comparison with the Linux kernel.
	TypeXDP
)

// String names the type as its section name.
func (t Type) String() string {
	switch t {
	case TypeRaw:
		return "raw"
	case TypeFilter:
		return SectionFilter
	case TypeScan:
		return SectionScan
	case TypeXDP:
		return SectionXDP
	}
	return "unknown"
}

// Section names recognised by the loader.
const (
	SectionFilter = "bpfblk/filter"
	SectionScan   = "bpfblk/scan"
	SectionXDP    = "xdp"
)

// TypeForSection returns the program type for an ELF section name.
func TypeForSection(sec string) (Type, bool) {
	switch sec {
	case SectionFilter:
		return TypeFilter, true
	case SectionScan:
		return TypeScan, true
	case SectionXDP, "xdp.frags":
		return TypeXDP, true
	}
	return 0, false
}

// Limits.
const (
	StackSize   = 512     // bytes of stack per frame (R10 points at its top)
	MaxFrames   = 8       // call depth, including the entry frame
	MaxCmpLen   = 1 << 20 // largest len accepted by memcmp/memmem
	MaxEmitArgs = 1
)

// Return codes of helpers (negative errno values as in Linux).
const (
	ENOENT = 2
	E2BIG  = 7
	EEXIST = 17
	EINVAL = 22
	ENOSPC = 28
)

// Map update flags (as in Linux).
const (
	UpdateAny     = 0
	UpdateNoExist = 1
	UpdateExist   = 2
)
