package compute

import (
	"sync/atomic"
	"time"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/poller"
)

// The scan jobs. A host worker (scan.go) reads chunks through bdev channels
// and runs the program on its core; an offload job (offload.go) has a
// compute device copy, run and hand back the matches of each chunk. Both
// are a scanLoop on one reactor, with the steps in which they differ behind
// jobSteps.

// teardownTimeout bounds the wait for a job's I/Os in flight at teardown;
// the drivers time every command out well before that.
const teardownTimeout = 2 * time.Minute

// jobBase is what every scan job (host worker or offload job) shares with
// Scan: the match ring, the published progress and the counters read after
// the end.
type jobBase struct {
	r *poller.Reactor

	scanned, overflows, chunkCount uint64
	runNS                          int64
	faults                         []ChunkFault

	matches    *poller.SPSC[Match]
	finished   atomic.Bool
	cancel     atomic.Bool
	pubScanned atomic.Uint64
	done       chan struct{}
	// wake tells the collector that a ring filled or the job finished.
	wake chan struct{}
	// running is set once start registered the job's poller, and read by
	// the teardown after start returned.
	running bool
	// abandoned: the scan is being torn down; matches that did not fit in
	// the ring are dropped rather than waited for. Owned by the reactor.
	abandoned bool
}

// delivery is a run's values on their way to the job's ring.
type delivery struct {
	vals []uint64 // the values to deliver
	sent int      // values of vals in the ring already
}

// deliver pushes d's values, of a program of type typ that ran over a chunk
// of target (namespace nsid, blocks of bs bytes) at lba, to the ring; false
// if the ring filled first (then the collector is woken to empty it, and a
// later call goes on where this one stopped).
func (j *jobBase) deliver(d *delivery, typ abi.Type, target int, nsid uint32, lba, bs uint64) bool {
	for d.sent < len(d.vals) {
		v := d.vals[d.sent]
		m := Match{Target: target, NSID: nsid, LBA: v}
		if typ != abi.TypeFilter {
			// A scanner emits byte offsets into its chunk.
			m.LBA, m.Offset = lba+v/bs, uint32(v%bs)
		}
		if !j.matches.Push(m) {
			j.signal()
			return false
		}
		d.sent++
	}
	d.vals, d.sent = d.vals[:0], 0
	return true
}

// signal wakes the collector, if it is not woken already.
func (j *jobBase) signal() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// finish marks the job finished; on its reactor, once nothing is in flight.
func (j *jobBase) finish(p *poller.Poller) {
	p.Unregister()
	j.finished.Store(true)
	close(j.done)
	j.signal()
}

func (j *jobBase) base() *jobBase { return j }

// quiesce stops the job from taking more work and waits until it has
// nothing in flight; abandon runs on the job's reactor and makes it finish
// once its I/Os are in.
func (j *jobBase) quiesce(what string, abandon func()) error {
	if !j.running {
		return nil
	}
	j.cancel.Store(true)
	if err := j.r.Call(func() error { abandon(); return nil }); err != nil {
		return errors.Wrapf(err, "compute: stop %s on core %d", what, j.r.Core())
	}
	select {
	case <-j.done:
		return nil
	case <-time.After(teardownTimeout):
		return errors.Errorf("compute: %s on core %d still has I/O in flight after %v; its buffers are not freed", what, j.r.Core(), teardownTimeout)
	}
}

// job is a host worker or an offload job.
type job interface {
	base() *jobBase
	loop() *scanLoop
	// start opens the job's queues on its reactor and registers its
	// poller, but issues nothing; on error nothing of it is left open.
	start() error
	// launch has the job's reactor issue its first I/Os. The scan launches
	// its jobs only once every job has started, so that no reactor begins
	// while another is still opening its queues (a small scan would be
	// over before the last reactor joined), and a start that fails leaves
	// nothing in flight.
	launch() error
	// teardown waits for the job's I/Os in flight, closes its queues and
	// frees its memory. It is called once, on jobs started or not.
	teardown() error
}

