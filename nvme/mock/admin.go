package mock

import (
	"encoding/binary"
	"math/rand/v2"
	"sync/atomic"

	"github.com/bpfblk/bpfblk/nvme"
)

var le = binary.LittleEndian

// admin executes an admin command. Caller holds ctl and the admin CQ lock.
func (c *Controller) admin(s *sq, e *nvme.SQE) completion {
	if e.Fuse() != 0 || e.PSDT() != 0 {
		return failDNR(nvme.ErrInvalidField)
	}
	switch e.OPC {
	case nvme.AdminIdentify:
		return c.identify(e)
	case nvme.AdminSetFeatures:
		return c.setFeatures(e)
	case nvme.AdminGetFeatures:
		return c.getFeatures(e)
	case nvme.AdminGetLogPage:
		return c.getLogPage(e)
	case nvme.AdminCreateCQ:
		return c.createCQ(e)
	case nvme.AdminCreateSQ:
		return c.createSQ(e)
	case nvme.AdminDeleteSQ:
		return c.deleteSQ(e)
	case nvme.AdminDeleteCQ:
		return c.deleteCQ(e)
	case nvme.AdminAbort:
		return c.abort(e)
	case nvme.AdminKeepAlive:
		return ok()
	case nvme.AdminLoadProgram, nvme.AdminProgActMgmt, nvme.AdminMemRangeSetMg:
		return c.computeAdmin(e)
	case nvme.AdminAsyncEvent:
		// No asynchronous events are generated: the request stays
		// outstanding until the controller is reset.
		return completion{noPost: true}
	}
	return failDNR(nvme.ErrInvalidOpcode)
}

func (c *Controller) identify(e *nvme.SQE) completion {
	cns := uint8(e.CDW10)
	csi := uint8(e.CDW11 >> 24)
	b := make([]byte, nvme.IdentifyDataSize)
	switch cns {
	case nvme.CNSController:
		c.identifyController(b)
	case nvme.CNSCSIController:
		if commandSet(csi) == nil {
			return failDNR(nvme.ErrInvalidField)
		}
		if csi == nvme.CSINVM {
			b[0] = 0 // VSL, WZSL, DMRL, DMRSL, DMSL: no limits
		}
	case nvme.CNSNamespace, nvme.CNSIndepNamespace, nvme.CNSNSDescList, nvme.CNSCSINamespace:
		if e.NSID == 0 || e.NSID == nvme.NSIDBroadcast {
			return failDNR(nvme.ErrInvalidNamespace)
		}
		if int(e.NSID) > len(c.namespaces) {
			if e.NSID > maxNSID {
				return failDNR(nvme.ErrInvalidNamespace)
			}
			break // inactive: zeroes
		}
		ns := c.namespaces[e.NSID-1]
		switch cns {
		case nvme.CNSNamespace:
			if ns.csi == nvme.CSINVM {
				c.identifyNamespace(ns, b)
			}
		case nvme.CNSIndepNamespace:
			b[0] = 0  // NSFEAT
			b[14] = 1 // NSTAT: ready
		case nvme.CNSNSDescList:
			b[0], b[1] = nvme.NSDescTypeNGUID, 16
			copy(b[4:20], c.nguid(ns))
			b[20], b[21] = nvme.NSDescTypeCSI, 1
			b[24] = ns.csi
		case nvme.CNSCSINamespace:
			if csi != ns.csi {
				return failDNR(nvme.ErrInvalidField)
			}
			if ns.ops.identifyNS != nil {
				ns.ops.identifyNS(c, ns, b)
			}
		}
	case nvme.CNSActiveNSList, nvme.CNSCSIActiveNSList:
		if e.NSID >= 0xfffffffe {
			return failDNR(nvme.ErrInvalidNamespace)
		}
		i := 0
		for _, ns := range c.namespaces {
			if ns.id <= e.NSID || (cns == nvme.CNSCSIActiveNSList && ns.csi != csi) {
				continue
			}
			if i == nvme.IdentifyDataSize/4 {
				break
			}
			le.PutUint32(b[4*i:], ns.id)
			i++
		}
	case nvme.CNSIOCommandSetData:
		le.PutUint64(b[0:], c.iocsVector())
	default:
		return failDNR(nvme.ErrInvalidField)
	}
	return completion{status: c.writeHost(e, b)}
}

// maxNSID is the NN the controller reports.
const maxNSID = 256

