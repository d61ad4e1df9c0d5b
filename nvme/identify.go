package nvme

import (
	"encoding/binary"
	"strings"

	"github.com/pkg/errors"
)

var le = binary.LittleEndian

// IdentifyController holds the fields of the Identify Controller data
// structure (CNS 01h) the stack uses. Raw keeps all 4096 bytes.
type IdentifyController struct {
	VID       uint16
	SSVID     uint16
	Serial    string
	Model     string
	Firmware  string
	RAB       uint8
	IEEE      [3]byte
	CMIC      uint8
	MDTS      uint8 // max data transfer as 2^MDTS minimum pages; 0 = no limit
	CNTLID    uint16
	Version   uint32
	OAES      uint32
	CTRATT    uint32
	CNTRLTYPE uint8
	OACS      uint16
	ACL       uint8 // abort command limit, 0-based
	AERL      uint8
	LPA       uint8
	ELPE      uint8 // error log page entries, 0-based
	SQES      uint8
	CQES      uint8
	MAXCMD    uint16
	NN        uint32 // number of namespaces (maximum NSID)
	ONCS      uint16 // optional NVM command support
	FUSES     uint16
	FNA       uint8
	VWC       uint8
	AWUN      uint16
	AWUPF     uint16
	OCFS      uint16 // copy formats supported
	SGLS      uint32
	SubNQN    string
	Raw       [IdentifyDataSize]byte
}

// CMIC (controller multi-path I/O and namespace sharing capabilities) bits.
const (
	// CMICMultiPort: the NVM subsystem may have two or more ports.
	CMICMultiPort = 1 << 0
	// CMICMultiController: the NVM subsystem may have two or more
	// controllers (SUBNQN names it; its controllers share it).
	CMICMultiController = 1 << 1
	// CMICSRIOV: the controller is associated with an SR-IOV virtual function.
	CMICSRIOV = 1 << 2
	// CMICANA: the controller reports asymmetric namespace access.
	CMICANA = 1 << 3
)

// ONCS bits.
const (
	ONCSCompare      = 1 << 0
	ONCSWriteUncorr  = 1 << 1
	ONCSDSM          = 1 << 2
	ONCSWriteZeroes  = 1 << 3
	ONCSSaveSelect   = 1 << 4
	ONCSReservations = 1 << 5
	ONCSTimestamp    = 1 << 6
	ONCSVerify       = 1 << 7
	ONCSCopy         = 1 << 8
)

func trimID(b []byte) string {
	return strings.TrimRight(strings.TrimRight(string(b), "\x00"), " ")
}

// ParseIdentifyController decodes an Identify Controller data structure.
func ParseIdentifyController(b []byte) (*IdentifyController, error) {
	if len(b) < IdentifyDataSize {
		return nil, errors.Errorf("nvme: identify controller data needs %d bytes, have %d", IdentifyDataSize, len(b))
	}
	c := &IdentifyController{
		VID:       le.Uint16(b[0:]),
		SSVID:     le.Uint16(b[2:]),
		Serial:    trimID(b[4:24]),
		Model:     trimID(b[24:64]),
		Firmware:  trimID(b[64:72]),
		RAB:       b[72],
		CMIC:      b[76],
		MDTS:      b[77],
		CNTLID:    le.Uint16(b[78:]),
		Version:   le.Uint32(b[80:]),
		OAES:      le.Uint32(b[92:]),
		CTRATT:    le.Uint32(b[96:]),
		CNTRLTYPE: b[111],
		OACS:      le.Uint16(b[256:]),
		ACL:       b[258],
		AERL:      b[259],
		LPA:       b[261],
		ELPE:      b[262],
		SQES:      b[512],
		CQES:      b[513],
		MAXCMD:    le.Uint16(b[514:]),
		NN:        le.Uint32(b[516:]),
		ONCS:      le.Uint16(b[520:]),
		FUSES:     le.Uint16(b[522:]),
		FNA:       b[524],
		VWC:       b[525],
		AWUN:      le.Uint16(b[526:]),
		AWUPF:     le.Uint16(b[528:]),
		OCFS:      le.Uint16(b[534:]),
		SGLS:      le.Uint32(b[536:]),
		SubNQN:    trimID(b[768:1024]),
	}
	copy(c.IEEE[:], b[73:76])
	copy(c.Raw[:], b)
	if c.SQES != 0 && c.SQES&0xf > 6 {
		return nil, errors.Errorf("nvme: identify controller: SQES %#x does not allow 64-byte entries", c.SQES)
	}
	if c.CQES != 0 && c.CQES&0xf > 4 {
		return nil, errors.Errorf("nvme: identify controller: CQES %#x does not allow 16-byte entries", c.CQES)
	}
	return c, nil
}

// LBAFormat is one entry of a namespace's LBA format list.
type LBAFormat struct {
	MS    uint16 // metadata bytes per LBA
	LBADS uint8  // LBA data size as a power of two
	RP    uint8  // relative performance
}

