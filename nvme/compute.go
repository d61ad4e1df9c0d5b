package nvme

import (
	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/nvme/internal/cpwire"
)

// This file is the one place that defines the Computational Programs (CP,
// CSI 4) and Subsystem Local Memory (SLM, CSI 3) command sets as bpfblk uses
// them: the admin opcodes libnvme assigns (AdminLoadProgram,
// AdminProgActMgmt, AdminMemRangeSetMg), the draft I/O opcodes, the eBPF
// program type, the data structures, the statuses and the Execute Program
// result convention. Both the driver and the emulated controller (nvme/mock)
// use these names; no other file repeats a number. The field offsets of the
// data structures live in nvme/internal/cpwire, which the driver's encoders
// and decoders here and the emulator's (nvme/mock/cpwire.go) share, so the
// encoders only a device needs are not part of this package's API.
//
// # Execute Program result convention
//
// A program runs over the memory range set named in the command. bpfblk
// gives every set at least two ranges:
//
//   - range 0 is the input: the program's data (its context's data .. data_end)
//     is the first DLEN bytes of it (DLEN is CDW4, as the drafts place it;
//     0 means the whole range);
//   - range 1 is the output: the device writes an ExecResult header there,
//     followed by the values the program emitted (little-endian u64 each:
//     matching LBAs for a per-block filter, byte offsets into the data for a
//     scanner), as many as fit after the header. The header's Count is the
//     number the program emitted, so a host whose range was too small
//     (ExecOverflow) knows how many values did not fit: Count minus the
//     range's capacity.
//
// CPARAM1 (CDW10-11) is the LBA of the data's first block and CPARAM2
// (CDW12-13) carries the NSID in bits 31:0 and the block size in bits 63:32;
// the program sees them in its context. The completion's DW0-DW1 is the
// program's 64-bit return value (r0). The host then reads back only the
// output range's header and emitted values with Memory Read: the data itself
// never crosses to the host.
//
// With ExecFlagState in CDW15 the device does not run the program: it writes
// the program's writable maps (merged over the device's engine instances) to
// the output range as an ExecResult header whose Count is the byte length of
// the encoded maps, followed by that encoding (see compute/internal/image).

// Computational Programs I/O command opcodes (draft: one public draft's
// values; no upstream assignment exists).
const (
	OpExecProgram = 0x01 // Execute Program
)

// Subsystem Local Memory I/O command opcodes (draft).
const (
	OpMemCopy  = 0x01 // Memory Copy: LBAs of NVM namespaces into SLM
	OpMemRead  = 0x02 // Memory Read: SLM to host
	OpMemFill  = 0x04 // Memory Fill: a 32-bit pattern over SLM bytes
	OpMemWrite = 0x05 // Memory Write: host to SLM
)

// ProgTypeEBPF is the program type (PTYPE) of a bpfblk eBPF program image.
// No public value exists; drafts use the vendor-specific range.
const ProgTypeEBPF = 0xC0

// Load Program (CDW10) and Program Activation Management selectors.
const (
	LoadSelLoad       = 0 // CDW10 bit 24 clear: load (a chunk of) a program
	LoadSelUnload     = 1 // CDW10 bit 24 set: unload the slot
	ProgSelActivate   = 0 // Program Activation Management SEL: activate
	ProgSelDeactivate = 1 // SEL: deactivate
	RangeSetSelCreate = 0 // Memory Range Set Management SEL: create
	RangeSetSelDelete = 1 // SEL: delete
)

// Sizes of CP/SLM data structures.
const (
	MemRangeSize      = 32 // memory range descriptor
	MemCopySourceSize = 32 // Memory Copy source descriptor (format 2h)
	MemCopyFormatLBA  = 2  // Memory Copy descriptor format: LBAs of an NVM namespace
	ExecResultSize    = 16 // ExecResult header at the start of the output range
	ExecFlagState     = 1  // CDW15 bit 0 of Execute Program: return map state
	ExecOverflow      = 1  // ExecResult.Flags bit 0: more values than fitted
)