// iocsVector is the one I/O command set combination offered: NVM plus every
// other command set one of the namespaces uses.
func (c *Controller) iocsVector() uint64 {
	v := uint64(1) << nvme.CSINVM
	for _, ns := range c.namespaces {
		v |= 1 << ns.csi
	}
	return v
}

func (c *Controller) nguid(ns *namespace) []byte {
	g := make([]byte, 16)
	copy(g, c.cfg.Serial)
	le.PutUint32(g[12:], ns.id)
	return g
}

func putString(b []byte, s string) {
	for i := range b {
		b[i] = ' '
	}
	copy(b, s)
}

func (c *Controller) identifyController(b []byte) {
	le.PutUint16(b[0:], c.cfg.VID)
	le.PutUint16(b[2:], c.cfg.VID)
	putString(b[4:24], c.cfg.Serial)
	putString(b[24:64], c.cfg.Model)
	putString(b[64:72], c.cfg.Firmware)
	b[72] = 6 // RAB
	b[77] = c.mdts
	le.PutUint16(b[78:], uint16(c.index+1)) // CNTLID
	le.PutUint32(b[80:], vsNVMe20)
	b[111] = 1 // CNTRLTYPE: I/O controller
	b[258] = 3 // ACL: 4 concurrent aborts
	b[259] = 3 // AERL
	b[261] = 1 << 1
	b[262] = errLogEntries - 1
	b[512] = 0x66 // SQES
	b[513] = 0x44 // CQES
	le.PutUint16(b[514:], uint16(min(c.cfg.MQES+1, 0xffff)))
	le.PutUint32(b[516:], maxNSID)
	oncs := uint16(0)
	if !c.cfg.NoDSM {
		oncs |= nvme.ONCSDSM
	}
	if !c.cfg.NoWriteZeroes {
		oncs |= nvme.ONCSWriteZeroes
	}
	if !c.cfg.NoCopy {
		oncs |= nvme.ONCSCopy
		le.PutUint16(b[534:], 1) // OCFS: format 0
	}
	le.PutUint16(b[520:], oncs)
	b[525] = 1 // VWC present
	if c.cfg.Subsystem != "" {
		b[76] = nvme.CMICMultiController // CMIC: the subsystem may hold several controllers
	}
	nqn := c.subsystem()
	putString(b[768:1024], nqn)
	for i := 768 + min(len(nqn), 256); i < 1024; i++ {
		b[i] = 0
	}
}

func (c *Controller) identifyNamespace(ns *namespace, b []byte) {
	le.PutUint64(b[0:], ns.blocks)
	le.PutUint64(b[8:], ns.blocks)
	le.PutUint64(b[16:], ns.blocks)
	b[25] = 1 // NLBAF: two formats
	if ns.lbaSize == 4096 {
		b[26] = 1
	}
	b[33] = 0x09 // DLFEAT: deallocated blocks read zeroes; Write Zeroes may deallocate
	le.PutUint16(b[74:], c.cfg.MSSRL)
	le.PutUint32(b[76:], c.cfg.MCL)
	b[80] = c.cfg.MSRC
	copy(b[104:120], c.nguid(ns))
	le.PutUint32(b[128:], 9<<16)  // LBAF0: 512 B
	le.PutUint32(b[132:], 12<<16) // LBAF1: 4 KiB
}

func (c *Controller) setFeatures(e *nvme.SQE) completion {
	fid := uint8(e.CDW10)
	switch fid {
	case nvme.FeatNumQueues:
		if c.ioCreated > 0 {
			return failDNR(nvme.ErrCommandSequence)
		}
		nsq, ncq := int(e.CDW11&0xffff)+1, int(e.CDW11>>16)+1
		if nsq == 0x10000 || ncq == 0x10000 {
			return failDNR(nvme.ErrInvalidField)
		}
		n := min(max(nsq, ncq), c.cfg.MaxQueues)
		c.numQueues = n
		return completion{dw0: uint32(n-1) | uint32(n-1)<<16}
	case nvme.FeatIOCSProfile:
		if c.cc.Load()>>nvme.CCCSSShift&7 != 6 || e.CDW11&0x1ff != 0 {
			return failDNR(nvme.ErrInvalidField)
		}
		c.iocsIndex = e.CDW11 & 0x1ff
		return ok()
	case nvme.FeatArbitration, nvme.FeatPowerMgmt, nvme.FeatTempThreshold, nvme.FeatVolatileWC,
		nvme.FeatIntCoalescing, nvme.FeatAsyncEventCfg, nvme.FeatTimestamp, nvme.FeatKeepAliveTimer:
		c.features[fid] = e.CDW11
		return ok()
	}
	return failDNR(nvme.ErrInvalidField)
}

