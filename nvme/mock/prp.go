package mock

import (
	"github.com/bpfblk/bpfblk/nvme"
)

// stOK is the zero status; the others are CQE status fields without phase.
var (
	stOK        uint16
	stDataXfer  = nvme.ErrDataTransfer.Field()
	stPRPOffset = nvme.ErrPRPOffsetInvalid.Field()
	stInvField  = nvme.ErrInvalidField.Field()
)

// walkPRP calls fn for the host memory of an n-byte transfer described by
// PRP1/PRP2 (with PRP lists), translating addresses through the bus. toHost
// says the device writes the memory. Pages at consecutive bus addresses
// that one mapping covers reach fn as one segment, as a DMA engine bursts
// over them: a backing file is read with one call per run of pages, not
// one per page. fn returns a status; the first non-zero status stops the
// walk. An unmapped address is a bus fault and yields Data Transfer Error.
//
// The DMA is counted in qc, the counters of the queue executing the command.
func (c *Controller) walkPRP(qc *counters, prp1, prp2 uint64, n int, toHost bool, fn func(seg []byte, off int) uint16) uint16 {
	if n <= 0 {
		return stOK
	}
	if prp1&3 != 0 {
		return stPRPOffset
	}
	first := min(n, pageSize-int(prp1&(pageSize-1)))
	r := prpRun{c: c, qc: qc, toHost: toHost, fn: fn, iova: prp1, n: first}
	done, rest := first, n-first
	if rest == 0 {
		return r.flush()
	}
	if rest <= pageSize {
		if prp2&(pageSize-1) != 0 {
			return stPRPOffset
		}
		if st := r.add(prp2, rest, done); st != stOK {
			return st
		}
		return r.flush()
	}
	list := prp2
	hops, maxHops := 0, rest/pageSize+2
	for rest > 0 {
		if list&7 != 0 {
			return stPRPOffset
		}
		if hops++; hops > maxHops {
			return stInvField
		}
		per := (pageSize - int(list&(pageSize-1))) / 8
		ents, ok := c.bus.access(qc, list, per*8, false, false)
		if !ok {
			return stDataXfer
		}
		chained := false
		for i := 0; i < per && rest > 0; i++ {
			ent := le.Uint64(ents[8*i:])
			if i == per-1 && rest > pageSize {
				list, chained = ent, true
				break
			}
			if ent&(pageSize-1) != 0 {
				return stPRPOffset
			}
			k := min(rest, pageSize)
			if st := r.add(ent, k, done); st != stOK {
				return st
			}
			done, rest = done+k, rest-k
		}
		if !chained && rest > 0 {
			return stInvField
		}
	}
	return r.flush()
}

// prpRun gathers the pages of a PRP walk at consecutive bus addresses into
// one segment for fn.
type prpRun struct {
	c      *Controller
	qc     *counters
	toHost bool
	fn     func(seg []byte, off int) uint16
	iova   uint64 // start of the run
	n      int    // bytes in the run
	off    int    // transfer offset of the run
}

// add appends k bytes at iova (transfer offset off) to the run, or hands
// the run to fn and starts a new one.
func (r *prpRun) add(iova uint64, k, off int) uint16 {
	if r.iova+uint64(r.n) == iova {
		r.n += k
		return stOK
	}
	if st := r.flush(); st != stOK {
		return st
	}
	r.iova, r.n, r.off = iova, k, off
	return stOK
}

// flush hands the run to fn: in one piece if one mapping covers it, page
// by page otherwise (a run may cross from one mapping into the next).
func (r *prpRun) flush() uint16 {
	if r.n == 0 {
		return stOK
	}
	iova, n, off := r.iova, r.n, r.off
	r.n = 0
	if seg, _, ok := r.c.bus.Translate(iova, n); ok {
		seg, _ = r.c.bus.access(r.qc, iova, n, r.toHost, true)
		return r.fn(seg, off)
	}
	for n > 0 {
		k := min(n, pageSize-int(iova&(pageSize-1)))
		seg, ok := r.c.bus.access(r.qc, iova, k, r.toHost, true)
		if !ok {
			return stDataXfer
		}
		if st := r.fn(seg, off); st != stOK {
			return st
		}
		iova, n, off = iova+uint64(k), n-k, off+k
	}
	return stOK
}

// readHost copies host memory described by the PRPs of admin command e into
// dst (counted on the admin queue).
func (c *Controller) readHost(e *nvme.SQE, dst []byte) uint16 {
	return c.readHostQ(&c.qc[0].counters, e, dst)
}

// writeHost copies src into host memory described by the PRPs of admin
// command e (counted on the admin queue).
func (c *Controller) writeHost(e *nvme.SQE, src []byte) uint16 {
	return c.writeHostQ(&c.qc[0].counters, e, src)
}

// readHostQ copies host memory described by the PRPs of e into dst, counting
// the DMA in st, the counters of the queue executing e.
func (c *Controller) readHostQ(st *counters, e *nvme.SQE, dst []byte) uint16 {
	return c.walkPRP(st, e.PRP1, e.PRP2, len(dst), false, func(seg []byte, off int) uint16 {
		copy(dst[off:], seg)
		return stOK
	})
}

// writeHostQ copies src into host memory described by the PRPs of e,
// counting the DMA in st.
func (c *Controller) writeHostQ(st *counters, e *nvme.SQE, src []byte) uint16 {
	return c.walkPRP(st, e.PRP1, e.PRP2, len(src), true, func(seg []byte, off int) uint16 {
		copy(seg, src[off:])
		return stOK
	})
}
