package nvme

import (
	"sync/atomic"
	"unsafe"

	"github.com/pkg/errors"
)

// checkTimeouts runs from Process at most every scanEvery: it checks the
// controller status (whether or not commands are outstanding) and the age of
// every outstanding command. A command
// that has been outstanding for the I/O timeout is aborted; one that is
// still outstanding a timeout after the abort (or whose abort fails) makes
// the driver reset the controller.
//
// A command's age counts from the first scan after its submission, whose
// time the queue pair keeps: the command was submitted before it, so a
// command never times out early, however stale the coarse clock was when
// it was submitted, and at most two scan intervals late (a quarter of the
// timeout) while Process runs.
func (q *QueuePair) checkTimeouts() {
	q.nextScan = q.now + q.scanEvery
	q.scans++
	q.scanAt[q.scans%scanRing] = q.now
	c := q.c
	// The status is checked even when the queue is idle: a controller that
	// failed while nothing was outstanding is reset now, not on the first
	// command that then times out.
	if _, fatal := c.fatalStatus(); fatal && c.state.Load() == stateOK {
		q.resetController()
		return
	}
	if q.Outstanding() == 0 {
		return
	}
	needReset := false
	// First mark every expired command, so that all of them report
	// ErrTimeout even if a reset follows; then abort them one by one.
	first := len(q.slots)
	for i := range q.slots {
		s := &q.slots[i]
		if !s.busy {
			continue
		}
		if s.timedOut {
			needReset = needReset || q.now >= s.deadline
			continue
		}
		if q.now < q.scanTime(s.scan+1)+q.timeout {
			continue
		}
		s.timedOut = true
		s.aborting = true
		s.deadline = q.now + q.timeout
		q.stats.Timeouts++
		first = min(first, i)
	}
	for i := first; i < len(q.slots) && !needReset; i++ {
		s := &q.slots[i]
		if !s.aborting {
			continue
		}
		s.aborting = false
		aborted, err := c.abort(q.qid, uint16(i))
		if err != nil {
			needReset = true
			break
		}
		if aborted {
			q.stats.Aborts++
		}
	}
	if needReset {
		q.resetController()
	}
}

// scanTime returns the time of scan i, or that of the oldest scan kept if
// i is older. That is later than scan i, but the oldest kept is 15 scan
// intervals (more than a timeout) old, so the command is found expired
// all the same.
func (q *QueuePair) scanTime(i uint64) int64 {
	if i > q.scans {
		return q.now
	}
	if q.scans-i >= scanRing {
		i = q.scans - scanRing + 1
	}
	return q.scanAt[i%scanRing]
}

// resetController resets the controller unless another queue pair already did
// since this one last recovered, then recovers this queue pair.
func (q *QueuePair) resetController() {
	c := q.c
	c.adminMu.Lock()
	if c.gen.Load() == q.gen && c.state.Load() != stateClosed {
		c.resetLocked()
	}
	c.adminMu.Unlock()
	q.recover()
}

// recover runs on the owning goroutine after a controller reset: it resets the
// rings, recreates the queues on the controller and completes every
// outstanding command with an error, exactly once.
func (q *QueuePair) recover() {
	c := q.c
	c.adminMu.Lock()
	gen := c.gen.Load()
	st := c.state.Load()
	q.resetRings()
	var err error
	switch {
	case q.closed:
	case st == stateOK:
		err = c.createQueues(q)
	default:
		err = c.stateErr(st)
	}
	c.adminMu.Unlock()
	if gen != q.gen {
		q.stats.Resets++
	}
	q.gen = gen
	q.broken = err
	reason := ErrReset
	if st == stateFatal {
		reason = ErrControllerFatal
	} else if err != nil {
		reason = ErrControllerFatal
		q.broken = errors.Wrap(ErrControllerFatal, err.Error())
	}
	q.failAll(reason)
}

func (q *QueuePair) resetRings() {
	clear(q.sq.Buf)
	for i := 0; i+4 <= len(q.cq.Buf); i += 4 {
		atomic.StoreUint32((*uint32)(unsafe.Pointer(&q.cq.Buf[i])), 0)
	}
	q.tail, q.rung, q.head, q.phase = 0, 0, 0, 1
}

// failAll completes every outstanding command with reason (ErrTimeout for
// those that had timed out) and frees all slots.
func (q *QueuePair) failAll(reason error) {
	out := q.failScratch[:0]
	for i := range q.slots {
		if s := &q.slots[i]; s.busy && s.timedOut {
			q.slots[s.parent].timedOut = true
		}
	}
	for i := range q.slots {
		s := &q.slots[i]
		if int(s.parent) != i || s.pending == 0 {
			continue
		}
		err := s.err
		switch {
		case s.timedOut:
			err = errors.Wrapf(ErrTimeout, "%s: queue %d", q.c.t.Name(), q.qid)
		case err == nil:
			err = errors.Wrapf(reason, "%s: queue %d", q.c.t.Name(), q.qid)
		}
		out = append(out, failed{s.cb, s.tag, err})
	}
	q.free = q.free[:0]
	q.freePages = q.freePages[:0]
	for i := len(q.slots) - 1; i >= 0; i-- {
		q.slots[i] = slot{page: -1}
		q.free = append(q.free, uint16(i))
	}
	for i := len(q.pages.Buf)/PageSize - 1; i >= 0; i-- {
		q.freePages = append(q.freePages, int16(i))
	}
	for _, f := range out {
		if f.cb != nil {
			f.cb.Complete(f.tag, 0, f.err)
		}
	}
	clear(out)
}

// Close deletes the queues on the controller, completes every outstanding
// command with ErrClosed and releases the queue pair's memory.
func (q *QueuePair) Close() error {
	if q.closed {
		return nil
	}
	c := q.c
	q.closed = true
	var err error
	c.adminMu.Lock()
	if c.state.Load() != stateFatal && c.gen.Load() == q.gen && q.broken == nil {
		err = c.deleteQueues(q)
	}
	c.adminMu.Unlock()
	q.failAll(ErrClosed)
	q.freeMem()
	c.qmu.Lock()
	delete(c.qpairs, q.qid)
	c.qmu.Unlock()
	return err
}