func (c *Controller) getFeatures(e *nvme.SQE) completion {
	fid := uint8(e.CDW10)
	switch fid {
	case nvme.FeatNumQueues:
		n := uint32(c.numQueues - 1)
		return completion{dw0: n | n<<16}
	case nvme.FeatIOCSProfile:
		return completion{dw0: c.iocsIndex}
	case nvme.FeatArbitration, nvme.FeatPowerMgmt, nvme.FeatTempThreshold, nvme.FeatVolatileWC,
		nvme.FeatIntCoalescing, nvme.FeatAsyncEventCfg, nvme.FeatTimestamp, nvme.FeatKeepAliveTimer:
		return completion{dw0: c.features[fid]}
	}
	return failDNR(nvme.ErrInvalidField)
}

func (c *Controller) getLogPage(e *nvme.SQE) completion {
	lid := uint8(e.CDW10)
	numd := uint64(e.CDW10>>16) | uint64(e.CDW11&0xffff)<<16
	n := (numd + 1) * 4
	off := uint64(e.CDW12) | uint64(e.CDW13)<<32
	if off&3 != 0 || n > 1<<20 {
		return failDNR(nvme.ErrInvalidField)
	}
	var page []byte
	switch lid {
	case nvme.LogErrorInfo:
		page = make([]byte, errLogEntries*nvme.ErrorLogEntrySize)
		ents, _ := c.errorLog()
		for i, ent := range ents { // newest first
			b := page[i*nvme.ErrorLogEntrySize:]
			le.PutUint64(b[0:], ent.ErrorCount)
			le.PutUint16(b[8:], ent.SQID)
			le.PutUint16(b[10:], ent.CID)
			le.PutUint16(b[12:], ent.Status)
			le.PutUint16(b[14:], ent.ParamLoc)
			le.PutUint64(b[16:], ent.LBA)
			le.PutUint32(b[24:], ent.NSID)
		}
	case nvme.LogSMART:
		page = make([]byte, nvme.SMARTLogSize)
		le.PutUint16(page[1:], 300) // 27 C
		page[3], page[4] = 100, 10
		unitsRead := c.sum(func(x *counters) *atomic.Uint64 { return &x.unitsRead })
		unitsWritten := c.sum(func(x *counters) *atomic.Uint64 { return &x.unitsWritten })
		le.PutUint64(page[32:], (unitsRead/512+999)/1000)
		le.PutUint64(page[48:], (unitsWritten/512+999)/1000)
		le.PutUint64(page[64:], c.sum(func(x *counters) *atomic.Uint64 { return &x.reads }))
		le.PutUint64(page[80:], c.sum(func(x *counters) *atomic.Uint64 { return &x.writes }))
		le.PutUint64(page[112:], 1)
		le.PutUint64(page[160:], c.sum(func(x *counters) *atomic.Uint64 { return &x.mediaErrors }))
		_, errs := c.errorLog()
		le.PutUint64(page[176:], errs)
	case nvme.LogFirmwareSlot:
		page = make([]byte, 512)
		page[0] = 1
		copy(page[8:16], c.cfg.Firmware)
	default:
		return failDNR(nvme.ErrInvalidLogPage)
	}
	out := make([]byte, n)
	if off < uint64(len(page)) {
		copy(out, page[off:])
	}
	return completion{status: c.writeHost(e, out)}
}

func (c *Controller) createCQ(e *nvme.SQE) completion {
	qid := int(e.CDW10 & 0xffff)
	size := int(e.CDW10>>16) + 1
	if qid == 0 || qid > c.numQueues || c.cqs[qid].Load() != nil {
		return failDNR(nvme.ErrInvalidQueueID)
	}
	if size < 2 || size > c.cfg.MQES+1 {
		return failDNR(nvme.ErrInvalidQueueSize)
	}
	if e.CDW11&1 == 0 || c.cc.Load()>>nvme.CCIOCQESShift&0xf != 4 {
		return failDNR(nvme.ErrInvalidField)
	}
	if e.PRP1&(pageSize-1) != 0 {
		return failDNR(nvme.ErrPRPOffsetInvalid)
	}
	mem, ok := c.bus.access(&c.qc[0].counters, e.PRP1, size*nvme.CQESize, true, false)
	if !ok {
		return fail(nvme.ErrDataTransfer)
	}
	c.cqs[qid].Store(&cq{id: uint16(qid), mem: mem, size: uint16(size), phase: 1})
	c.ioCreated++
	return completion{}
}

