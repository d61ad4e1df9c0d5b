package bench

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
)

// Progress is a live view of a running benchmark.
type Progress struct {
	Elapsed time.Duration
	IOs     uint64
	Bytes   uint64
}

// Options of Run beyond the workload.
type Options struct {
	// Seed makes random offsets repeatable; each job derives its own.
	Seed uint64
	// Progress, when set, is called about once per ProgressEvery from the
	// goroutine that called Run.
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// Run runs workload w against every target from every reactor of g: one job
// per (reactor, target), each keeping QueueDepth I/Os in flight on its own
// channel, as spdk_nvme_perf does with cores × namespaces. Results are merged
// per target over reactors. It returns when the run time is over and every
// I/O has completed, or early (with what was measured) when ctx ends.
//
// Latency is measured from the poll in which an I/O was submitted to the poll
// in which it completed, with one clock read per poll.
func Run(ctx context.Context, g *poller.Group, targets []*bdev.Desc, w Workload, opts Options) (*Report, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, errors.New("bench: no targets")
	}
	for _, d := range targets {
		b := d.Bdev()
		if err := w.CheckTarget(b.Name(), b.BlockSize(), b.NumBlocks()); err != nil {
			return nil, err
		}
		if (w.Pattern != Read && w.Pattern != RandRead) && !d.Writable() {
			return nil, errors.Errorf("%s: workload %s writes, but the target is open read-only", b.Name(), w.Pattern)
		}
	}
	var jobs []*job
	fail := func(err error) (*Report, error) {
		stopJobs(jobs)
		return nil, err
	}
	for ri, r := range g.Reactors() {
		for ti, d := range targets {
			j, err := newJob(r, d, w, opts.Seed+uint64(ri)<<32+uint64(ti))
			if err != nil {
				return fail(err)
			}
			jobs = append(jobs, j)
		}
	}
	start := time.Now()
	for _, j := range jobs {
		if err := j.start(); err != nil {
			return fail(err)
		}
	}
	every := opts.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for _, j := range jobs {
	wait:
		for {
			select {
			case <-j.done:
				break wait
			case <-ctx.Done():
				for _, j := range jobs {
					j.cancel.Store(true)
				}
				<-j.done
				break wait
			case <-tick.C:
				if opts.Progress != nil {
					p := Progress{Elapsed: time.Since(start)}
					for _, j := range jobs {
						p.IOs += j.pubIOs.Load()
						p.Bytes += j.pubBytes.Load()
					}
					opts.Progress(p)
				}
			}
		}
	}
	results := make([]*Result, len(targets))
	for i, d := range targets {
		results[i] = &Result{Name: d.Bdev().Name(), Read: &Result{Name: "read"}, Write: &Result{Name: "write"}}
	}
	var firstErr error
	for i, j := range jobs {
		r := results[i%len(targets)]
		for k, dr := range [2]*Result{r.Read, r.Write} {
			d := &j.dir[k]
			dr.IOs += d.ios
			dr.Errors += d.errs
			dr.Bytes += d.bytes
			dr.Elapsed = max(dr.Elapsed, j.elapsed)
			dr.Latency.Merge(&d.hist)
			r.IOs += d.ios
			r.Errors += d.errs
			r.Bytes += d.bytes
			r.Latency.Merge(&d.hist)
		}
		r.Elapsed = max(r.Elapsed, j.elapsed)
		if j.firstErr != nil && firstErr == nil {
			firstErr = errors.Wrapf(j.firstErr, "%s on core %d", r.Name, j.r.Core())
		}
	}
	stopJobs(jobs)
	return NewReport(results), firstErr
}

// job is one (reactor, target) pair. Everything but the published counters
// and the done channel is owned by the reactor.
type job struct {
	r     *poller.Reactor
	desc  *bdev.Desc
	w     Workload
	off   *Offsets
	ch    *bdev.Channel
	poll  *poller.Poller
	slots []slot
	idle  []uint64 // slots whose submission failed, retried next poll
	spare []uint64

	now      int64
	startNS  int64
	deadline int64
	stopping bool
	finished bool
	elapsed  time.Duration

	ios, bytes uint64      // both directions, for the live view
	dir        [2]dirStats // reads, writes
	firstErr   error

	pubIOs, pubBytes atomic.Uint64
	cancel           atomic.Bool
	done             chan struct{}
}

type slot struct {
	buf   bdev.Buffer
	start int64
	write int // 0 for a read, 1 for a write: the index into job.dir
}

