package nvme

import (
	"encoding/binary"

	"github.com/pkg/errors"
)

// SQE is a 64-byte submission queue entry in its wire layout (little endian).
type SQE struct {
	OPC   uint8  // opcode
	Flags uint8  // FUSE[1:0], PSDT[7:6]
	CID   uint16 // command identifier
	NSID  uint32
	CDW2  uint32
	CDW3  uint32
	MPTR  uint64 // metadata pointer
	PRP1  uint64 // data pointer, first entry
	PRP2  uint64 // data pointer, second entry or PRP list
	CDW10 uint32
	CDW11 uint32
	CDW12 uint32
	CDW13 uint32
	CDW14 uint32
	CDW15 uint32
}

// SQESize and CQESize are the entry sizes the driver programs (CC.IOSQES=6, IOCQES=4).
const (
	SQESize = 64
	CQESize = 16
)

// MarshalTo writes e into b[0:64] in wire order.
func (e *SQE) MarshalTo(b []byte) {
	_ = b[63]
	b[0] = e.OPC
	b[1] = e.Flags
	binary.LittleEndian.PutUint16(b[2:], e.CID)
	binary.LittleEndian.PutUint32(b[4:], e.NSID)
	binary.LittleEndian.PutUint32(b[8:], e.CDW2)
	binary.LittleEndian.PutUint32(b[12:], e.CDW3)
	binary.LittleEndian.PutUint64(b[16:], e.MPTR)
	binary.LittleEndian.PutUint64(b[24:], e.PRP1)
	binary.LittleEndian.PutUint64(b[32:], e.PRP2)
	binary.LittleEndian.PutUint32(b[40:], e.CDW10)
	binary.LittleEndian.PutUint32(b[44:], e.CDW11)
	binary.LittleEndian.PutUint32(b[48:], e.CDW12)
	binary.LittleEndian.PutUint32(b[52:], e.CDW13)
	binary.LittleEndian.PutUint32(b[56:], e.CDW14)
	binary.LittleEndian.PutUint32(b[60:], e.CDW15)
}

// ParseSQE decodes a 64-byte submission queue entry.
func ParseSQE(b []byte) (SQE, error) {
	if len(b) < SQESize {
		return SQE{}, errors.Errorf("nvme: SQE needs %d bytes, have %d", SQESize, len(b))
	}
	return SQE{
		OPC:   b[0],
		Flags: b[1],
		CID:   binary.LittleEndian.Uint16(b[2:]),
		NSID:  binary.LittleEndian.Uint32(b[4:]),
		CDW2:  binary.LittleEndian.Uint32(b[8:]),
		CDW3:  binary.LittleEndian.Uint32(b[12:]),
		MPTR:  binary.LittleEndian.Uint64(b[16:]),
		PRP1:  binary.LittleEndian.Uint64(b[24:]),
		PRP2:  binary.LittleEndian.Uint64(b[32:]),
		CDW10: binary.LittleEndian.Uint32(b[40:]),
		CDW11: binary.LittleEndian.Uint32(b[44:]),
		CDW12: binary.LittleEndian.Uint32(b[48:]),
		CDW13: binary.LittleEndian.Uint32(b[52:]),
		CDW14: binary.LittleEndian.Uint32(b[56:]),
		CDW15: binary.LittleEndian.Uint32(b[60:]),
	}, nil
}

// Fuse returns the FUSE field (0 normal, 1 first, 2 second of a fused pair).
func (e *SQE) Fuse() uint8 { return e.Flags & 3 }

// PSDT returns the PRP or SGL for Data Transfer field (0 = PRPs).
func (e *SQE) PSDT() uint8 { return e.Flags >> 6 }

// CQE is a 16-byte completion queue entry.
type CQE struct {
	DW0    uint32 // command specific
	DW1    uint32 // command specific
	SQHD   uint16 // SQ head pointer
	SQID   uint16 // SQ identifier
	CID    uint16 // command identifier
	Status uint16 // phase tag (bit 0) and status field (bits 15:1)
}