// CP and SLM command-specific statuses (draft: no public values; bpfblk uses
// these codes of the command-specific type).
var (
	ErrInvalidProgram      = StatusError{SCT: SCTCommandSpecific, SC: 0x40}
	ErrInvalidProgramIndex = StatusError{SCT: SCTCommandSpecific, SC: 0x41}
	ErrProgramNotActive    = StatusError{SCT: SCTCommandSpecific, SC: 0x42}
	ErrProgramActive       = StatusError{SCT: SCTCommandSpecific, SC: 0x43}
	ErrRangeSetLimit       = StatusError{SCT: SCTCommandSpecific, SC: 0x44}
	ErrInvalidRangeSet     = StatusError{SCT: SCTCommandSpecific, SC: 0x45}
	ErrMemoryUnreachable   = StatusError{SCT: SCTCommandSpecific, SC: 0x46}
	ErrProgramFault        = StatusError{SCT: SCTCommandSpecific, SC: 0x47}
	ErrActiveLimit         = StatusError{SCT: SCTCommandSpecific, SC: 0x48}
)

func init() {
	specificNames[0x40] = "Invalid Program"
	specificNames[0x41] = "Invalid Program Index"
	specificNames[0x42] = "Program Not Active"
	specificNames[0x43] = "Program Active"
	specificNames[0x44] = "Maximum Memory Range Sets Exceeded"
	specificNames[0x45] = "Invalid Memory Range Set"
	specificNames[0x46] = "Memory Namespace Not Reachable"
	specificNames[0x47] = "Program Execution Fault"
	specificNames[0x48] = "Maximum Active Programs Exceeded"
}

// MemRange is one memory range descriptor of a memory range set: Length
// bytes at byte Offset of memory namespace NSID.
type MemRange struct {
	NSID   uint32
	Length uint32
	Offset uint64
}

// putMemRange encodes r into b[0:32]: MNSID u32, length u32, starting byte
// u64, 16 reserved bytes.
func putMemRange(b []byte, r MemRange) {
	clear(b[:MemRangeSize])
	le.PutUint32(b[cpwire.RangeNSID:], r.NSID)
	le.PutUint32(b[cpwire.RangeLength:], r.Length)
	le.PutUint64(b[cpwire.RangeOffset:], r.Offset)
}

// MemCopySource is a Memory Copy source (descriptor format 2h): Blocks
// logical blocks from LBA of NVM namespace NSID. Controller is the CNTLID of
// the controller the namespace is attached to, for namespaces of another
// controller of the subsystem (bpfblk's emulated bus); 0 means this
// controller.
type MemCopySource struct {
	Controller uint16
	NSID       uint32
	LBA        uint64
	Blocks     uint32 // 1..65536
}

// putMemCopySource encodes s into b[0:32]: SCNTLID u16 at 2, SLBA u64 at 8,
// NLB (0-based) u16 at 16, SNSID u32 at 20.
func putMemCopySource(b []byte, s MemCopySource) {
	clear(b[:MemCopySourceSize])
	le.PutUint16(b[cpwire.CopyController:], s.Controller)
	le.PutUint64(b[cpwire.CopyLBA:], s.LBA)
	le.PutUint16(b[cpwire.CopyBlocks:], uint16(s.Blocks-1))
	le.PutUint32(b[cpwire.CopyNSID:], s.NSID)
}

// ExecResult is the header the device writes at the start of an Execute
// Program output range.
type ExecResult struct {
	Count uint32 // values the program emitted (or bytes of map state); with ExecOverflow more than follow
	Flags uint32 // ExecOverflow
	R0    uint64 // the program's return value
}

// ParseExecResult decodes an ExecResult header.
func ParseExecResult(b []byte) ExecResult {
	return ExecResult{Count: le.Uint32(b[cpwire.ExecCount:]), Flags: le.Uint32(b[cpwire.ExecFlags:]),
		R0: le.Uint64(b[cpwire.ExecR0:])}
}

// CPInfo is the Computational Programs Identify Namespace data (CNS 05h,
// CSI 4) as bpfblk's emulated controller reports it.
type CPInfo struct {
	Slots        uint16 // program slots (PINDs 0..Slots-1)
	MaxActive    uint16 // MAXACT: programs active at once
	MaxRangeSets uint16 // MAXMEMRS
	MaxRanges    uint16 // MAXMEMR: ranges per set
	MaxProgram   uint32 // largest program image in bytes
	ProgTypes    uint64 // bit i: PTYPE 0xC0+i supported (bit 0: eBPF)
}

