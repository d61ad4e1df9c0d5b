package nvme

import (
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pkg/errors"
)

// Completer receives the completion of a command submitted on a QueuePair.
// Complete runs on the queue pair's goroutine, inside Process, exactly once per
// submitted command. result is CQE DW0 | DW1<<32 of the (last) completion;
// err is nil, a StatusError, or wraps ErrTimeout, ErrAborted, ErrReset,
// ErrControllerFatal or ErrClosed. Implement it on a long-lived (pooled)
// object: passing a pointer as a Completer does not allocate.
type Completer interface {
	Complete(tag uint64, result uint64, err error)
}

// CompleterFunc adapts a function to Completer. Create it once, not per I/O.
type CompleterFunc func(tag uint64, result uint64, err error)

// Complete calls f.
func (f CompleterFunc) Complete(tag uint64, result uint64, err error) { f(tag, result, err) }

// Range is a run of logical blocks (Dataset Management, Copy sources).
type Range struct {
	LBA    uint64
	Blocks uint32
}

// QueueStats counts events on one queue pair.
type QueueStats struct {
	Submitted      uint64 // commands written to the SQ (after splitting)
	Completed      uint64 // completions reaped
	BadCompletions uint64 // CQEs with an unknown or idle CID or a foreign SQID
	Timeouts       uint64 // commands that exceeded the I/O timeout
	Aborts         uint64 // Abort commands the controller honoured
	Resets         uint64 // controller resets this queue pair recovered from
}

type slot struct {
	cb       Completer
	tag      uint64
	err      error
	result   uint64
	scan     uint64 // q.scans when the command was submitted
	deadline int64  // once timed out: when the abort must have ended it
	parent   uint16
	pending  uint16
	page     int16 // PRP/data page index or -1
	busy     bool
	timedOut bool
	aborting bool // timed out, Abort not yet sent
}

// QueuePair is an I/O submission/completion queue pair. It belongs to one
// goroutine (one core): none of its methods may be called concurrently.
// Submissions are written to the SQ at once and the doorbell is written once
// per batch, by Ring or at the start of Process. Submitting never blocks: a
// full queue returns ErrQueueFull.
//
// Everything a queue pair writes per command lives in the QueuePair, its
// slots and its own DMA memory; the pads keep the QueuePair off the cache
// lines of whatever the allocator puts next to it (such as another core's
// queue pair).
type QueuePair struct {
	_      [linePad]byte
	c      *Controller
	qid    uint16
	depth  uint16
	sq, cq *DMA
	pages  *DMA
	sqBase unsafe.Pointer
	cqBase unsafe.Pointer

	tail, rung  uint16
	head        uint16
	phase       uint32
	sqDB, cqDB  uint32
	slots       []slot
	free        []uint16
	freePages   []int16
	gen         uint32
	broken      error
	closed      bool
	inProcess   bool
	timeout     int64
	scanEvery   int64
	now         int64 // the coarse clock: read by Process, not per command
	nextScan    int64
	scans       uint64          // timeout scans so far
	scanAt      [scanRing]int64 // scanAt[i%scanRing]: the time of scan i
	polls       uint32
	maxXfer     int
	stats       QueueStats
	failScratch []failed
	_           [linePad]byte
}

// linePad is two cache lines: x86 cores prefetch lines in 128-byte pairs.
const linePad = 128

// padded returns a slice of n elements with at least linePad unused bytes on
// either side, so that writing it never touches a cache line of a
// neighbouring allocation.
func padded[T any](n int) []T {
	_, s := paddedIn[T](n)
	return s
}

// paddedIn returns the whole allocation of padded and the slice of it.
func paddedIn[T any](n int) (all, s []T) {
	var zero T
	size := max(int(unsafe.Sizeof(zero)), 1)
	k := (linePad + size - 1) / size
	all = make([]T, n+2*k)
	return all, all[k : k+n : k+n]
}

type failed struct {
	cb  Completer
	tag uint64
	err error
}

var epoch = time.Now()

func nanotime() int64 { return int64(time.Since(epoch)) }

