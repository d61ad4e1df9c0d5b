package mock

import (
	"sync/atomic"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/pkg/errors"
)

// Fault describes a fault to inject into matching commands. A command matches
// when every set criterion matches. Randomness (Probability) comes from
// generators seeded with Config.Seed per queue, so a run is reproducible.
type Fault struct {
	// Admin matches admin commands instead of I/O commands.
	Admin bool
	// Opcodes restricts the fault to these opcodes (empty: any).
	Opcodes []uint8
	// NSID restricts the fault to one namespace (0: any).
	NSID uint32
	// LBA and Blocks restrict the fault to commands whose LBA range (Read,
	// Write, Write Zeroes) overlaps [LBA, LBA+Blocks). Blocks 0: any.
	LBA, Blocks uint64
	// Status completes the command with this status without executing it.
	Status nvme.StatusError
	// Drop consumes the command without executing or completing it; an
	// Abort still finds it (and completes it with Command Abort Requested).
	Drop bool
	// Lose is Drop, but an Abort does not find the command either: only a
	// controller reset ends it.
	Lose bool
	// Fatal makes the controller fail on the command: it sets CSTS.CFS and
	// the command is lost, as with Lose, until the host resets the
	// controller.
	Fatal bool
	// Delay executes the command after this added latency.
	Delay time.Duration
	// Probability of injecting into a matching command (0 means always).
	Probability float64
	// Count limits how many commands are hit (0: unlimited).
	Count int
}

// faultRule is an injected fault. The rule list is copy-on-write; a rule's
// hits are counted per queue (hits[QID], and a last entry for commands of
// other controllers' queues reaching this one). A rule with a Count is a
// budget shared by all queues: commands that match it take it with a
// compare-and-swap on left; unlimited rules and commands that match no rule
// write nothing shared.
type faultRule struct {
	f    Fault
	left atomic.Int64 // remaining hits; <0 = unlimited
	hits []ruleHits
}

// InjectFault adds a fault rule and returns a handle for Hits.
func (c *Controller) InjectFault(f Fault) *FaultHandle {
	r := &faultRule{f: f, hits: make([]ruleHits, len(c.qc)+1)}
	if f.Count > 0 {
		r.left.Store(int64(f.Count))
	} else {
		r.left.Store(-1)
	}
	c.ctl.Lock()
	var l []*faultRule
	if old := c.faults.Load(); old != nil {
		l = append(l, *old...)
	}
	l = append(l, r)
	c.faults.Store(&l)
	c.ctl.Unlock()
	return &FaultHandle{r}
}

// FaultHandle reports on an injected fault.
type FaultHandle struct{ r *faultRule }

// Hits returns how many commands the fault hit (summed over the queues).
func (h *FaultHandle) Hits() int {
	var n int64
	for i := range h.r.hits {
		n += h.r.hits[i].n.Load()
	}
	return int(n)
}

// ClearFaults removes all fault rules (held commands stay held).
func (c *Controller) ClearFaults() {
	c.ctl.Lock()
	c.faults.Store(nil)
	c.ctl.Unlock()
}

// SetFatal sets CSTS.CFS: the controller stops executing commands until the
// host resets it (CC.EN 1 -> 0).
func (c *Controller) SetFatal() {
	c.ctl.Lock()
	c.csts.Store(c.csts.Load() | nvme.CSTSFatal)
	c.ctl.Unlock()
}

// Hang makes the controller stop answering (on) or answer again (off): it
// ignores doorbells and CC writes and completes nothing, so CSTS.RDY never
// changes.
// When it answers again it catches up with a CC.EN change written meanwhile.
func (c *Controller) Hang(on bool) {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	c.hung.Store(on)
	if on {
		return
	}
	cc, csts := c.cc.Load(), c.csts.Load()
	switch {
	case cc&nvme.CCEnable == 0 && csts&nvme.CSTSReady != 0:
		c.disableLocked()
		c.csts.Store(0)
	case cc&nvme.CCEnable != 0 && csts&nvme.CSTSReady == 0:
		if c.enableLocked(cc) {
			c.csts.Store(nvme.CSTSReady)
		} else {
			c.csts.Store(nvme.CSTSFatal)
		}
	}
}

