package mock

import (
	"github.com/bpfblk/bpfblk/nvme"
)

// Subsystem Local Memory namespaces: byte-addressed device memory. The host
// reaches it dword-granular through Memory Read, Write and Fill; Memory Copy
// fills it with LBAs of NVM namespaces of this controller or of another
// controller on the same bus, without the data touching host memory.

func init() {
	cs := &CommandSet{CSI: nvme.CSISLM, Name: "Subsystem Local Memory"}
	cs.handlers[nvme.OpMemCopy] = slmCopy
	cs.handlers[nvme.OpMemRead] = slmRead
	cs.handlers[nvme.OpMemWrite] = slmWrite
	cs.handlers[nvme.OpMemFill] = slmFill
	cs.identifyNS = func(c *Controller, ns *namespace, b []byte) {
		putSLMInfo(b, nvme.SLMInfo{Size: ns.slmSize()})
	}
	registerCommandSet(cs)
}

// slmSize is a memory namespace's size in bytes.
func (ns *namespace) slmSize() uint64 { return ns.blocks << ns.shift }

// slmMem returns the memory of SLM namespace ns, allocating it on first use.
// After that it takes no lock: commands of all queues only load a pointer.
func (c *Controller) slmMem(ns *namespace) []byte {
	if m := ns.slm.Load(); m != nil {
		return *m
	}
	s := c.compute()
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.slmMemLocked(s, ns)
}

// slmMemLocked is slmMem for a caller that holds s.mu. The memory is mapped
// on the bus as peer memory, at the address at which peers' DMA reaches it
// (Memory Copy from another controller's namespace: peer.go).
func (c *Controller) slmMemLocked(s *computeState, ns *namespace) []byte {
	if m := ns.slm.Load(); m != nil {
		return *m
	}
	m := s.mem[ns.id]
	if m == nil {
		m = alignedAlloc(int(ns.slmSize()))
		s.mem[ns.id] = m
	}
	if iova, err := c.bus.Map(m, PeerMemory); err == nil {
		c.dmaMu.Lock()
		c.internal = append(c.internal, iova)
		c.dmaMu.Unlock()
		ns.slmIOVA = iova
	}
	ns.slm.Store(&m)
	return m
}

// slmBytes returns the memory of a range (validated when its set was
// created), or nil.
func (c *Controller) slmBytes(r nvme.MemRange) []byte {
	ns := c.slmNamespace(r.NSID)
	if ns == nil {
		return nil
	}
	m := c.slmMem(ns)
	if r.Offset > uint64(len(m)) || uint64(r.Length) > uint64(len(m))-r.Offset {
		return nil
	}
	return m[r.Offset : r.Offset+uint64(r.Length)]
}

// slmSpan decodes the starting byte (CDW10-11) and length (CDW12) of Memory
// Read, Write and Fill and checks them.
func slmSpan(c *Controller, ns *namespace, e *nvme.SQE) ([]byte, completion, bool) {
	off := uint64(e.CDW10) | uint64(e.CDW11)<<32
	n := uint64(e.CDW12)
	if n == 0 || n&3 != 0 || off&3 != 0 {
		return nil, failDNR(nvme.ErrInvalidField), false
	}
	size := ns.slmSize()
	if off > size || n > size-off {
		return nil, failDNR(nvme.ErrLBAOutOfRange), false
	}
	return c.slmMem(ns)[off : off+n], ok(), true
}