// scanRing is the number of timeout scans whose times a queue pair keeps:
// scans are at least scanEvery apart, and 15 of those span more than a
// timeout, so older scans are not needed to tell that a command expired.
const scanRing = 16

// maxPRPPages caps the PRP list pages preallocated per queue pair.
const maxPRPPages = 256

// NewQueuePair creates an I/O queue pair with depth entries (clamped to
// 2..CAP.MQES+1; depth-1 commands can be outstanding). The returned queue pair
// belongs to the calling goroutine.
func (c *Controller) NewQueuePair(depth int) (*QueuePair, error) {
	name := c.t.Name()
	depth = max(2, min(depth, c.maxQDepth, 65535))
	q := &QueuePair{c: c, depth: uint16(depth), phase: 1, maxXfer: c.maxXfer}
	c.qmu.Lock()
	for id := 1; id <= c.ioQueues; id++ {
		if _, used := c.qpairs[uint16(id)]; !used {
			q.qid = uint16(id)
			break
		}
	}
	if q.qid == 0 {
		c.qmu.Unlock()
		return nil, errors.Errorf("%s: all %d I/O queue pairs are in use", name, c.ioQueues)
	}
	c.qpairs[q.qid] = q
	c.qmu.Unlock()
	release := func() {
		c.qmu.Lock()
		delete(c.qpairs, q.qid)
		c.qmu.Unlock()
	}
	var err error
	npages := min(depth-1, maxPRPPages)
	if q.sq, err = c.t.AllocDMA(depth * SQESize); err == nil {
		if q.cq, err = c.t.AllocDMA(depth * CQESize); err == nil {
			if q.pages, err = c.t.AllocDMA(npages * PageSize); err != nil {
				c.t.FreeDMA(q.cq)
				c.t.FreeDMA(q.sq)
			}
		} else {
			c.t.FreeDMA(q.sq)
		}
	}
	if err != nil {
		release()
		return nil, errors.Wrapf(err, "%s: queue pair %d memory", name, q.qid)
	}
	q.sqBase = unsafe.Pointer(&q.sq.Buf[0])
	q.cqBase = unsafe.Pointer(&q.cq.Buf[0])
	q.sqDB = DoorbellOffset(q.qid, false, c.dstrd)
	q.cqDB = DoorbellOffset(q.qid, true, c.dstrd)
	q.slots = padded[slot](depth - 1)
	q.free = padded[uint16](depth - 1)[:0]
	for i := depth - 2; i >= 0; i-- {
		q.free = append(q.free, uint16(i))
		q.slots[i].page = -1
	}
	q.freePages = padded[int16](npages)[:0]
	for i := npages - 1; i >= 0; i-- {
		q.freePages = append(q.freePages, int16(i))
	}
	q.failScratch = make([]failed, 0, depth-1)
	q.timeout = int64(c.opts.IOTimeout)
	q.scanEvery = max(q.timeout/8, int64(time.Millisecond))
	q.now = nanotime()
	q.scanAt[0] = q.now // scan 0: no command is older

	c.adminMu.Lock()
	if err = c.recoverLocked(); err == nil {
		if s := c.state.Load(); s != stateOK {
			err = c.stateErr(s)
		} else {
			err = c.createQueues(q)
		}
	}
	q.gen = c.gen.Load()
	c.adminMu.Unlock()
	if err != nil {
		q.freeMem()
		release()
		return nil, err
	}
	return q, nil
}

func (q *QueuePair) freeMem() {
	q.c.t.FreeDMA(q.pages)
	q.c.t.FreeDMA(q.cq)
	q.c.t.FreeDMA(q.sq)
}

// ID returns the queue identifier.
func (q *QueuePair) ID() uint16 { return q.qid }

// Depth returns the number of queue entries.
func (q *QueuePair) Depth() int { return int(q.depth) }

// Controller returns the controller the queue pair belongs to.
func (q *QueuePair) Controller() *Controller { return q.c }