// ParseCPInfo decodes the CP Identify Namespace data.
func ParseCPInfo(b []byte) (CPInfo, error) {
	if len(b) < cpwire.CPISize {
		return CPInfo{}, errors.Errorf("nvme: CP identify namespace: %d bytes", len(b))
	}
	return CPInfo{Slots: le.Uint16(b[cpwire.CPISlots:]), MaxActive: le.Uint16(b[cpwire.CPIMaxActive:]),
		MaxRangeSets: le.Uint16(b[cpwire.CPIMaxRS:]), MaxRanges: le.Uint16(b[cpwire.CPIMaxR:]),
		MaxProgram: le.Uint32(b[cpwire.CPIMaxProgram:]), ProgTypes: le.Uint64(b[cpwire.CPIProgTypes:])}, nil
}

// SLMInfo is the SLM Identify Namespace data (CNS 05h, CSI 3): the memory
// namespace's size in bytes (MSZE, bytes 0-7).
type SLMInfo struct {
	Size uint64
}

// ParseSLMInfo decodes the SLM Identify Namespace data.
func ParseSLMInfo(b []byte) (SLMInfo, error) {
	if len(b) < cpwire.SLMISize+8 {
		return SLMInfo{}, errors.Errorf("nvme: SLM identify namespace: %d bytes", len(b))
	}
	return SLMInfo{Size: le.Uint64(b[cpwire.SLMISize:])}, nil
}

// ComputeNamespace is a compute (CP) namespace with the memory (SLM)
// namespaces of the same controller, as discovered from Identify.
type ComputeNamespace struct {
	CP     *Namespace
	Info   CPInfo
	Memory []*Namespace
	Sizes  []uint64 // bytes of each memory namespace
}

// ComputeNamespaces reports the controller's compute capability from
// Identify alone: the controller must have selected an I/O command set
// combination that includes CP and SLM (CNS 1Ch), and each namespace's CSI
// comes from its identification descriptors. It returns nil for a controller
// without compute namespaces.
func (c *Controller) ComputeNamespaces() ([]ComputeNamespace, error) {
	vec, _ := c.CommandSets()
	if vec&(1<<CSICP) == 0 || vec&(1<<CSISLM) == 0 {
		return nil, nil
	}
	var mem []*Namespace
	var sizes []uint64
	for _, ns := range c.namespaces {
		if ns.CSI != CSISLM {
			continue
		}
		data, err := c.Identify(CNSCSINamespace, ns.ID, 0, CSISLM)
		if err != nil {
			return nil, errors.Wrapf(err, "%s: identify memory namespace %d", c.Name(), ns.ID)
		}
		info, err := ParseSLMInfo(data)
		if err != nil {
			return nil, err
		}
		mem, sizes = append(mem, ns), append(sizes, info.Size)
	}
	var out []ComputeNamespace
	for _, ns := range c.namespaces {
		if ns.CSI != CSICP {
			continue
		}
		data, err := c.Identify(CNSCSINamespace, ns.ID, 0, CSICP)
		if err != nil {
			return nil, errors.Wrapf(err, "%s: identify compute namespace %d", c.Name(), ns.ID)
		}
		info, err := ParseCPInfo(data)
		if err != nil {
			return nil, err
		}
		out = append(out, ComputeNamespace{CP: ns, Info: info, Memory: mem, Sizes: sizes})
	}
	return out, nil
}