func slmRead(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion {
	m, st, good := slmSpan(c, ns, e)
	if !good {
		return st
	}
	if !c.checkMDTS(uint64(len(m))) {
		return failDNR(nvme.ErrInvalidField)
	}
	return completion{status: c.writeHostQ(&s.st.counters, e, m)}
}

func slmWrite(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion {
	m, st, good := slmSpan(c, ns, e)
	if !good {
		return st
	}
	if !c.checkMDTS(uint64(len(m))) {
		return failDNR(nvme.ErrInvalidField)
	}
	return completion{status: c.readHostQ(&s.st.counters, e, m)}
}

func slmFill(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion {
	m, st, good := slmSpan(c, ns, e)
	if !good {
		return st
	}
	for i := 0; i < len(m); i += 4 {
		le.PutUint32(m[i:], e.CDW13)
	}
	return ok()
}

// slmCopy is Memory Copy with descriptor format 2h: LBA ranges of NVM
// namespaces, in order, to consecutive SLM bytes from CDW10-11. A range of
// this controller's own namespace (SCNTLID 0 or this controller's ID) is
// read internally; a range of another controller's namespace is a peer
// transfer: that controller executes a Read whose DMA lands in this
// controller's memory through the bus (peer.go). Only controllers of this
// controller's NVM subsystem are reachable.
//
// On a DeviceCore controller the copy runs on the queue's own copy engine
// (cp.go), so that the copies of several queues proceed in parallel, beside
// the compute cores, and the device core goes on fetching commands.
func slmCopy(c *Controller, s *sq, ns *namespace, e *nvme.SQE) completion {
	if c.cfg.Mode == DeviceCore {
		return c.compute().dispatch(c, s, e, jobCopy)
	}
	return c.memCopy(s, e, s.scratch, true)
}

// memCopyOnCore executes a Memory Copy on the queue's copy engine, with the
// descriptors in the job's own buffer. The engine is the only executor of
// the queue's Memory Copies, so the queue's peer queues and PRP list page
// are its own; it takes the queue's CQ lock only to hold a command or apply
// fault rules, which the device core does for the queue's other commands.
func (c *Controller) memCopyOnCore(j *execJob) completion {
	if cap(j.desc) < 256*nvme.MemCopySourceSize {
		j.desc = make([]byte, 256*nvme.MemCopySourceSize)
	}
	return c.memCopy(j.sq, &j.e, j.desc, false)
}

// memCopy executes Memory Copy e of queue s with scratch, room for its
// descriptors; locked says whether the caller holds s.cq.mu.
func (c *Controller) memCopy(s *sq, e *nvme.SQE, scratch []byte, locked bool) completion {
	lock := func() {
		if !locked {
			s.cq.mu.Lock()
		}
	}
	unlock := func() {
		if !locked {
			s.cq.mu.Unlock()
		}
	}
	if e.NSID == 0 || int(e.NSID) > len(c.namespaces) {
		return failDNR(nvme.ErrInvalidNamespace)
	}
	ns := c.namespaces[e.NSID-1]
	dst := uint64(e.CDW10) | uint64(e.CDW11)<<32
	nr := int(e.CDW12&0xff) + 1
	if e.CDW12>>8&0xf != nvme.MemCopyFormatLBA || dst&3 != 0 {
		return failDNR(nvme.ErrInvalidField)
	}
	desc := scratch[:nr*nvme.MemCopySourceSize]
	if st := c.readHostQ(&s.st.counters, e, desc); st != stOK {
		return completion{status: st}
	}
	type src struct {
		c   *Controller
		ns  *namespace
		d   nvme.MemCopySource
		len uint64
	}
	var srcs [256]src
	var total uint64
	for i := 0; i < nr; i++ {
		d := parseMemCopySource(desc[i*nvme.MemCopySourceSize:])
		sc := c
		if d.Controller != 0 && d.Controller != uint16(c.index+1) {
			var why string
			if sc, why = c.bus.peerOf(c, d.Controller); sc == nil {
				c.compute().logf("memory copy: source %d names controller %#x: %s", i, d.Controller, why)
				return failDNR(nvme.ErrMemoryUnreachable)
			}
		}
		if d.NSID == 0 || int(d.NSID) > len(sc.namespaces) || sc.namespaces[d.NSID-1].csi != nvme.CSINVM {
			return failDNR(nvme.ErrInvalidNamespace)
		}
		sns := sc.namespaces[d.NSID-1]
		if d.Blocks == 0 || d.LBA >= sns.blocks || uint64(d.Blocks) > sns.blocks-d.LBA {
			return failDNR(nvme.ErrLBAOutOfRange)
		}
		n := uint64(d.Blocks) << sns.shift
		srcs[i] = src{sc, sns, d, n}
		total += n
	}
	size := ns.slmSize()
	if dst > size || total > size-dst {
		return failDNR(nvme.ErrCapacityExceeded)
	}
	mem := c.slmMem(ns)
	off := dst
	for i := 0; i < nr; i++ {
		x := &srcs[i]
		if x.c != c {
			if ns.slmIOVA == 0 {
				return fail(nvme.ErrMemoryUnreachable) // the memory could not be mapped on the bus
			}
			r := c.peerRead(s, x.c, x.d.NSID, x.d.LBA, uint64(x.d.Blocks), ns.slmIOVA+off, e.CID)
			if r.noPost {
				// The source dropped the Read: the Memory Copy waits for
				// it forever, and an Abort finds it here.
				lock()
				s.held = append(s.held, heldCmd{cid: e.CID})
				unlock()
				return r
			}
			if r.status != 0 {
				return r
			}
			off += x.len
			continue
		}
		// The controller's own namespace: its fault rules apply to the
		// internal read as to a host Read of the same blocks.
		if rules := c.faults.Load(); rules != nil && len(*rules) > 0 {
			rd := nvme.SQE{OPC: nvme.OpRead, CID: e.CID, NSID: x.d.NSID, CDW10: uint32(x.d.LBA), CDW11: uint32(x.d.LBA >> 32), CDW12: x.d.Blocks - 1}
			lock()
			r, done := c.applyFaults(*rules, s, &rd)
			unlock()
			if done {
				return r
			}
		}
		if !x.ns.null {
			if x.ns.store.readAt(mem[off:off+x.len], int64(x.d.LBA<<x.ns.shift)) != nil {
				return fail(nvme.ErrUnrecoveredRead)
			}
		}
		s.st.unitsRead.Add(x.len)
		off += x.len
	}
	return ok()
}