// Outstanding returns the number of command slots in use.
func (q *QueuePair) Outstanding() int { return len(q.slots) - len(q.free) }

// Processing reports whether Process is running on the queue pair, that
// is whether the caller is a Completer that Process called.
func (q *QueuePair) Processing() bool { return q.inProcess }

// Free returns the number of free command slots.
func (q *QueuePair) Free() int { return len(q.free) }

// Stats returns the queue pair's counters.
func (q *QueuePair) Stats() QueueStats { return q.stats }

var (
	errZeroBlocks = errors.New("nvme: zero blocks")
	errBuffer     = errors.New("nvme: buffer too small or misaligned (offset must be a multiple of 4)")
	errNilNS      = errors.New("nvme: nil or non-NVM namespace")
	errRanges     = errors.New("nvme: range count must be 1..128 (Copy) or 1..256 (Dataset Management)")
)

// ready checks the controller generation and the queue state before a
// submission.
func (q *QueuePair) ready() error {
	if q.closed {
		return ErrClosed
	}
	if q.gen != q.c.gen.Load() {
		q.recover()
	}
	return q.broken
}

// Read reads blocks logical blocks starting at lba of ns into buf.Buf[off:].
// Transfers over the controller's MDTS are split into several commands and
// complete once, with the first error.
func (q *QueuePair) Read(ns *Namespace, lba uint64, blocks uint32, buf *DMA, off int, cb Completer, tag uint64) error {
	return q.rw(OpRead, ns, lba, blocks, buf, off, 0, cb, tag)
}

// Write writes blocks logical blocks from buf.Buf[off:] to ns at lba.
func (q *QueuePair) Write(ns *Namespace, lba uint64, blocks uint32, buf *DMA, off int, cb Completer, tag uint64) error {
	return q.rw(OpWrite, ns, lba, blocks, buf, off, 0, cb, tag)
}

// WriteFUA is Write with Force Unit Access set.
func (q *QueuePair) WriteFUA(ns *Namespace, lba uint64, blocks uint32, buf *DMA, off int, cb Completer, tag uint64) error {
	return q.rw(OpWrite, ns, lba, blocks, buf, off, 1<<30, cb, tag)
}

func (q *QueuePair) rw(opc uint8, ns *Namespace, lba uint64, blocks uint32, buf *DMA, off int, cdw12 uint32, cb Completer, tag uint64) error {
	if q.gen != q.c.gen.Load() || q.broken != nil || q.closed {
		if err := q.ready(); err != nil {
			return err
		}
	}
	if ns == nil || ns.BlockSize == 0 {
		return errNilNS
	}
	if blocks == 0 {
		return errZeroBlocks
	}
	n := int(blocks) << ns.shift
	if buf == nil || off < 0 || off&3 != 0 || n > len(buf.Buf)-off {
		return errBuffer
	}
	maxb := min(q.maxXfer>>ns.shift, 65536)
	cmds := (int(blocks) + maxb - 1) / maxb
	iova := buf.IOVA + uint64(off)
	if cmds == 1 {
		// Fast path: one command; a PRP list page only if it spans > 2 pages.
		if len(q.free) == 0 || (n > PageSize && len(q.freePages) == 0) {
			return ErrQueueFull
		}
		cid := q.pop()
		s := &q.slots[cid]
		s.parent, s.pending, s.cb, s.tag, s.err, s.result = cid, 1, cb, tag, nil, 0
		e := q.nextSQE()
		e.setIO(opc, cid, ns.ID, lba, cdw12|(blocks-1), 0, 0)
		e.PRP1, e.PRP2 = q.prps(s, iova, n)
		return nil
	}
	if cmds > len(q.free) || cmds > len(q.freePages) {
		return ErrQueueFull
	}
	parent := q.free[len(q.free)-1]
	left := int(blocks)
	for i := 0; i < cmds; i++ {
		cid := q.pop()
		nb := min(left, maxb)
		s := &q.slots[cid]
		s.parent = parent
		prp1, prp2 := q.prps(s, iova, nb<<ns.shift)
		q.nextSQE().setIO(opc, cid, ns.ID, lba, cdw12|uint32(nb-1), prp1, prp2)
		lba += uint64(nb)
		iova += uint64(nb) << ns.shift
		left -= nb
	}
	p := &q.slots[parent]
	p.pending, p.cb, p.tag, p.err, p.result = uint16(cmds), cb, tag, nil, 0
	return nil
}

