package tcp

import (
	"encoding/binary"
	"strings"
)

var le = binary.LittleEndian

// Fabrics command opcode and command types (NVMe over Fabrics 1.1, 6).
const (
	opFabrics      = 0x7f
	fctPropertySet = 0x00
	fctConnect     = 0x01
	fctPropertyGet = 0x04
	fctDisconnect  = 0x08
)

// DiscoveryNQN is the well-known NQN of a discovery subsystem.
const DiscoveryNQN = "nqn.2014-08.org.nvmexpress.discovery"

// connectDataSize is the size of the Connect command's data.
const connectDataSize = 1024

// SGL descriptor type bytes NVMe/TCP uses.
const (
	sglDataBlock  = 0x00 // data block, address subtype (the driver's)
	sglInCapsule  = 0x01 // data block, offset subtype: in-capsule data
	sglTransport  = 0x5a // transport data block, transport-specific subtype
	sglTypeOffset = 39   // byte of the SQE holding the descriptor type
)

// Admin opcodes the transport and target handle themselves.
const (
	adminDeleteSQ    = 0x00
	adminCreateSQ    = 0x01
	adminGetLogPage  = 0x02
	adminDeleteCQ    = 0x04
	adminCreateCQ    = 0x05
	adminIdentify    = 0x06
	adminAbort       = 0x08
	adminSetFeatures = 0x09
	adminGetFeatures = 0x0a
	adminAsyncEvent  = 0x0c
	adminKeepAlive   = 0x18
)

// Status codes the transport synthesises or the target returns.
const (
	scSuccess         = 0x00
	scInvalidOpcode   = 0x01
	scInvalidField    = 0x02
	scCIDConflict     = 0x03
	scDataXferError   = 0x04
	scInternal        = 0x06
	scAbortRequested  = 0x07
	scInvalidNS       = 0x0b
	scSGLLengthInval  = 0x0f
	scSGLTypeInval    = 0x11
	scTransientTransp = 0x22
	scLBAOutOfRange   = 0x80
	// Command specific (SCT 1).
	scInvalidQueueID    = 0x01
	scInvalidQueueSize  = 0x02
	scInvalidLogPage    = 0x09
	scConnectInvalidPar = 0x82
	sctCommandSpecific  = 1
)

// statusField returns a CQE status field (phase bit 0) with DNR set.
func statusField(sct, sc uint8) uint16 {
	if sct == 0 && sc == 0 {
		return 0
	}
	return 1<<15 | uint16(sct&7)<<9 | uint16(sc)<<1
}

// putCQE writes a CQE into b.
func putCQE(b []byte, dw0, dw1 uint32, sqhd, sqid, cid, status uint16) {
	le.PutUint32(b[0:], dw0)
	le.PutUint32(b[4:], dw1)
	le.PutUint16(b[8:], sqhd)
	le.PutUint16(b[10:], sqid)
	le.PutUint16(b[12:], cid)
	le.PutUint16(b[14:], status)
}

// putNQN writes a NUL-padded NQN field.
func putNQN(b []byte, s string) {
	clear(b)
	copy(b[:len(b)-1], s)
}

// getNQN reads a NUL-padded NQN field.
func getNQN(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimRight(string(b), " ")
}

// Discovery log page (LID 70h) layout.
const (
	logDiscovery        = 0x70
	discHeaderSize      = 1024
	discEntrySize       = 1024
	trtypeTCP           = 3
	adrfamIPv4          = 1
	adrfamIPv6          = 2
	subtypeDiscovery    = 3 // current discovery subsystem
	subtypeNVM          = 2
	treqNotRequired     = 2 // secure channel not required
	discoveryMaxEntries = 64
)

// DiscoveryEntry is one record of a discovery log page.
type DiscoveryEntry struct {
	TrType  uint8  // 3: TCP
	AdrFam  uint8  // 1: IPv4, 2: IPv6
	SubType uint8  // 2: NVM subsystem, 3: discovery subsystem
	PortID  uint16 // port identifier
	CntlID  uint16 // 0xffff: dynamic controller model
	TrSvcID string // the TCP port
	SubNQN  string
	TrAddr  string
}

func putDiscoveryEntry(b []byte, e DiscoveryEntry) {
	clear(b[:discEntrySize])
	b[0], b[1], b[2], b[3] = e.TrType, e.AdrFam, e.SubType, treqNotRequired
	le.PutUint16(b[4:], e.PortID)
	le.PutUint16(b[6:], e.CntlID)
	le.PutUint16(b[8:], 32) // ASQSZ
	putNQN(b[32:64], e.TrSvcID)
	putNQN(b[256:512], e.SubNQN)
	putNQN(b[512:768], e.TrAddr)
}

func parseDiscoveryEntry(b []byte) DiscoveryEntry {
	return DiscoveryEntry{
		TrType: b[0], AdrFam: b[1], SubType: b[2],
		PortID: le.Uint16(b[4:]), CntlID: le.Uint16(b[6:]),
		TrSvcID: getNQN(b[32:64]), SubNQN: getNQN(b[256:512]), TrAddr: getNQN(b[512:768]),
	}
}
