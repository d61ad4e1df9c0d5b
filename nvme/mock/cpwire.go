package mock

import (
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/internal/cpwire"
)

// The device side of the CP/SLM data structures: the emulated controller
// decodes what a host sends and encodes what it returns. The offsets are
// cpwire's, shared with the driver's encoders and decoders in package nvme.

// parseMemRange decodes a memory range descriptor.
func parseMemRange(b []byte) nvme.MemRange {
	return nvme.MemRange{NSID: le.Uint32(b[cpwire.RangeNSID:]), Length: le.Uint32(b[cpwire.RangeLength:]),
		Offset: le.Uint64(b[cpwire.RangeOffset:])}
}

// parseMemCopySource decodes a Memory Copy source descriptor (format 2h).
func parseMemCopySource(b []byte) nvme.MemCopySource {
	return nvme.MemCopySource{Controller: le.Uint16(b[cpwire.CopyController:]), LBA: le.Uint64(b[cpwire.CopyLBA:]),
		Blocks: uint32(le.Uint16(b[cpwire.CopyBlocks:])) + 1, NSID: le.Uint32(b[cpwire.CopyNSID:])}
}

// putExecResult encodes r into the first nvme.ExecResultSize bytes of b.
func putExecResult(b []byte, r nvme.ExecResult) {
	le.PutUint32(b[cpwire.ExecCount:], r.Count)
	le.PutUint32(b[cpwire.ExecFlags:], r.Flags)
	le.PutUint64(b[cpwire.ExecR0:], r.R0)
}

// putCPInfo encodes i into an Identify data buffer (CNS 05h, CSI 4).
func putCPInfo(b []byte, i nvme.CPInfo) {
	le.PutUint16(b[cpwire.CPISlots:], i.Slots)
	le.PutUint16(b[cpwire.CPIMaxActive:], i.MaxActive)
	le.PutUint16(b[cpwire.CPIMaxRS:], i.MaxRangeSets)
	le.PutUint16(b[cpwire.CPIMaxR:], i.MaxRanges)
	le.PutUint32(b[cpwire.CPIMaxProgram:], i.MaxProgram)
	le.PutUint64(b[cpwire.CPIProgTypes:], i.ProgTypes)
}

// putSLMInfo encodes i into an Identify data buffer (CNS 05h, CSI 3).
func putSLMInfo(b []byte, i nvme.SLMInfo) { le.PutUint64(b[cpwire.SLMISize:], i.Size) }