// ReadOne is Read for a caller that has already cut its transfers to
// MaxTransfer bytes and 65536 blocks, as the bdev layer does: it issues
// exactly one command, never splits and refuses a larger transfer. Its
// arguments fit the registers of Go's calling convention and it skips the
// split arithmetic, which makes it the cheaper call on a hot path.
func (q *QueuePair) ReadOne(ns *Namespace, lba uint64, blocks uint32, buf *DMA, off int, cb Completer, tag uint64) error {
	return q.one(ns, lba, uint64(blocks)|OpRead<<32, buf, off, cb, tag)
}

// WriteOne is Write under the rules of ReadOne.
func (q *QueuePair) WriteOne(ns *Namespace, lba uint64, blocks uint32, buf *DMA, off int, cb Completer, tag uint64) error {
	return q.one(ns, lba, uint64(blocks)|OpWrite<<32, buf, off, cb, tag)
}

var errOneTooBig = errors.New("nvme: transfer over MaxTransfer or 65536 blocks for a single command")

// one issues a single Read or Write command. op is the block count in its
// low 32 bits and the opcode above them: one word, so that all arguments
// fit the nine integer registers of the calling convention.
func (q *QueuePair) one(ns *Namespace, lba uint64, op uint64, buf *DMA, off int, cb Completer, tag uint64) error {
	if q.gen != q.c.gen.Load() || q.broken != nil || q.closed {
		if err := q.ready(); err != nil {
			return err
		}
	}
	if ns == nil || ns.BlockSize == 0 {
		return errNilNS
	}
	blocks := uint32(op)
	if blocks == 0 {
		return errZeroBlocks
	}
	n := int(blocks) << ns.shift
	if blocks > 65536 || n > q.maxXfer {
		return errOneTooBig
	}
	if buf == nil || off < 0 || off&3 != 0 || n > len(buf.Buf)-off {
		return errBuffer
	}
	if len(q.free) == 0 || (n > PageSize && len(q.freePages) == 0) {
		return ErrQueueFull
	}
	cid := q.pop()
	s := &q.slots[cid]
	s.parent, s.pending, s.cb, s.tag, s.err, s.result = cid, 1, cb, tag, nil, 0
	e := q.nextSQE()
	e.setIO(uint8(op>>32), cid, ns.ID, lba, blocks-1, 0, 0)
	e.PRP1, e.PRP2 = q.prps(s, buf.IOVA+uint64(off), n)
	return nil
}

// pop takes a free CID and marks its slot busy. It stamps the command with
// the number of timeout scans so far rather than a time: reading the clock
// per command would cost more than the rest of a submission (see
// checkTimeouts).
func (q *QueuePair) pop() uint16 {
	cid := q.free[len(q.free)-1]
	q.free = q.free[:len(q.free)-1]
	s := &q.slots[cid]
	s.busy, s.timedOut, s.aborting = true, false, false
	s.scan = q.scans
	s.page = -1
	q.stats.Submitted++
	return cid
}

// setIO fills e for an NVM Read or Write where it lies, in the SQ: building
// the entry elsewhere and copying it costs twice the stores. (The single
// command paths pass zero data pointers and set them after the call, which
// keeps fewer values live across prps.)
func (e *SQE) setIO(opc uint8, cid uint16, nsid uint32, lba uint64, cdw12 uint32, prp1, prp2 uint64) {
	*e = SQE{}
	e.OPC, e.CID, e.NSID = opc, cid, nsid
	e.PRP1, e.PRP2 = prp1, prp2
	e.CDW10, e.CDW11, e.CDW12 = uint32(lba), uint32(lba>>32), cdw12
}