// LoadProgram downloads image into program slot of compute namespace ns in
// chunks of at most chunk bytes (0: 64 KiB) with Load Program. The device
// checks the program when the last chunk arrives; a program it cannot accept
// fails with ErrInvalidProgram.
func (c *Controller) LoadProgram(ns *Namespace, slot uint16, ptype uint8, image []byte, chunk int) error {
	if ns == nil || ns.CSI != CSICP {
		return errors.New("nvme: load program: not a compute namespace")
	}
	if len(image) == 0 {
		return errors.New("nvme: load program: empty image")
	}
	if chunk <= 0 || chunk > adminBufSize {
		chunk = adminBufSize
	}
	chunk &^= 3
	for off := 0; off < len(image); off += chunk {
		n := min(chunk, len(image)-off)
		sqe := SQE{OPC: AdminLoadProgram, NSID: ns.ID,
			CDW10: uint32(slot) | uint32(ptype)<<16 | LoadSelLoad<<24,
			CDW11: uint32(len(image)), CDW14: uint32(n), CDW15: uint32(off)}
		if _, err := c.AdminCommand(&sqe, image[off:off+n], true); err != nil {
			return errors.Wrapf(err, "%s: load program slot %d (bytes %d-%d of %d)", c.Name(), slot, off, off+n, len(image))
		}
	}
	return nil
}

// UnloadProgram empties program slot of ns.
func (c *Controller) UnloadProgram(ns *Namespace, slot uint16) error {
	sqe := SQE{OPC: AdminLoadProgram, NSID: ns.ID, CDW10: uint32(slot) | LoadSelUnload<<24}
	_, err := c.AdminCommand(&sqe, nil, false)
	return errors.Wrapf(err, "%s: unload program slot %d", c.Name(), slot)
}

// ActivateProgram makes the program in slot executable (Program Activation
// Management).
func (c *Controller) ActivateProgram(ns *Namespace, slot uint16) error {
	sqe := SQE{OPC: AdminProgActMgmt, NSID: ns.ID, CDW10: uint32(slot) | ProgSelActivate<<16}
	_, err := c.AdminCommand(&sqe, nil, false)
	return errors.Wrapf(err, "%s: activate program slot %d", c.Name(), slot)
}

// DeactivateProgram stops the program in slot from being executed.
func (c *Controller) DeactivateProgram(ns *Namespace, slot uint16) error {
	sqe := SQE{OPC: AdminProgActMgmt, NSID: ns.ID, CDW10: uint32(slot) | ProgSelDeactivate<<16}
	_, err := c.AdminCommand(&sqe, nil, false)
	return errors.Wrapf(err, "%s: deactivate program slot %d", c.Name(), slot)
}

// CreateRangeSet creates a memory range set of ranges for compute namespace
// ns and returns its identifier (RSID).
func (c *Controller) CreateRangeSet(ns *Namespace, ranges []MemRange) (uint16, error) {
	if len(ranges) == 0 || len(ranges) > 256 {
		return 0, errors.Errorf("nvme: memory range set of %d ranges (want 1..256)", len(ranges))
	}
	data := make([]byte, len(ranges)*MemRangeSize)
	for i, r := range ranges {
		putMemRange(data[i*MemRangeSize:], r)
	}
	sqe := SQE{OPC: AdminMemRangeSetMg, NSID: ns.ID, CDW10: RangeSetSelCreate, CDW11: uint32(len(ranges) - 1)}
	cqe, err := c.AdminCommand(&sqe, data, true)
	if err != nil {
		return 0, errors.Wrapf(err, "%s: create memory range set", c.Name())
	}
	return uint16(cqe.DW0), nil
}

// DeleteRangeSet deletes memory range set rsid of ns.
func (c *Controller) DeleteRangeSet(ns *Namespace, rsid uint16) error {
	sqe := SQE{OPC: AdminMemRangeSetMg, NSID: ns.ID, CDW10: RangeSetSelDelete | uint32(rsid)<<16}
	_, err := c.AdminCommand(&sqe, nil, false)
	return errors.Wrapf(err, "%s: delete memory range set %d", c.Name(), rsid)
}

var errNotCompute = errors.New("nvme: nil namespace or wrong command set for a CP/SLM command")

// ExecuteProgram runs the active program in slot of compute namespace ns over
// memory range set rsid (see the result convention above): dataLen bytes of
// range 0 (0: all), with CPARAM1 = param1 and CPARAM2 = param2. The
// completion's result is the program's 64-bit return value.
func (q *QueuePair) ExecuteProgram(ns *Namespace, slot, rsid uint16, dataLen uint32, param1, param2 uint64, flags uint32, cb Completer, tag uint64) error {
	if ns == nil || ns.CSI != CSICP {
		return errNotCompute
	}
	_, e, cid, err := q.single(false, cb, tag)
	if err != nil {
		return err
	}
	*e = SQE{OPC: OpExecProgram, CID: cid, NSID: ns.ID, CDW2: uint32(slot) | uint32(rsid)<<16,
		CDW10: uint32(param1), CDW11: uint32(param1 >> 32), CDW12: uint32(param2), CDW13: uint32(param2 >> 32),
		MPTR: uint64(dataLen), CDW15: flags}
	return nil
}