// dirStats is what a job's reads or writes did.
type dirStats struct {
	ios, errs, bytes uint64
	hist             Histogram
}

func newJob(r *poller.Reactor, d *bdev.Desc, w Workload, seed uint64) (*job, error) {
	b := d.Bdev()
	j := &job{r: r, desc: d, w: w, done: make(chan struct{}),
		off: NewOffsets(w, b.BlockSize(), 0, b.NumBlocks(), seed)}
	j.slots = make([]slot, w.QueueDepth)
	for i := range j.slots {
		buf, err := d.AllocBuffer(w.BlockSize)
		if err != nil {
			j.freeBuffers()
			return nil, err
		}
		for k := range buf.Bytes {
			buf.Bytes[k] = byte(k + i)
		}
		j.slots[i] = slot{buf: buf}
	}
	j.idle = make([]uint64, 0, w.QueueDepth)
	j.spare = make([]uint64, 0, w.QueueDepth)
	return j, nil
}

func (j *job) freeBuffers() {
	for _, s := range j.slots {
		if s.buf.Bytes != nil {
			j.desc.FreeBuffer(s.buf)
		}
	}
	j.slots = nil
}

// start creates the channel and poller on the reactor and fills the queue.
func (j *job) start() error {
	err := j.r.Call(func() error {
		ch, err := j.desc.NewChannelOn(j.r, j.w.QueueDepth)
		if err != nil {
			return err
		}
		p, err := j.r.Register("perf:"+j.desc.Bdev().Name(), j.pollOnce, 0)
		if err != nil {
			ch.Close()
			return err
		}
		j.ch, j.poll = ch, p
		j.now = nanotime()
		j.startNS = j.now
		j.deadline = j.now + int64(j.w.Duration)
		for i := range j.slots {
			j.submit(uint64(i))
		}
		return nil
	})
	return errors.Wrapf(err, "bench: start job on core %d", j.r.Core())
}

// submit starts the next I/O of slot i. The I/Os are tagged with their
// slot and complete to the job: on an NVMe bdev, straight from the queue
// pair.
func (j *job) submit(i uint64) {
	s := &j.slots[i]
	lba, n, read := j.off.Next()
	s.start = j.now
	var err error
	if read {
		s.write = 0
		err = j.ch.ReadTagged(&s.buf, lba, n, j, i)
	} else {
		s.write = 1
		err = j.ch.WriteTagged(&s.buf, lba, n, j, i)
	}
	if err != nil {
		if j.firstErr == nil && !errors.Is(err, bdev.ErrNoIO) {
			j.firstErr = err
		}
		j.idle = append(j.idle, i)
	}
}

// Complete records the I/O of slot tag and starts the slot's next one
// (bdev.Completer).
func (j *job) Complete(tag, _ uint64, err error) {
	s := &j.slots[tag]
	d := &j.dir[s.write&1]
	j.ios++
	d.ios++
	if err != nil {
		d.errs++
		if j.firstErr == nil {
			j.firstErr = err
		}
	} else {
		j.bytes += uint64(j.w.BlockSize)
		d.bytes += uint64(j.w.BlockSize)
	}
	d.hist.Record(time.Duration(j.now - s.start))
	if !j.stopping {
		j.submit(tag)
	}
}

func (j *job) pollOnce() poller.Status {
	if j.finished {
		return poller.Idle
	}
	j.now = nanotime()
	n := j.ch.Poll()
	if !j.stopping && (j.now >= j.deadline || j.cancel.Load()) {
		j.stopping = true
	}
	if !j.stopping && len(j.idle) > 0 {
		// Double-buffered so that failures of this round queue for the next.
		retry := j.idle
		j.idle, j.spare = j.spare[:0], retry
		for _, i := range retry {
			j.submit(i)
		}
	}
	j.pubIOs.Store(j.ios)
	j.pubBytes.Store(j.bytes)
	if j.stopping && j.ch.Outstanding() == 0 {
		j.finished = true
		j.elapsed = time.Duration(j.now - j.startNS)
		j.poll.Unregister()
		close(j.done)
	}
	if n > 0 {
		return poller.Busy
	}
	return poller.Idle
}

// stopJobs closes the channels on their reactors and frees buffers.
func stopJobs(jobs []*job) {
	for _, j := range jobs {
		if j.ch != nil {
			j.r.Call(func() error {
				j.poll.Unregister()
				return j.ch.Close()
			})
			j.ch = nil
		}
		j.freeBuffers()
	}
}

var epoch = time.Now()

func nanotime() int64 { return int64(time.Since(epoch)) }