func (c *Controller) createSQ(e *nvme.SQE) completion {
	qid := int(e.CDW10 & 0xffff)
	size := int(e.CDW10>>16) + 1
	cqid := int(e.CDW11 >> 16)
	if qid == 0 || qid > c.numQueues || c.sqs[qid].Load() != nil {
		return failDNR(nvme.ErrInvalidQueueID)
	}
	if size < 2 || size > c.cfg.MQES+1 {
		return failDNR(nvme.ErrInvalidQueueSize)
	}
	if cqid == 0 || cqid >= len(c.cqs) || c.cqs[cqid].Load() == nil {
		return failDNR(nvme.ErrInvalidCQ)
	}
	if e.CDW11&1 == 0 || c.cc.Load()>>nvme.CCIOSQESShift&0xf != 6 {
		return failDNR(nvme.ErrInvalidField)
	}
	if e.PRP1&(pageSize-1) != 0 {
		return failDNR(nvme.ErrPRPOffsetInvalid)
	}
	mem, ok := c.bus.access(&c.qc[0].counters, e.PRP1, size*nvme.SQESize, false, false)
	if !ok {
		return fail(nvme.ErrDataTransfer)
	}
	q := c.cqs[cqid].Load()
	s := &sq{id: uint16(qid), mem: mem, size: uint16(size), cq: q,
		rng: rand.New(rand.NewPCG(c.cfg.Seed, uint64(c.index)<<16|uint64(qid))), scratch: make([]byte, 64<<10), st: &c.qc[qid], owner: c}
	q.mu.Lock()
	q.sqs = append(append([]*sq(nil), q.sqs...), s)
	l := q.sqs
	q.attached.Store(&l)
	q.mu.Unlock()
	c.sqs[qid].Store(s)
	c.ioCreated++
	return completion{}
}

func (c *Controller) deleteSQ(e *nvme.SQE) completion {
	qid := int(e.CDW10 & 0xffff)
	if qid == 0 || qid >= len(c.sqs) || c.sqs[qid].Load() == nil {
		return failDNR(nvme.ErrInvalidQueueID)
	}
	s := c.sqs[qid].Load()
	q := s.cq
	q.mu.Lock()
	s.deleted = true
	// Commands the device still holds are aborted by the deletion.
	for _, h := range s.held {
		if !q.full() {
			q.post(s.id, s.head, h.cid, fail(nvme.ErrAbortSQDeleted))
		}
	}
	s.held = nil
	l := make([]*sq, 0, len(q.sqs))
	for _, x := range q.sqs {
		if x != s {
			l = append(l, x)
		}
	}
	q.sqs = l
	q.attached.Store(&l)
	q.mu.Unlock()
	c.sqs[qid].Store(nil)
	return ok()
}

func (c *Controller) deleteCQ(e *nvme.SQE) completion {
	qid := int(e.CDW10 & 0xffff)
	if qid == 0 || qid >= len(c.cqs) || c.cqs[qid].Load() == nil {
		return failDNR(nvme.ErrInvalidQueueID)
	}
	q := c.cqs[qid].Load()
	q.mu.Lock()
	attached := len(q.sqs)
	if attached == 0 {
		q.deleted = true
	}
	q.mu.Unlock()
	if attached > 0 {
		return failDNR(nvme.ErrInvalidQueueDelete)
	}
	c.cqs[qid].Store(nil)
	return ok()
}

// abort completes a command the device is holding with Command Abort
// Requested. DW0 bit 0 is set when nothing was aborted.
func (c *Controller) abort(e *nvme.SQE) completion {
	sqid := int(e.CDW10 & 0xffff)
	cid := uint16(e.CDW10 >> 16)
	if sqid == 0 || sqid >= len(c.sqs) {
		return completion{dw0: 1}
	}
	s := c.sqs[sqid].Load()
	if s == nil {
		return completion{dw0: 1}
	}
	q := s.cq
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, h := range s.held {
		if h.cid != cid || h.lost {
			continue
		}
		if q.full() {
			return completion{dw0: 1}
		}
		s.held = append(s.held[:i], s.held[i+1:]...)
		q.post(s.id, s.head, cid, fail(nvme.ErrAbortRequested))
		return completion{}
	}
	return completion{dw0: 1}
}