// ParseCQE decodes a 16-byte completion queue entry.
func ParseCQE(b []byte) (CQE, error) {
	if len(b) < CQESize {
		return CQE{}, errors.Errorf("nvme: CQE needs %d bytes, have %d", CQESize, len(b))
	}
	return CQE{
		DW0:    binary.LittleEndian.Uint32(b[0:]),
		DW1:    binary.LittleEndian.Uint32(b[4:]),
		SQHD:   binary.LittleEndian.Uint16(b[8:]),
		SQID:   binary.LittleEndian.Uint16(b[10:]),
		CID:    binary.LittleEndian.Uint16(b[12:]),
		Status: binary.LittleEndian.Uint16(b[14:]),
	}, nil
}

// MarshalTo writes c into b[0:16] in wire order.
func (c *CQE) MarshalTo(b []byte) {
	_ = b[15]
	binary.LittleEndian.PutUint32(b[0:], c.DW0)
	binary.LittleEndian.PutUint32(b[4:], c.DW1)
	binary.LittleEndian.PutUint16(b[8:], c.SQHD)
	binary.LittleEndian.PutUint16(b[10:], c.SQID)
	binary.LittleEndian.PutUint16(b[12:], c.CID)
	binary.LittleEndian.PutUint16(b[14:], c.Status)
}

// Phase returns the phase tag.
func (c *CQE) Phase() bool { return c.Status&1 != 0 }

// Err returns nil for a successful completion or the status as a StatusError.
func (c *CQE) Err() error { return StatusFromField(c.Status) }

// Admin command opcodes.
const (
	AdminDeleteSQ      = 0x00
	AdminCreateSQ      = 0x01
	AdminGetLogPage    = 0x02
	AdminDeleteCQ      = 0x04
	AdminCreateCQ      = 0x05
	AdminIdentify      = 0x06
	AdminAbort         = 0x08
	AdminSetFeatures   = 0x09
	AdminGetFeatures   = 0x0a
	AdminAsyncEvent    = 0x0c
	AdminKeepAlive     = 0x18
	AdminLoadProgram   = 0x85 // Computational Programs (draft, libnvme value)
	AdminProgActMgmt   = 0x88 // Program Activation Management (draft)
	AdminMemRangeSetMg = 0x89 // Memory Range Set Management (draft)
)

// NVM command set opcodes.
const (
	OpFlush       = 0x00
	OpWrite       = 0x01
	OpRead        = 0x02
	OpWriteUncorr = 0x04
	OpCompare     = 0x05
	OpWriteZeroes = 0x08
	OpDSM         = 0x09
	OpCopy        = 0x19
)

// Feature identifiers.
const (
	FeatArbitration    = 0x01
	FeatPowerMgmt      = 0x02
	FeatTempThreshold  = 0x04
	FeatVolatileWC     = 0x06
	FeatNumQueues      = 0x07
	FeatIntCoalescing  = 0x08
	FeatAsyncEventCfg  = 0x0b
	FeatIOCSProfile    = 0x19
	FeatTimestamp      = 0x0e
	FeatKeepAliveTimer = 0x0f
)

// Identify CNS values.
const (
	CNSNamespace         = 0x00
	CNSController        = 0x01
	CNSActiveNSList      = 0x02
	CNSNSDescList        = 0x03
	CNSCSINamespace      = 0x05
	CNSCSIController     = 0x06
	CNSCSIActiveNSList   = 0x07
	CNSIndepNamespace    = 0x08
	CNSIOCommandSetData  = 0x1c
	IdentifyDataSize     = 4096
	NSIDBroadcast        = 0xffffffff
	NSDescTypeEUI64      = 1
	NSDescTypeNGUID      = 2
	NSDescTypeUUID       = 3
	NSDescTypeCSI        = 4
	IOCommandSetEntries  = 512
	DSMRangeSize         = 16
	CopyRangeSize        = 32
	ErrorLogEntrySize    = 64
	SMARTLogSize         = 512
	LogErrorInfo         = 0x01
	LogSMART             = 0x02
	LogFirmwareSlot      = 0x03
	LogCommandsSupported = 0x05
)

// I/O command set identifiers (CSI).
const (
	CSINVM = 0
	CSIKV  = 1
	CSIZNS = 2
	CSISLM = 3 // Subsystem Local Memory
	CSICP  = 4 // Computational Programs
)