// nextSQE returns the SQ slot at the tail and advances the tail.
func (q *QueuePair) nextSQE() *SQE {
	e := (*SQE)(unsafe.Add(q.sqBase, uintptr(q.tail)*SQESize))
	q.tail++
	if q.tail == q.depth {
		q.tail = 0
	}
	return e
}

// prps returns PRP1 and PRP2 for n bytes at iova, filling a PRP list page
// for the slot when the transfer spans more than two memory pages.
func (q *QueuePair) prps(s *slot, iova uint64, n int) (uint64, uint64) {
	first := PageSize - int(iova&(PageSize-1))
	if n <= first {
		return iova, 0
	}
	next := iova + uint64(first)
	rest := n - first
	if rest <= PageSize {
		return iova, next
	}
	pg := q.freePages[len(q.freePages)-1]
	q.freePages = q.freePages[:len(q.freePages)-1]
	s.page = pg
	list := q.pages.Buf[int(pg)*PageSize : int(pg+1)*PageSize]
	pages := (rest + PageSize - 1) / PageSize
	for i := 0; i < pages; i++ {
		le.PutUint64(list[8*i:], next+uint64(i)*PageSize)
	}
	return iova, q.pages.IOVA + uint64(pg)*PageSize
}

// dataPage takes a free page for command data (DSM or Copy ranges).
func (q *QueuePair) dataPage(s *slot) ([]byte, uint64) {
	pg := q.freePages[len(q.freePages)-1]
	q.freePages = q.freePages[:len(q.freePages)-1]
	s.page = pg
	return q.pages.Buf[int(pg)*PageSize : int(pg+1)*PageSize], q.pages.IOVA + uint64(pg)*PageSize
}

// single reserves one slot and SQ entry for a command without split.
func (q *QueuePair) single(needPage bool, cb Completer, tag uint64) (*slot, *SQE, uint16, error) {
	if err := q.ready(); err != nil {
		return nil, nil, 0, err
	}
	if len(q.free) == 0 || (needPage && len(q.freePages) == 0) {
		return nil, nil, 0, ErrQueueFull
	}
	cid := q.pop()
	s := &q.slots[cid]
	s.parent, s.pending, s.cb, s.tag, s.err, s.result = cid, 1, cb, tag, nil, 0
	return s, q.nextSQE(), cid, nil
}

// Flush commits volatile write cache contents of ns to media.
func (q *QueuePair) Flush(ns *Namespace, cb Completer, tag uint64) error {
	if ns == nil {
		return errNilNS
	}
	_, e, cid, err := q.single(false, cb, tag)
	if err != nil {
		return err
	}
	*e = SQE{OPC: OpFlush, CID: cid, NSID: ns.ID}
	return nil
}

// WriteZeroes zeroes blocks (1..65536) logical blocks of ns at lba. With
// deallocate the controller may deallocate them instead.
func (q *QueuePair) WriteZeroes(ns *Namespace, lba uint64, blocks uint32, deallocate bool, cb Completer, tag uint64) error {
	if ns == nil || ns.BlockSize == 0 {
		return errNilNS
	}
	if blocks == 0 || blocks > 65536 {
		return errors.Errorf("nvme: write zeroes of %d blocks: must be 1..65536", blocks)
	}
	if !q.c.Supports(OpWriteZeroes) {
		return errors.Wrapf(ErrNotSupported, "%s: write zeroes", q.c.t.Name())
	}
	_, e, cid, err := q.single(false, cb, tag)
	if err != nil {
		return err
	}
	cdw12 := blocks - 1
	if deallocate {
		cdw12 |= 1 << 25
	}
	*e = SQE{OPC: OpWriteZeroes, CID: cid, NSID: ns.ID, CDW10: uint32(lba), CDW11: uint32(lba >> 32), CDW12: cdw12}
	return nil
}

