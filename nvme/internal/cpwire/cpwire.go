// Package cpwire holds the byte layout of the Computational Programs (CSI 4)
// and Subsystem Local Memory (CSI 3) data structures: the one place their
// field offsets are written down. The driver (package nvme) encodes what a
// host sends and decodes what a device returns; the emulated controller
// (nvme/mock) does the opposite. Neither repeats an offset.
//
// The types and the sizes of the structures are package nvme's
// (nvme.MemRange, nvme.MemRangeSize, ...); this package only names where each
// field sits, so that encoders only the emulator needs stay out of the
// driver's public API.
package cpwire

// Memory range descriptor (32 bytes): MNSID u32, length u32, starting byte
// u64, 16 reserved bytes.
const (
	RangeNSID   = 0
	RangeLength = 4
	RangeOffset = 8
)

// Memory Copy source descriptor, format 2h (32 bytes): SCNTLID u16, SLBA
// u64, NLB u16 (0-based), SNSID u32.
const (
	CopyController = 2
	CopyLBA        = 8
	CopyBlocks     = 16
	CopyNSID       = 20
)

// ExecResult header at the start of an Execute Program output range (16
// bytes): count u32, flags u32, R0 u64.
const (
	ExecCount = 0
	ExecFlags = 4
	ExecR0    = 8
)

// Computational Programs Identify Namespace data (CNS 05h, CSI 4), as
// bpfblk's emulated controller reports it.
const (
	CPISlots      = 0  // u16: program slots
	CPIMaxActive  = 2  // u16: MAXACT
	CPIMaxRS      = 4  // u16: MAXMEMRS
	CPIMaxR       = 6  // u16: MAXMEMR
	CPIMaxProgram = 8  // u32: largest program image in bytes
	CPIProgTypes  = 16 // u64: supported program types
	CPISize       = 24 // bytes a host needs to decode
)

// SLM Identify Namespace data (CNS 05h, CSI 3).
const (
	SLMISize = 0 // u64: MSZE, the memory namespace's size in bytes
)