// PostCQE writes a raw completion into the CQ of queue qid as the device
// would, for testing how the host copes with a misbehaving device (unknown
// CID, duplicate completion). wrongPhase writes the entry with the previous
// phase tag, which a host must not consume, and does not advance the tail.
func (c *Controller) PostCQE(qid uint16, e nvme.CQE, wrongPhase bool) error {
	if int(qid) >= len(c.cqs) {
		return errors.Errorf("mock: %s: no CQ %d", c.name, qid)
	}
	if qid == 0 {
		c.ctl.Lock()
		defer c.ctl.Unlock()
	}
	q := c.cqs[qid].Load()
	if q == nil {
		return errors.Errorf("mock: %s: no CQ %d", c.name, qid)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.full() {
		return errors.Errorf("mock: %s: CQ %d is full", c.name, qid)
	}
	r := completion{dw0: e.DW0, dw1: e.DW1, status: e.Status &^ 1}
	if wrongPhase {
		tail, phase := q.tail, q.phase
		q.phase ^= 1
		q.post(e.SQID, e.SQHD, e.CID, r)
		q.tail, q.phase = tail, phase
		return nil
	}
	q.post(e.SQID, e.SQHD, e.CID, r)
	return nil
}

// Held returns how many commands of queue qid the device holds (dropped or
// lost by faults and not yet aborted).
func (c *Controller) Held(qid uint16) int {
	if int(qid) >= len(c.sqs) {
		return 0
	}
	s := c.sqs[qid].Load()
	if s == nil {
		return 0
	}
	s.cq.mu.Lock()
	defer s.cq.mu.Unlock()
	return len(s.held)
}

// matches reports whether the rule hits command e of queue s and, if so,
// counts the hit in hits[slot].
func (r *faultRule) matches(s *sq, slot int, e *nvme.SQE) bool {
	f := &r.f
	if f.Admin != (s.id == 0) {
		return false
	}
	if len(f.Opcodes) > 0 {
		hit := false
		for _, op := range f.Opcodes {
			if op == e.OPC {
				hit = true
				break
			}
		}
		if !hit {
			return false
		}
	}
	if f.NSID != 0 && e.NSID != f.NSID {
		return false
	}
	if f.Blocks != 0 {
		switch e.OPC {
		case nvme.OpRead, nvme.OpWrite, nvme.OpWriteZeroes:
		default:
			return false
		}
		slba := uint64(e.CDW10) | uint64(e.CDW11)<<32
		nlb := uint64(e.CDW12&0xffff) + 1
		if slba >= f.LBA+f.Blocks || f.LBA >= slba+nlb {
			return false
		}
	}
	if f.Probability > 0 && f.Probability < 1 && s.rng.Float64() >= f.Probability {
		return false
	}
	for {
		left := r.left.Load()
		if left == 0 {
			return false
		}
		if left < 0 || r.left.CompareAndSwap(left, left-1) {
			break
		}
	}
	r.hits[slot].n.Add(1)
	return true
}

// applyFaults applies the first matching rule. done reports that the command
// was handled (completed with r, or held when r.noPost).
// s may be a queue of another controller whose command reaches this one
// (Memory Copy from a peer): its hits and media errors are then counted in
// the slots for peers.
func (c *Controller) applyFaults(rules []*faultRule, s *sq, e *nvme.SQE) (r completion, done bool) {
	slot, st := len(c.qc), &c.peer.counters
	if int(s.id) < len(c.qc) && s.st == &c.qc[s.id] {
		slot, st = int(s.id), &s.st.counters
	}
	for _, rule := range rules {
		if !rule.matches(s, slot, e) {
			continue
		}
		f := &rule.f
		if f.Delay > 0 {
			time.Sleep(f.Delay)
		}
		switch {
		case f.Fatal:
			s.held = append(s.held, heldCmd{cid: e.CID, lost: true})
			c.csts.Or(nvme.CSTSFatal)
			return completion{noPost: true}, true
		case f.Drop || f.Lose:
			s.held = append(s.held, heldCmd{cid: e.CID, lost: f.Lose})
			return completion{noPost: true}, true
		case f.Status.SC != 0 || f.Status.SCT != 0:
			if f.Status.Is(nvme.ErrUnrecoveredRead) || f.Status.Is(nvme.ErrWriteFault) {
				st.mediaErrors.Add(1)
			}
			return completion{status: f.Status.Field()}, true
		}
		return completion{}, false
	}
	return completion{}, false
}