// Deallocate issues Dataset Management with the Deallocate attribute for up to
// 256 ranges. Reads of deallocated blocks return what the namespace's
// DLFEAT says (zeroes on the mock).
func (q *QueuePair) Deallocate(ns *Namespace, ranges []Range, cb Completer, tag uint64) error {
	if ns == nil || ns.BlockSize == 0 {
		return errNilNS
	}
	if len(ranges) == 0 || len(ranges) > 256 {
		return errRanges
	}
	if !q.c.Supports(OpDSM) {
		return errors.Wrapf(ErrNotSupported, "%s: dataset management", q.c.t.Name())
	}
	s, e, cid, err := q.single(true, cb, tag)
	if err != nil {
		return err
	}
	page, iova := q.dataPage(s)
	for i, r := range ranges {
		b := page[i*DSMRangeSize:]
		le.PutUint32(b[0:], 0)
		le.PutUint32(b[4:], r.Blocks)
		le.PutUint64(b[8:], r.LBA)
	}
	*e = SQE{OPC: OpDSM, CID: cid, NSID: ns.ID, PRP1: iova, CDW10: uint32(len(ranges) - 1), CDW11: 1 << 2}
	return nil
}

// Copy copies the source ranges (each 1..65536 blocks, at most 128 ranges) of
// ns to consecutive blocks starting at dst (NVM Copy, descriptor format 0).
// The controller enforces MSSRL, MCL and MSRC.
func (q *QueuePair) Copy(ns *Namespace, dst uint64, src []Range, cb Completer, tag uint64) error {
	if ns == nil || ns.BlockSize == 0 {
		return errNilNS
	}
	if len(src) == 0 || len(src) > PageSize/CopyRangeSize {
		return errRanges
	}
	if !q.c.Supports(OpCopy) {
		return errors.Wrapf(ErrNotSupported, "%s: copy", q.c.t.Name())
	}
	for _, r := range src {
		if r.Blocks == 0 || r.Blocks > 65536 {
			return errors.Errorf("nvme: copy source range of %d blocks: must be 1..65536", r.Blocks)
		}
	}
	s, e, cid, err := q.single(true, cb, tag)
	if err != nil {
		return err
	}
	page, iova := q.dataPage(s)
	for i, r := range src {
		b := page[i*CopyRangeSize : (i+1)*CopyRangeSize]
		clear(b)
		le.PutUint64(b[8:], r.LBA)
		le.PutUint16(b[16:], uint16(r.Blocks-1))
	}
	*e = SQE{OPC: OpCopy, CID: cid, NSID: ns.ID, PRP1: iova, CDW10: uint32(dst), CDW11: uint32(dst >> 32), CDW12: uint32(len(src) - 1)}
	return nil
}

// Submit submits a raw command (for command sets the driver does not wrap).
// The driver sets CID and, when buf is not nil, PRP1/PRP2 for n bytes at
// buf.Buf[off:] (n must not exceed MaxTransfer). Other fields are sent as given.
func (q *QueuePair) Submit(cmd *SQE, buf *DMA, off, n int, cb Completer, tag uint64) error {
	if buf != nil && (off < 0 || off&3 != 0 || n <= 0 || n > len(buf.Buf)-off || n > q.maxXfer) {
		return errBuffer
	}
	needPage := buf != nil && n > 2*PageSize-int(buf.IOVAAt(off)&(PageSize-1))
	s, e, cid, err := q.single(needPage, cb, tag)
	if err != nil {
		return err
	}
	*e = *cmd
	e.CID = cid
	if buf != nil {
		e.PRP1, e.PRP2 = q.prps(s, buf.IOVA+uint64(off), n)
	}
	return nil
}

// release frees a slot and its page.
func (q *QueuePair) release(cid uint16) {
	s := &q.slots[cid]
	if s.page >= 0 {
		q.freePages = append(q.freePages, s.page)
		s.page = -1
	}
	s.busy = false
	s.cb = nil
	q.free = append(q.free, cid)
}

// Ring writes the SQ tail doorbell if commands were submitted since the last
// ring. Process rings too, so calling Ring is needed only to start commands
// early.
func (q *QueuePair) Ring() {
	if q.tail != q.rung {
		q.rung = q.tail
		q.c.t.Write32(q.sqDB, uint32(q.tail))
	}
}