// jobSteps are the steps in which a host worker and an offload job differ.
// The loop calls them on the job's reactor (openQueues and closeQueues also
// from the scan's goroutine once the reactor is gone).
type jobSteps interface {
	// openQueues opens the job's queues; on error none is left open.
	openQueues() error
	// submit starts chunk s, whose target, first block and blocks the
	// loop set. Its completion ends in scanLoop.done. An error means the
	// queue refused the chunk outright, and would refuse the rest of its
	// target too.
	submit(s *slot) error
	// refusal names, for the faults of a refused chunk and of the rest of
	// its target, what was not done.
	refusal() (chunk, rest string)
	// reap handles the completions that have arrived and returns how many.
	reap() int
	// inFlight is the number of the job's commands outstanding.
	inFlight() int
	// closeQueues closes the job's queues; one that cannot close (I/O in
	// flight) is kept, and an error returned.
	closeQueues() error
	// free releases the job's buffers, once nothing is in flight.
	free() error
}

// loopTarget is what the loop knows of a target.
type loopTarget struct {
	cur   *cursor
	index int // index into the targets given to Scan
	name  string
	nsid  uint32
	bs    uint64
}

// slot is what the loop knows of one of a job's chunks: the blocks it holds
// and their values on the way to the ring.
type slot struct {
	i      int // index of the chunk in its job
	tk     int // index of its target in the loop's targets
	lba    uint64
	blocks uint64
	delivery
	seen []uint64 // a bit per block of the chunk: blocks counted
}

// scanLoop is the loop every scan job runs on its reactor. It takes chunks
// from its targets' cursors, a target at a time, and has the steps submit
// them; a finished chunk's values go to the ring (a chunk whose values do
// not fit waits in pending) before the chunk takes the next blocks; the job
// finishes once nothing is in flight, held back or left to take. Everything
// but the published fields of jobBase and the targets' cursors is the
// reactor's.
type scanLoop struct {
	jobBase
	steps jobSteps
	// what names the job in errors ("scan", "offload"), poll its poller.
	what string
	// note, if set, prefixes the errors of the job's chunk faults.
	note string
	typ  abi.Type
	// targets are shared with the other jobs, read-only but for the
	// cursors.
	targets []*loopTarget
	slots   []*slot
	// cur is the target the job takes chunks from; visited counts the
	// targets it found handed out (in order from its first one), so
	// visited == len(targets) means no work is left.
	cur, visited int
	// pending are chunks whose values did not fit in the ring yet.
	pending  []*slot
	stopping bool
	poll     *poller.Poller
	// perTarget counts the bytes the job scanned of each target, and
	// perBlocks the distinct matching blocks it found in them.
	perTarget, perBlocks []uint64
	emits
}

// newScanLoop makes the loop of a job on r over targets, with a match ring.
func newScanLoop(r *poller.Reactor, what string, steps jobSteps, typ abi.Type, targets []*loopTarget) (scanLoop, error) {
	ring, err := poller.NewSPSC[Match](4096)
	if err != nil {
		return scanLoop{}, err
	}
	return scanLoop{jobBase: jobBase{r: r, matches: ring, done: make(chan struct{})}, steps: steps, what: what, typ: typ,
		targets: targets, perTarget: make([]uint64, len(targets)), perBlocks: make([]uint64, len(targets))}, nil
}

func (l *scanLoop) loop() *scanLoop { return l }

// setSlots gives the loop the job's chunks.
func (l *scanLoop) setSlots(slots []*slot) {
	l.slots = slots
	l.pending = make([]*slot, 0, len(slots))
}

func (l *scanLoop) start() error {
	err := l.r.Call(func() error {
		if err := l.steps.openQueues(); err != nil {
			return err
		}
		name := "scan"
		if l.what != name {
			name += "-" + l.what
		}
		p, err := l.r.Register(name, l.pollOnce, 0)
		if err != nil {
			return andThen(err, l.steps.closeQueues())
		}
		l.poll, l.running = p, true
		return nil
	})
	return errors.Wrapf(err, "compute: start %s on core %d", l.what, l.r.Core())
}

// launch has the job's reactor issue its chunks, unless the job finished
// (was stopped) before it began.
func (l *scanLoop) launch() error {
	err := l.r.Send(func() {
		if l.finished.Load() {
			return
		}
		for _, s := range l.slots {
			l.issue(s)
		}
	})
	return errors.Wrapf(err, "compute: launch %s on core %d", l.what, l.r.Core())
}

