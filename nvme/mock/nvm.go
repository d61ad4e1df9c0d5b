package mock

import (
	"encoding/binary"

	"github.com/bpfblk/bpfblk/nvme"
)

func init() {
	cs := &CommandSet{CSI: nvme.CSINVM, Name: "NVM"}
	cs.handlers[nvme.OpFlush] = nvmFlush
	cs.handlers[nvme.OpRead] = nvmRead
	cs.handlers[nvme.OpWrite] = nvmWrite
	cs.handlers[nvme.OpWriteZeroes] = nvmWriteZeroes
	cs.handlers[nvme.OpDSM] = nvmDSM
	cs.handlers[nvme.OpCopy] = nvmCopy
	registerCommandSet(cs)
}

// lbaRange decodes SLBA (CDW10-11) and the 0-based NLB (CDW12[15:0]) and
// checks them against the namespace.
func lbaRange(ns *namespace, e *nvme.SQE) (slba uint64, nlb uint64, st completion, good bool) {
	slba = uint64(e.CDW10) | uint64(e.CDW11)<<32
	nlb = uint64(e.CDW12&0xffff) + 1
	if slba >= ns.blocks || nlb > ns.blocks-slba {
		return 0, 0, failDNR(nvme.ErrLBAOutOfRange), false
	}
	return slba, nlb, ok(), true
}

func nvmFlush(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion {
	if ns.store.flush() != nil {
		return fail(nvme.ErrWriteFault)
	}
	return ok()
}

func (c *Controller) checkMDTS(n uint64) bool {
	return c.mdts == 0 || n <= uint64(pageSize)<<c.mdts
}

func nvmRead(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion {
	return nvmTransfer(c, &s.st.counters, ns, e, true)
}

func nvmWrite(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion {
	return nvmTransfer(c, &s.st.counters, ns, e, false)
}

// nvmTransfer moves a Read's data to the host (toHost) or a Write's data
// from it, through the command's PRPs, counting in qc (the executing
// queue's counters).
func nvmTransfer(c *Controller, qc *counters, ns *namespace, e *nvme.SQE, toHost bool) completion {
	slba, nlb, st, good := lbaRange(ns, e)
	if !good {
		return st
	}
	n := nlb << ns.shift
	if !c.checkMDTS(n) {
		return failDNR(nvme.ErrInvalidField)
	}
	if toHost {
		qc.reads.Add(1)
	} else {
		qc.writes.Add(1)
	}
	if ns.null {
		return ok()
	}
	base := int64(slba << ns.shift)
	status := c.walkPRP(qc, e.PRP1, e.PRP2, int(n), toHost, func(seg []byte, off int) uint16 {
		if toHost {
			if ns.store.readAt(seg, base+int64(off)) != nil {
				return nvme.ErrUnrecoveredRead.Field()
			}
		} else if ns.store.writeAt(seg, base+int64(off)) != nil {
			return nvme.ErrWriteFault.Field()
		}
		return stOK
	})
	if toHost {
		qc.unitsRead.Add(n)
	} else {
		qc.unitsWritten.Add(n)
	}
	return completion{status: status}
}

func nvmWriteZeroes(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion {
	if c.cfg.NoWriteZeroes {
		return failDNR(nvme.ErrInvalidOpcode)
	}
	slba, nlb, st, good := lbaRange(ns, e)
	if !good {
		return st
	}
	if ns.store.zero(int64(slba<<ns.shift), int64(nlb<<ns.shift)) != nil {
		return fail(nvme.ErrWriteFault)
	}
	return ok()
}

func nvmDSM(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion {
	if c.cfg.NoDSM {
		return failDNR(nvme.ErrInvalidOpcode)
	}
	nr := int(e.CDW10&0xff) + 1
	buf := s.scratch[:nr*nvme.DSMRangeSize]
	if st := c.readHostQ(&s.st.counters, e, buf); st != stOK {
		return completion{status: st}
	}
	for i := 0; i < nr; i++ {
		r := buf[i*nvme.DSMRangeSize:]
		nlb := uint64(binary.LittleEndian.Uint32(r[4:]))
		slba := binary.LittleEndian.Uint64(r[8:])
		if slba >= ns.blocks || nlb > ns.blocks-slba {
			return failDNR(nvme.ErrLBAOutOfRange)
		}
	}
	if e.CDW11&(1<<2) == 0 {
		return ok() // only hints: nothing to do
	}
	for i := 0; i < nr; i++ {
		r := buf[i*nvme.DSMRangeSize:]
		nlb := uint64(binary.LittleEndian.Uint32(r[4:]))
		slba := binary.LittleEndian.Uint64(r[8:])
		if ns.store.zero(int64(slba<<ns.shift), int64(nlb<<ns.shift)) != nil {
			return fail(nvme.ErrWriteFault)
		}
	}
	return ok()
}

func nvmCopy(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion {
	if c.cfg.NoCopy {
		return failDNR(nvme.ErrInvalidOpcode)
	}
	sdlba := uint64(e.CDW10) | uint64(e.CDW11)<<32
	nr := int(e.CDW12&0xff) + 1
	if e.CDW12>>8&0xf != 0 {
		return failDNR(nvme.ErrInvalidField) // only descriptor format 0
	}
	if nr > int(c.cfg.MSRC)+1 {
		return failDNR(nvme.ErrCommandSizeLimit)
	}
	desc := make([]byte, nr*nvme.CopyRangeSize)
	if st := c.readHostQ(&s.st.counters, e, desc); st != stOK {
		return completion{status: st}
	}
	var total uint64
	for i := 0; i < nr; i++ {
		d := desc[i*nvme.CopyRangeSize:]
		slba := binary.LittleEndian.Uint64(d[8:])
		nlb := uint64(binary.LittleEndian.Uint16(d[16:])) + 1
		if nlb > uint64(c.cfg.MSSRL) {
			return failDNR(nvme.ErrCommandSizeLimit)
		}
		if slba >= ns.blocks || nlb > ns.blocks-slba {
			return failDNR(nvme.ErrLBAOutOfRange)
		}
		total += nlb
	}
	if total > uint64(c.cfg.MCL) {
		return failDNR(nvme.ErrCommandSizeLimit)
	}
	if sdlba >= ns.blocks || total > ns.blocks-sdlba {
		return failDNR(nvme.ErrLBAOutOfRange)
	}
	if ns.null {
		return ok()
	}
	buf := s.scratch
	dst := int64(sdlba << ns.shift)
	for i := 0; i < nr; i++ {
		d := desc[i*nvme.CopyRangeSize:]
		src := int64(binary.LittleEndian.Uint64(d[8:]) << ns.shift)
		n := int64(uint64(binary.LittleEndian.Uint16(d[16:]))+1) << ns.shift
		for n > 0 {
			k := min(n, int64(len(buf)))
			if ns.store.readAt(buf[:k], src) != nil {
				return fail(nvme.ErrUnrecoveredRead)
			}
			if ns.store.writeAt(buf[:k], dst) != nil {
				return fail(nvme.ErrWriteFault)
			}
			src, dst, n = src+k, dst+k, n-k
		}
	}
	return ok()
}