// IdentifyNamespace holds the fields of the NVM Identify Namespace data
// structure (CNS 00h) the stack uses.
type IdentifyNamespace struct {
	NSZE    uint64 // size in logical blocks
	NCAP    uint64
	NUSE    uint64
	NSFEAT  uint8
	NLBAF   uint8 // number of LBA formats, 0-based
	FLBAS   uint8
	MC      uint8
	DPC     uint8
	DPS     uint8
	NMIC    uint8
	DLFEAT  uint8
	NOIOB   uint16
	MSSRL   uint16 // max single source range length (Copy)
	MCL     uint32 // max copy length
	MSRC    uint8  // max source range count, 0-based
	NGUID   [16]byte
	EUI64   [8]byte
	LBAF    []LBAFormat
	LBASize uint32 // data bytes per LBA of the format in use
	MSize   uint16 // metadata bytes per LBA of the format in use
}

// ParseIdentifyNamespace decodes an Identify Namespace data structure. A
// namespace that is not active (all zeroes) parses with NSZE 0.
func ParseIdentifyNamespace(b []byte) (*IdentifyNamespace, error) {
	if len(b) < IdentifyDataSize {
		return nil, errors.Errorf("nvme: identify namespace data needs %d bytes, have %d", IdentifyDataSize, len(b))
	}
	n := &IdentifyNamespace{
		NSZE:   le.Uint64(b[0:]),
		NCAP:   le.Uint64(b[8:]),
		NUSE:   le.Uint64(b[16:]),
		NSFEAT: b[24],
		NLBAF:  b[25],
		FLBAS:  b[26],
		MC:     b[27],
		DPC:    b[28],
		DPS:    b[29],
		NMIC:   b[30],
		DLFEAT: b[33],
		NOIOB:  le.Uint16(b[46:]),
		MSSRL:  le.Uint16(b[74:]),
		MCL:    le.Uint32(b[76:]),
		MSRC:   b[80],
	}
	copy(n.NGUID[:], b[104:120])
	copy(n.EUI64[:], b[120:128])
	if n.NLBAF > 63 {
		return nil, errors.Errorf("nvme: identify namespace: NLBAF %d exceeds 64 formats", n.NLBAF)
	}
	n.LBAF = make([]LBAFormat, int(n.NLBAF)+1)
	for i := range n.LBAF {
		v := le.Uint32(b[128+4*i:])
		n.LBAF[i] = LBAFormat{MS: uint16(v), LBADS: uint8(v >> 16), RP: uint8(v>>24) & 3}
	}
	if n.NSZE == 0 {
		return n, nil
	}
	idx := int(n.FLBAS&0xf) | int(n.FLBAS>>5&3)<<4
	if idx >= len(n.LBAF) {
		return nil, errors.Errorf("nvme: identify namespace: FLBAS selects format %d of %d", idx, len(n.LBAF))
	}
	f := n.LBAF[idx]
	if f.LBADS < 9 || f.LBADS > 16 {
		return nil, errors.Errorf("nvme: identify namespace: LBA data size 2^%d outside 512 B..64 KiB", f.LBADS)
	}
	n.LBASize = 1 << f.LBADS
	n.MSize = f.MS
	return n, nil
}

// ParseNSList decodes an active namespace ID list (CNS 02h/07h): ascending
// NSIDs terminated by 0. A list that is not ascending is an error.
func ParseNSList(b []byte) ([]uint32, error) {
	if len(b) < IdentifyDataSize {
		return nil, errors.Errorf("nvme: namespace list needs %d bytes, have %d", IdentifyDataSize, len(b))
	}
	var ids []uint32
	var prev uint32
	for i := 0; i < IdentifyDataSize; i += 4 {
		id := le.Uint32(b[i:])
		if id == 0 {
			break
		}
		if id <= prev || id == NSIDBroadcast {
			return nil, errors.Errorf("nvme: namespace list entry %d (%#x) is not ascending after %#x", i/4, id, prev)
		}
		ids = append(ids, id)
		prev = id
	}
	return ids, nil
}

// NSDescriptors holds the Namespace Identification Descriptor list (CNS 03h).
type NSDescriptors struct {
	EUI64  []byte
	NGUID  []byte
	UUID   []byte
	CSI    uint8
	HasCSI bool
}