// MemoryRead reads n bytes (a multiple of 4) at byte off of memory namespace
// ns into buf.Buf[bufOff:].
func (q *QueuePair) MemoryRead(ns *Namespace, off uint64, buf *DMA, bufOff, n int, cb Completer, tag uint64) error {
	return q.memRW(OpMemRead, ns, off, buf, bufOff, n, cb, tag)
}

// MemoryWrite writes n bytes (a multiple of 4) from buf.Buf[bufOff:] to byte
// off of memory namespace ns.
func (q *QueuePair) MemoryWrite(ns *Namespace, off uint64, buf *DMA, bufOff, n int, cb Completer, tag uint64) error {
	return q.memRW(OpMemWrite, ns, off, buf, bufOff, n, cb, tag)
}

func (q *QueuePair) memRW(op uint8, ns *Namespace, off uint64, buf *DMA, bufOff, n int, cb Completer, tag uint64) error {
	if ns == nil || ns.CSI != CSISLM {
		return errNotCompute
	}
	if n <= 0 || n&3 != 0 || off&3 != 0 || n > q.maxXfer || buf == nil || bufOff < 0 || bufOff&3 != 0 || n > len(buf.Buf)-bufOff {
		return errBuffer
	}
	needPage := n > 2*PageSize-int(buf.IOVAAt(bufOff)&(PageSize-1))
	s, e, cid, err := q.single(needPage, cb, tag)
	if err != nil {
		return err
	}
	*e = SQE{OPC: op, CID: cid, NSID: ns.ID, CDW10: uint32(off), CDW11: uint32(off >> 32), CDW12: uint32(n)}
	e.PRP1, e.PRP2 = q.prps(s, buf.IOVA+uint64(bufOff), n)
	e.Flags = q.psdt
	return nil
}

// MemoryFill writes the 32-bit pattern over n bytes (a multiple of 4) at byte
// off of memory namespace ns.
func (q *QueuePair) MemoryFill(ns *Namespace, off uint64, n uint32, pattern uint32, cb Completer, tag uint64) error {
	if ns == nil || ns.CSI != CSISLM {
		return errNotCompute
	}
	_, e, cid, err := q.single(false, cb, tag)
	if err != nil {
		return err
	}
	*e = SQE{OPC: OpMemFill, CID: cid, NSID: ns.ID, CDW10: uint32(off), CDW11: uint32(off >> 32), CDW12: n, CDW13: pattern}
	return nil
}

// MemoryCopy copies the source LBA ranges, in order, to consecutive bytes of
// memory namespace ns starting at byte dst (descriptor format 2h). At most
// 128 sources.
func (q *QueuePair) MemoryCopy(ns *Namespace, dst uint64, src []MemCopySource, cb Completer, tag uint64) error {
	if ns == nil || ns.CSI != CSISLM {
		return errNotCompute
	}
	if len(src) == 0 || len(src) > PageSize/MemCopySourceSize {
		return errRanges
	}
	for i := range src {
		if src[i].Blocks == 0 || src[i].Blocks > 65536 {
			return errors.Errorf("nvme: memory copy source of %d blocks: must be 1..65536", src[i].Blocks)
		}
	}
	s, e, cid, err := q.single(true, cb, tag)
	if err != nil {
		return err
	}
	page, iova := q.dataPage(s)
	for i := range src {
		putMemCopySource(page[i*MemCopySourceSize:], src[i])
	}
	*e = SQE{OPC: OpMemCopy, CID: cid, NSID: ns.ID, PRP1: iova, CDW10: uint32(dst), CDW11: uint32(dst >> 32),
		CDW12: uint32(len(src)-1) | MemCopyFormatLBA<<8}
	e.PRP2, e.Flags = q.pageLen(len(src) * MemCopySourceSize)
	return nil
}