// Process rings the doorbell for pending submissions, then reaps up to max
// completions (all available if max <= 0), calling each command's Completer,
// writes the CQ head doorbell once, and checks command timeouts. It returns
// the number of completions reaped. It never blocks on the device; on a
// timeout it aborts and, if needed, resets the controller (bounded by the
// admin and ready timeouts).
func (q *QueuePair) Process(max int) int {
	if q.inProcess || q.closed {
		return 0
	}
	if q.gen != q.c.gen.Load() {
		q.recover()
	}
	q.inProcess = true
	q.Ring()
	n := 0
	for max <= 0 || n < max {
		p := unsafe.Add(q.cqBase, uintptr(q.head)*CQESize)
		dw3 := atomic.LoadUint32((*uint32)(unsafe.Add(p, 12)))
		if dw3>>16&1 != q.phase {
			break
		}
		e := (*CQE)(p)
		dw0, dw1, sqid := e.DW0, e.DW1, e.SQID
		q.head++
		if q.head == q.depth {
			q.head = 0
			q.phase ^= 1
		}
		n++
		q.complete(uint16(dw3), sqid, uint16(dw3>>16), dw0, dw1)
		if q.closed {
			return n // a callback closed the queue pair
		}
	}
	if n > 0 {
		q.c.t.Write32(q.cqDB, uint32(q.head))
		q.stats.Completed += uint64(n)
	}
	q.polls++
	if n == 0 || q.polls&15 == 0 {
		q.now = nanotime()
		if q.now >= q.nextScan {
			q.checkTimeouts()
		}
	}
	q.inProcess = false
	return n
}

func (q *QueuePair) complete(cid, sqid, status uint16, dw0, dw1 uint32) {
	if int(cid) >= len(q.slots) || !q.slots[cid].busy || sqid != q.qid {
		q.stats.BadCompletions++
		return
	}
	s := &q.slots[cid]
	s.busy = false
	if s.page >= 0 {
		q.freePages = append(q.freePages, s.page)
		s.page = -1
	}
	pi := s.parent
	p := &q.slots[pi]
	if status>>1 != 0 || s.timedOut {
		if err := completionErr(status, s.timedOut); err != nil && p.err == nil {
			p.err = err
		}
	}
	p.result = uint64(dw0) | uint64(dw1)<<32
	if cid != pi {
		q.free = append(q.free, cid)
	}
	p.pending--
	if p.pending == 0 {
		cb, tag, err, res := p.cb, p.tag, p.err, p.result
		p.cb, p.err = nil, nil
		q.free = append(q.free, pi)
		if cb != nil {
			cb.Complete(tag, res, err)
		}
	}
}

func completionErr(status uint16, timedOut bool) error {
	err := StatusFromField(status)
	if !timedOut {
		return err
	}
	if err == nil {
		return nil // completed late, but successfully
	}
	if errors.Is(err, ErrAbortRequested) {
		return abortedTimeout{}
	}
	return err
}

// abortedTimeout is the error of a command that timed out and was then
// aborted: it matches both ErrTimeout and ErrAborted.
type abortedTimeout struct{}

// Error describes the outcome.
func (abortedTimeout) Error() string { return "nvme: command timed out and was aborted" }

// Is matches ErrTimeout and ErrAborted.
func (abortedTimeout) Is(target error) bool { return target == ErrTimeout || target == ErrAborted }

// Drain calls Process until no command is outstanding or timeout passes; it
// returns an error naming the number of commands still outstanding.
func (q *QueuePair) Drain(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for i := 0; q.Outstanding() > 0 || q.tail != q.rung; i++ {
		if q.Process(0) == 0 && i&255 == 255 {
			if time.Now().After(deadline) {
				return errors.Errorf("%s: queue %d: %d commands still outstanding after %v", q.c.t.Name(), q.qid, q.Outstanding(), timeout)
			}
			time.Sleep(10 * time.Microsecond)
		}
		if q.closed {
			return nil
		}
	}
	return nil
}
