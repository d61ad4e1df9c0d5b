package nvme

import "time"

// Controller register offsets in BAR0 (NVMe 2.0, section 3.1.4).
const (
	RegCAP      = 0x00   // Controller Capabilities (64-bit)
	RegVS       = 0x08   // Version
	RegINTMS    = 0x0c   // Interrupt Mask Set
	RegINTMC    = 0x10   // Interrupt Mask Clear
	RegCC       = 0x14   // Controller Configuration
	RegCSTS     = 0x1c   // Controller Status
	RegNSSR     = 0x20   // NVM Subsystem Reset
	RegAQA      = 0x24   // Admin Queue Attributes
	RegASQ      = 0x28   // Admin Submission Queue Base Address (64-bit)
	RegACQ      = 0x30   // Admin Completion Queue Base Address (64-bit)
	RegCMBLOC   = 0x38   // Controller Memory Buffer Location
	RegCMBSZ    = 0x3c   // Controller Memory Buffer Size
	RegCMBMSC   = 0x50   // Controller Memory Buffer Memory Space Control (64-bit)
	RegCMBSTS   = 0x58   // Controller Memory Buffer Status
	RegDoorbell = 0x1000 // first doorbell (admin SQ tail)
)

// DoorbellOffset returns the BAR0 offset of the SQ tail (cq=false) or CQ head
// (cq=true) doorbell of queue qid for a doorbell stride of dstrd (CAP.DSTRD).
func DoorbellOffset(qid uint16, cq bool, dstrd uint8) uint32 {
	i := 2 * uint32(qid)
	if cq {
		i++
	}
	return RegDoorbell + i*(4<<dstrd)
}

// CAP is the Controller Capabilities register.
type CAP uint64

// MQES is the maximum queue entries supported, 0-based.
func (c CAP) MQES() uint16 { return uint16(c) }

// CQR reports whether queues must be physically contiguous.
func (c CAP) CQR() bool { return c>>16&1 != 0 }

// TO is the worst-case time to wait for CSTS.RDY to change after CC.EN changes.
func (c CAP) TO() time.Duration { return time.Duration(c>>24&0xff) * 500 * time.Millisecond }

// DSTRD is the doorbell stride: doorbells are 4 << DSTRD bytes apart.
func (c CAP) DSTRD() uint8 { return uint8(c >> 32 & 0xf) }

// CSS is the Command Sets Supported field (bit 0 NVM, bit 6 I/O command sets,
// bit 7 admin only).
func (c CAP) CSS() uint8 { return uint8(c >> 37) }

// MPSMIN is the minimum memory page size as 2^(12+MPSMIN).
func (c CAP) MPSMIN() uint8 { return uint8(c >> 48 & 0xf) }

// MPSMAX is the maximum memory page size as 2^(12+MPSMAX).
func (c CAP) MPSMAX() uint8 { return uint8(c >> 52 & 0xf) }

// PMRS reports a Persistent Memory Region.
func (c CAP) PMRS() bool { return c>>56&1 != 0 }

// CMBS reports a Controller Memory Buffer (NVMe 1.4+: enabled through CMBMSC).
func (c CAP) CMBS() bool { return c>>57&1 != 0 }

// CAP.CSS bits.
const (
	CSSNVM       = 1 << 0 // NVM command set
	CSSIOSets    = 1 << 6 // one or more I/O command sets (CC.CSS = 6)
	CSSAdminOnly = 1 << 7 // no I/O command set
)

// CC fields.
const (
	CCEnable      = 1 << 0
	CCCSSShift    = 4
	CCCSSNVM      = 0 << CCCSSShift
	CCCSSAll      = 6 << CCCSSShift
	CCMPSShift    = 7
	CCSHNShift    = 14
	CCSHNNormal   = 1 << CCSHNShift
	CCIOSQESShift = 16
	CCIOCQESShift = 20
)

// CSTS fields.
const (
	CSTSReady       = 1 << 0 // RDY
	CSTSFatal       = 1 << 1 // CFS: controller fatal status
	CSTSShstMask    = 3 << 2
	CSTSShstDone    = 2 << 2
	CSTSNSSRO       = 1 << 4
	CSTSProcPaused  = 1 << 5
	CSTSUnreachable = 0xffffffff // a removed or dead function reads all ones
)

// CMBSZ fields.
const (
	CMBSZSQS   = 1 << 0 // SQs may live in the CMB
	CMBSZCQS   = 1 << 1 // CQs may live in the CMB
	CMBSZLISTS = 1 << 2 // PRP lists may live in the CMB
	CMBSZRDS   = 1 << 3 // read data may be placed in the CMB
	CMBSZWDS   = 1 << 4 // write data may come from the CMB
)

// CMBMSC fields.
const (
	CMBMSCCRE  = 1 << 0 // capabilities registers enabled (CMBLOC/CMBSZ readable)
	CMBMSCCMSE = 1 << 1 // controller memory space enabled at CBA
)

// PageSize is the memory page size the driver programs (CC.MPS = 0).
const PageSize = 4096
