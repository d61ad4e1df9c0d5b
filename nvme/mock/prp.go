package mock

import (
	"encoding/binary"

	"github.com/bpfblk/bpfblk/nvme"
)

// stOK is the zero status; the others are CQE status fields without phase.
var (
	stOK        uint16
	stDataXfer  = nvme.ErrDataTransfer.Field()
	stPRPOffset = nvme.ErrPRPOffsetInvalid.Field()
	stInvField  = nvme.ErrInvalidField.Field()
)

// walkPRP calls fn for every host memory segment of an n-byte transfer
// described by PRP1/PRP2 (with PRP lists), translating each address through
// the bus. toHost says the device writes the memory. fn returns a status; the
// first non-zero status stops the walk. An unmapped address is a bus fault and
// yields Data Transfer Error.
func (c *Controller) walkPRP(st *counters, prp1, prp2 uint64, n int, toHost bool, fn func(seg []byte, off int) uint16) uint16 {
	if n <= 0 {
		return stOK
	}
	if prp1&3 != 0 {
		return stPRPOffset
	}
	first := min(n, pageSize-int(prp1&(pageSize-1)))
	seg, ok := c.bus.access(st, prp1, first, toHost, true)
	if !ok {
		return stDataXfer
	}
	if st := fn(seg, 0); st != stOK {
		return st
	}
	done, rest := first, n-first
	if rest == 0 {
		return stOK
	}
	if rest <= pageSize {
		if prp2&(pageSize-1) != 0 {
			return stPRPOffset
		}
		seg, ok := c.bus.access(st, prp2, rest, toHost, true)
		if !ok {
			return stDataXfer
		}
		return fn(seg, done)
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
		ents, ok := c.bus.access(st, list, per*8, false, false)
		if !ok {
			return stDataXfer
		}
		chained := false
		for i := 0; i < per && rest > 0; i++ {
			ent := binary.LittleEndian.Uint64(ents[8*i:])
			if i == per-1 && rest > pageSize {
				list, chained = ent, true
				break
			}
			if ent&(pageSize-1) != 0 {
				return stPRPOffset
			}
			k := min(rest, pageSize)
			seg, ok := c.bus.access(st, ent, k, toHost, true)
			if !ok {
				return stDataXfer
			}
			if st := fn(seg, done); st != stOK {
				return st
			}
			done, rest = done+k, rest-k
		}
		if !chained && rest > 0 {
			return stInvField
		}
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