func (l *scanLoop) teardown() error {
	if err := l.quiesce(l.what, l.abandon); err != nil {
		return err
	}
	var err error
	if l.r.Call(func() error { err = l.steps.closeQueues(); return nil }) != nil {
		// The reactor is gone: nothing polls the queues any more, and
		// none has I/O in flight (quiesce saw to that).
		err = l.steps.closeQueues()
	}
	if err != nil {
		return err // buffers kept: a queue that did not close may still use them
	}
	return l.steps.free()
}

// abandon makes the job finish once its I/Os are in; on the reactor.
func (l *scanLoop) abandon() {
	l.stopping, l.abandoned = true, true
	l.pending = l.pending[:0]
	l.finishIfIdle()
}

// finishIfIdle ends the job once nothing is in flight or held back and no
// work is left for it.
func (l *scanLoop) finishIfIdle() {
	if l.finished.Load() || len(l.pending) > 0 || (!l.stopping && l.visited < len(l.targets)) || l.steps.inFlight() > 0 {
		return
	}
	l.finish(l.poll)
}

// issue starts the next chunk in s, if any work is left: from the current
// target, or the next one that has chunks.
func (l *scanLoop) issue(s *slot) {
	for !l.stopping && l.visited < len(l.targets) {
		t := l.targets[l.cur]
		lba, n, ok := t.cur.take()
		if !ok {
			l.cur++
			if l.cur == len(l.targets) {
				l.cur = 0
			}
			l.visited++
			continue
		}
		s.tk, s.lba, s.blocks = l.cur, lba, n
		err := l.steps.submit(s)
		if err == nil {
			return
		}
		// The queue refused the chunk outright: it would refuse the rest
		// of the target too. Fault the chunk and what is left, so no
		// block goes unreported.
		chunk, rest := l.steps.refusal()
		l.fault(s, errors.Wrap(err, chunk))
		if lba, n, ok := t.cur.rest(); ok {
			l.faults = append(l.faults, ChunkFault{Target: t.index, Base: t.name, LBA: lba, Blocks: n, Err: errors.Wrap(err, rest)})
		}
	}
}

// fault records that chunk s failed.
func (l *scanLoop) fault(s *slot, err error) {
	t := l.targets[s.tk]
	if l.note != "" {
		err = errors.Wrap(err, l.note)
	}
	l.faults = append(l.faults, ChunkFault{Target: t.index, Base: t.name, LBA: s.lba, Blocks: s.blocks, Err: err})
}

// done takes chunk s, finished (its values in s.vals, or faulted), to the
// ring and on to the next blocks; if the ring is full it waits in pending.
func (l *scanLoop) done(s *slot) {
	if !l.deliver(s) {
		if !l.abandoned {
			l.pending = append(l.pending, s)
			return
		}
		s.vals, s.sent = s.vals[:0], 0
	}
	l.issue(s)
}

// deliver pushes the chunk's values to the ring; false if the ring filled
// first (then the collector is woken to empty it).
func (l *scanLoop) deliver(s *slot) bool {
	t := l.targets[s.tk]
	return l.jobBase.deliver(&s.delivery, l.typ, t.index, t.nsid, s.lba, t.bs)
}

// counted adds a finished chunk's bytes scanned to the job's counters.
func (l *scanLoop) counted(s *slot, bytes uint64) {
	l.chunkCount++
	l.scanned += bytes
	l.perTarget[s.tk] += bytes
	l.pubScanned.Store(l.scanned)
}

// matched counts the distinct blocks of chunk s that vals fall in.
func (l *scanLoop) matched(s *slot, vals []uint64) {
	l.perBlocks[s.tk] += countBlocks(l.typ, vals, l.targets[s.tk].bs, s.seen)
}

func (l *scanLoop) pollOnce() poller.Status {
	if l.finished.Load() {
		return poller.Idle
	}
	n := l.steps.reap()
	if l.cancel.Load() {
		l.stopping = true
	}
	// Chunks held back by a full ring go out first, then take more.
	for len(l.pending) > 0 && l.deliver(l.pending[0]) {
		s := l.pending[0]
		l.pending = l.pending[:copy(l.pending, l.pending[1:])]
		l.issue(s)
		n++
	}
	l.finishIfIdle()
	if n > 0 {
		return poller.Busy
	}
	return poller.Idle
}
