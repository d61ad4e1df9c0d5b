package mock

import (
	"math/rand/v2"

	"github.com/bpfblk/bpfblk/nvme"
)

// Peer transfers: a controller that needs the data of another controller
// of its NVM subsystem (a compute controller's Memory Copy from a data
// namespace) acts as a peer initiator, as a computational storage device
// doing peer-to-peer DMA does. It submits a Read on a peer queue of the
// source controller whose PRPs point at its own memory's bus address; the
// source controller executes the Read like any other, and its DMA crosses
// the bus (translated by the IOMMU, counted as peer memory traffic) into
// the initiator's memory. Nothing reads another controller's backing store.
//
// Every initiator queue has its own peer queue on each source controller it
// reads from: the source counts the peer queue's DMA, reads and faults on
// the peer queue's own cache lines, and Bus.Stats and the source's SMART
// log sum them with its other queues.

// peerQID is the queue ID of peer queues in fault matching and error log
// entries: outside the host's queue IDs (at most 1024).
const peerQID = 0xfffe

// peerMaxPages bounds one peer Read: its PRP list is one page.
const peerMaxPages = 128

// peerQueue is a queue of a source controller on which one initiator
// queue (controller owner, QID qid) of a peer has it execute commands. Only
// the executor of the initiator queue's Memory Copies uses it (on a
// DeviceCore controller, the queue's copy engine; else the queue's executor,
// under its CQ's lock).
type peerQueue struct {
	owner *Controller
	qid   uint16
	s     sq
	st    queueCounters
}

// peerLink is what an initiator queue keeps to read from one source
// controller: the source's peer queue for it.
type peerLink struct {
	src *Controller
	pq  *peerQueue
}

// subsystem returns the NQN of c's NVM subsystem.
func (c *Controller) subsystem() string { return c.nqn }

// subsystemNQN is the NQN of the NVM subsystem of a controller of cfg.
func subsystemNQN(cfg *Config) string {
	if cfg.Subsystem != "" {
		return cfg.Subsystem
	}
	return "nqn.2026-01.io.bpfblk:mock:" + cfg.Serial
}

// peerQueueFor returns the peer queue on c for initiator queue s, making
// it on first use (copy-on-write: the table is read without a lock).
func (c *Controller) peerQueueFor(s *sq) *peerQueue {
	for i := range s.peers {
		if s.peers[i].src == c {
			return s.peers[i].pq
		}
	}
	owner := s.owner
	c.peerMu.Lock()
	defer c.peerMu.Unlock()
	old := c.peerQueues()
	for _, pq := range old {
		// The initiator's queue of this QID was deleted and made again:
		// it takes over its predecessor's peer queue.
		if pq.owner == owner && pq.qid == s.id {
			s.peers = append(s.peers, peerLink{src: c, pq: pq})
			return pq
		}
	}
	pq := &peerQueue{owner: owner, qid: s.id}
	// Its own random source (for probabilistic fault rules): the
	// initiator's belongs to whoever executes the initiator queue's other
	// commands.
	rng := rand.New(rand.NewPCG(owner.cfg.Seed, 1<<40|uint64(owner.index)<<16|uint64(s.id)))
	pq.s = sq{id: peerQID, rng: rng, st: &pq.st}
	n := make([]*peerQueue, len(old), len(old)+1)
	copy(n, old)
	n = append(n, pq)
	c.peerQs.Store(&n)
	s.peers = append(s.peers, peerLink{src: c, pq: pq})
	return pq
}

// peerQueues returns the peer queues other controllers made on c.
func (c *Controller) peerQueues() []*peerQueue {
	if l := c.peerQs.Load(); l != nil {
		return *l
	}
	return nil
}

// prpPage is a page of a controller's own memory on the bus that one of
// its queues builds the PRP lists of its peer Reads in.
type prpPage struct {
	buf  []byte
	iova uint64
}

// peerList returns the PRP list page of initiator queue s, in c's memory
// and mapped on the bus, making it on first use. Only the executor of the
// queue's QID uses the page.
func (c *Controller) peerList(s *sq) ([]byte, uint64, bool) {
	p := &c.prpPages[s.id]
	if p.buf != nil {
		return p.buf, p.iova, true
	}
	buf := alignedAlloc(pageSize)
	iova, err := c.bus.Map(buf, PeerMemory)
	if err != nil {
		return nil, 0, false
	}
	c.dmaMu.Lock()
	c.internal = append(c.internal, iova)
	c.dmaMu.Unlock()
	p.buf, p.iova = buf, iova
	return buf, iova, true
}

// peerRead has source controller src read blocks [lba, lba+blocks) of its
// namespace nsid into c's memory at bus address dst, on src's peer queue
// for s, in Reads of at most peerMaxPages pages (and src's MDTS). It
// returns the status of the first Read that fails.
func (c *Controller) peerRead(s *sq, src *Controller, nsid uint32, lba, blocks uint64, dst uint64, cid uint16) completion {
	pq := src.peerQueueFor(s)
	list, listIOVA, okList := c.peerList(s)
	if !okList {
		return fail(nvme.ErrDataTransfer)
	}
	ns := src.namespaces[nsid-1]
	maxBytes := uint64(peerMaxPages * pageSize)
	if src.mdts != 0 {
		maxBytes = min(maxBytes, uint64(pageSize)<<src.mdts)
	}
	maxBlocks := min(maxBytes>>ns.shift, 65536)
	for blocks > 0 {
		n := min(blocks, maxBlocks)
		bytes := n << ns.shift
		rd := nvme.SQE{OPC: nvme.OpRead, CID: cid, NSID: nsid, CDW10: uint32(lba), CDW11: uint32(lba >> 32), CDW12: uint32(n - 1)}
		rd.PRP1 = dst
		first := uint64(pageSize) - dst&(pageSize-1)
		switch {
		case bytes <= first:
		case bytes <= first+pageSize:
			rd.PRP2 = dst + first
		default:
			k := 0
			for off := first; off < bytes; off += pageSize {
				le.PutUint64(list[8*k:], dst+off)
				k++
			}
			rd.PRP2 = listIOVA
		}
		pq.s.cur = rd
		if r := src.peerExecute(&pq.s, &pq.s.cur); r.status != 0 || r.noPost {
			return r
		}
		lba, blocks, dst = lba+n, blocks-n, dst+bytes
	}
	return ok()
}

// peerExecute executes a command of a peer queue on c: fault rules apply
// as to a host command, then the command set's handler runs.
func (c *Controller) peerExecute(s *sq, e *nvme.SQE) completion {
	if c.closed.Load() || c.hung.Load() || c.csts.Load()&(nvme.CSTSReady|nvme.CSTSFatal) != nvme.CSTSReady {
		return fail(nvme.ErrMemoryUnreachable)
	}
	if rules := c.faults.Load(); rules != nil && len(*rules) > 0 {
		if r, done := c.applyFaults(*rules, s, e); done {
			if r.noPost {
				// A dropped (or lost, or fatal) peer Read never
				// completes: the initiator holds its own command instead
				// (slmCopy), where an Abort finds it.
				s.held = s.held[:0]
				return r
			}
			c.noteError(s, e, r)
			return r
		}
	}
	r := c.io(s, e)
	if r.status != 0 {
		c.noteError(s, e, r)
	}
	return r
}