// ParseNSDescriptors decodes a Namespace Identification Descriptor list.
func ParseNSDescriptors(b []byte) (NSDescriptors, error) {
	var d NSDescriptors
	if len(b) < IdentifyDataSize {
		return d, errors.Errorf("nvme: descriptor list needs %d bytes, have %d", IdentifyDataSize, len(b))
	}
	for off := 0; off+4 <= IdentifyDataSize; {
		typ, n := b[off], int(b[off+1])
		if typ == 0 {
			break
		}
		if off+4+n > IdentifyDataSize {
			return d, errors.Errorf("nvme: descriptor at %d (type %d, %d bytes) runs past the list", off, typ, n)
		}
		v := b[off+4 : off+4+n]
		want := map[uint8]int{NSDescTypeEUI64: 8, NSDescTypeNGUID: 16, NSDescTypeUUID: 16, NSDescTypeCSI: 1}[typ]
		if want != 0 && n != want {
			return d, errors.Errorf("nvme: descriptor at %d: type %d has length %d, want %d", off, typ, n, want)
		}
		switch typ {
		case NSDescTypeEUI64:
			d.EUI64 = append([]byte(nil), v...)
		case NSDescTypeNGUID:
			d.NGUID = append([]byte(nil), v...)
		case NSDescTypeUUID:
			d.UUID = append([]byte(nil), v...)
		case NSDescTypeCSI:
			d.CSI, d.HasCSI = v[0], true
		}
		off += 4 + n
	}
	return d, nil
}

// parseIOCommandSets decodes the I/O Command Set data structure (CNS 1Ch):
// 512 vectors of 64 bits, bit i set when CSI i is part of the combination.
func parseIOCommandSets(b []byte) ([]uint64, error) {
	if len(b) < IdentifyDataSize {
		return nil, errors.Errorf("nvme: I/O command set data needs %d bytes, have %d", IdentifyDataSize, len(b))
	}
	v := make([]uint64, IOCommandSetEntries)
	for i := range v {
		v[i] = le.Uint64(b[8*i:])
	}
	return v, nil
}

// ErrorLogEntry is one entry of the Error Information log page (LID 01h).
type ErrorLogEntry struct {
	ErrorCount uint64
	SQID       uint16
	CID        uint16
	Status     uint16 // status field as in a CQE (bit 0 = phase)
	ParamLoc   uint16
	LBA        uint64
	NSID       uint32
	VS         uint8
	CSI        uint8
	CmdInfo    uint64
}

// ParseErrorLog decodes Error Information log entries; entries with
// ErrorCount 0 are unused and dropped.
func ParseErrorLog(b []byte) ([]ErrorLogEntry, error) {
	if len(b)%ErrorLogEntrySize != 0 {
		return nil, errors.Errorf("nvme: error log length %d is not a multiple of %d", len(b), ErrorLogEntrySize)
	}
	var out []ErrorLogEntry
	for off := 0; off < len(b); off += ErrorLogEntrySize {
		e := b[off:]
		ent := ErrorLogEntry{
			ErrorCount: le.Uint64(e[0:]),
			SQID:       le.Uint16(e[8:]),
			CID:        le.Uint16(e[10:]),
			Status:     le.Uint16(e[12:]),
			ParamLoc:   le.Uint16(e[14:]),
			LBA:        le.Uint64(e[16:]),
			NSID:       le.Uint32(e[24:]),
			VS:         e[28],
			CSI:        e[30],
			CmdInfo:    le.Uint64(e[32:]),
		}
		if ent.ErrorCount != 0 {
			out = append(out, ent)
		}
	}
	return out, nil
}

// SMARTLog is the SMART / Health Information log page (LID 02h). 128-bit
// counters are kept as their low 64 bits.
type SMARTLog struct {
	CriticalWarning  uint8
	Temperature      uint16 // Kelvin
	AvailableSpare   uint8
	SpareThreshold   uint8
	PercentUsed      uint8
	DataUnitsRead    uint64 // thousands of 512-byte units
	DataUnitsWritten uint64
	HostReads        uint64
	HostWrites       uint64
	BusyTime         uint64
	PowerCycles      uint64
	PowerOnHours     uint64
	UnsafeShutdowns  uint64
	MediaErrors      uint64
	ErrorLogEntries  uint64
}

// ParseSMARTLog decodes the SMART / Health Information log page.
func ParseSMARTLog(b []byte) (*SMARTLog, error) {
	if len(b) < SMARTLogSize {
		return nil, errors.Errorf("nvme: SMART log needs %d bytes, have %d", SMARTLogSize, len(b))
	}
	return &SMARTLog{
		CriticalWarning:  b[0],
		Temperature:      le.Uint16(b[1:]),
		AvailableSpare:   b[3],
		SpareThreshold:   b[4],
		PercentUsed:      b[5],
		DataUnitsRead:    le.Uint64(b[32:]),
		DataUnitsWritten: le.Uint64(b[48:]),
		HostReads:        le.Uint64(b[64:]),
		HostWrites:       le.Uint64(b[80:]),
		BusyTime:         le.Uint64(b[96:]),
		PowerCycles:      le.Uint64(b[112:]),
		PowerOnHours:     le.Uint64(b[128:]),
		UnsafeShutdowns:  le.Uint64(b[144:]),
		MediaErrors:      le.Uint64(b[160:]),
		ErrorLogEntries:  le.Uint64(b[176:]),
	}, nil
}
