package poller

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// Status is what a poller reports after one run.
type Status int

const (
	// Idle means the poller found no work.
	Idle Status = iota
	// Busy means the poller did work; the reactor will not go idle this round.
	Busy
)

// Errors returned by Send, Register and Stop.
var (
	// ErrRingFull is back-pressure: the reactor's message ring is full. The
	// sender keeps its message and may retry later, drop it, or slow down.
	ErrRingFull = errors.New("poller: reactor message ring is full")
	// ErrStopped means the reactor has been stopped and takes no more work.
	ErrStopped = errors.New("poller: reactor is stopped")
	// ErrOnReactor means a call that waits for reactors was made from a
	// reactor, where it would wait for itself.
	ErrOnReactor = errors.New("poller: called from a reactor goroutine")
)

// IdleStrategy says what a reactor does when a loop iteration found no work:
// first it spins (polls again at once) for Spin iterations, then it yields its
// thread to the Go scheduler (runtime.Gosched) for Yield further iterations,
// then it parks: it sleeps until a message arrives, a timed poller is due, or
// Park has passed, whichever comes first. Any busy iteration starts the sequence
// again.
//
// Spinning gives the lowest latency and burns a core; parking gives the core
// back. On a machine with as many reactors as cores, a reactor that never parks
// starves the Go runtime (garbage collector, timers) and every other goroutine,
// so the default parks after a short spin.
type IdleStrategy struct {
	Spin  int
	Yield int
	Park  time.Duration
}

// DefaultIdle is the zero-value strategy: about 10-50 µs of spinning and
// yielding, then parks of at most 200 µs. A reactor whose pollers wait on a
// device therefore answers within a few microseconds while work flows, and
// costs almost nothing when the device is quiet.
var DefaultIdle = IdleStrategy{Spin: 512, Yield: 128, Park: 200 * time.Microsecond}

// BusyPoll never parks: the lowest latency, at the price of a full core per
// reactor. Use it for benchmarks on machines with cores to spare.
var BusyPoll = IdleStrategy{Spin: int(^uint(0) >> 1)}

// Config selects the reactors of a Group.
type Config struct {
	// Cores is an SPDK core mask ("0x3", "0-1", "0,2"); empty means core 0.
	Cores string
	// Idle is the idle strategy; the zero value means DefaultIdle.
	Idle IdleStrategy
	// MsgRing is the capacity of each reactor's message ring, a power of two;
	// 0 means 4096.
	MsgRing int
	// NoPin leaves the reactors' threads unpinned (locked to their OS thread,
	// but free to migrate between cores). Useful on shared test machines.
	NoPin bool
}

// Message is work for a reactor: the reactor calls Fn(Arg). With Fn a
// top-level function and Arg a pointer, sending a Message allocates nothing.
type Message struct {
	Fn  func(arg any)
	Arg any
}

// Group is a set of reactors started together and stopped together.
type Group struct {
	reactors []*Reactor
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// Start starts one reactor per core in cfg.Cores. Each runs on its own
// goroutine locked to an OS thread, pinned to its core unless cfg.NoPin.
func Start(cfg Config) (*Group, error) {
	mask := cfg.Cores
	if mask == "" {
		mask = "0"
	}
	cores, err := ParseCoreMask(mask)
	if err != nil {
		return nil, err
	}
	if !cfg.NoPin {
		if err := ValidateCores(cores); err != nil {
			return nil, err
		}
	}
	ringCap := cfg.MsgRing
	if ringCap == 0 {
		ringCap = 4096
	}
	idle := cfg.Idle
	if idle == (IdleStrategy{}) {
		idle = DefaultIdle
	}
	if idle.Spin < 0 || idle.Yield < 0 || idle.Park < 0 {
		return nil, errors.Errorf("poller: idle strategy %+v: negative values", idle)
	}
	g := &Group{}
	for _, c := range cores {
		ring, err := NewMPSC[Message](ringCap)
		if err != nil {
			return nil, errors.Wrap(err, "poller: message ring")
		}
		g.reactors = append(g.reactors, &Reactor{
			core:    c,
			msgs:    ring,
			idle:    idle,
			pin:     !cfg.NoPin,
			wake:    make(chan struct{}, 1),
			started: make(chan error, 1),
			done:    make(chan struct{}),
		})
	}
	for _, r := range g.reactors {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			r.run()
		}()
	}
	var startErr error
	for _, r := range g.reactors {
		if err := <-r.started; err != nil && startErr == nil {
			startErr = err
		}
	}
	if startErr != nil {
		_ = g.Stop()
		return nil, startErr
	}
	return g, nil
}

// Reactors returns the group's reactors in core order.
func (g *Group) Reactors() []*Reactor { return g.reactors }

// Stop stops every reactor and waits for their goroutines to end. Messages
// sent before Stop are all delivered before a reactor ends; Send after Stop
// returns ErrStopped. Pollers stop being called. Stop may be called more than
// once; it returns ErrOnReactor when called from one of the reactors.
func (g *Group) Stop() error {
	for _, r := range g.reactors {
		if r.OnReactor() {
			return ErrOnReactor
		}
	}
	g.stopOnce.Do(func() {
		for _, r := range g.reactors {
			r.msgs.Close()
			r.signal()
		}
		g.wg.Wait()
	})
	return nil
}

// Reactor is one polling loop on one core. Everything registered on a reactor
// (its pollers, and the objects they own, such as NVMe queue pairs) is used
// only from that reactor's goroutine; other goroutines reach it by Send.
type Reactor struct {
	_    cpu.CacheLinePad
	core int
	pin  bool
	tid  atomic.Int64
	idle IdleStrategy

	// Read by senders; parked is written by the reactor only when it parks
	// (and by a sender that wakes it from its wait set).
	msgs    *MPSC[Message]
	parked  atomic.Uint32 // running, parkedChan, parkedWait or parkedWoken
	wake    chan struct{}
	ws      atomic.Pointer[waitSet] // descriptors to park on; nil until AddWaitFD
	wsMu    sync.Mutex              // makes and closes ws
	started chan error
	done    chan struct{}

	// Owned by the reactor goroutine, written on every iteration: on cache
	// lines of their own, apart from what senders read.
	_         cpu.CacheLinePad
	batch     [64]Message
	pollers   []*Poller // period 0, run every iteration
	timed     []*Poller // period > 0
	nextTimed int64     // earliest deadline among timed, in nanotime
	dirty     bool      // some poller was unregistered
	stats     ReactorStats
	_         cpu.CacheLinePad
}

// Core returns the core the reactor runs on.
func (r *Reactor) Core() int { return r.core }

// OnReactor reports whether the calling goroutine is this reactor's. (The
// reactor's goroutine is locked to its OS thread, so no other goroutine runs
// on that thread.)
func (r *Reactor) OnReactor() bool { return int64(unix.Gettid()) == r.tid.Load() }

// byThread maps the thread id of each running reactor to it (Current).
var byThread sync.Map

// Current returns the reactor whose goroutine calls it, or nil on any
// other goroutine. It is for setup code deep in a driver that makes what a
// reactor will own — a queue pair's connection, whose socket the reactor
// should wait on (AddWaitFD) — without the reactor passed down to it; it
// costs a system call and a map lookup, so not for the I/O path.
func Current() *Reactor {
	if v, ok := byThread.Load(int64(unix.Gettid())); ok {
		return v.(*Reactor)
	}
	return nil
}

// SendMsg queues m.Fn(m.Arg) to run on the reactor. It never blocks: a full ring
// returns ErrRingFull, a stopped reactor ErrStopped. Messages from one sender
// run in the order sent; messages are drained in batches.
func (r *Reactor) SendMsg(fn func(arg any), arg any) error {
	if !r.msgs.Push(Message{Fn: fn, Arg: arg}) {
		if r.msgs.Closed() {
			return ErrStopped
		}
		return ErrRingFull
	}
	if p := r.parked.Load(); p == parkedChan || p == parkedWait {
		r.signal()
	}
	return nil
}

// Wake makes a parked reactor run its pollers at once. It is for a poller
// that watches memory other goroutines write (a doorbell, a flag): the writer
// stores, then calls Wake. On a reactor that is not parked Wake only reads a
// flag, so it may be called on every store: the reactor checks its pollers
// once more after announcing that it parks, so a store made before Wake is
// seen either by that check or by the wake-up.
func (r *Reactor) Wake() {
	if p := r.parked.Load(); p == parkedChan || p == parkedWait {
		r.signal()
	}
}

// Send queues fn to run on the reactor; see SendMsg.
func (r *Reactor) Send(fn func()) error { return r.SendMsg(callFunc, fn) }

func callFunc(arg any) { arg.(func())() }

// Call runs fn on the reactor and waits for it, returning fn's error. It is
// for setup and teardown — creating or closing what the reactor owns — not for
// the I/O path: it allocates, and it waits. On the reactor itself fn runs at
// once. A full ring is waited out; a stopped reactor returns ErrStopped
// without running fn.
func (r *Reactor) Call(fn func() error) error {
	if r.OnReactor() {
		return fn()
	}
	errc := make(chan error, 1)
	wrapped := func() { errc <- fn() }
	for {
		err := r.Send(wrapped)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrRingFull) {
			return err
		}
		time.Sleep(50 * time.Microsecond)
	}
	// Stop delivers every accepted message, so the answer always comes.
	return <-errc
}

// signal wakes the reactor from a park: its wake channel, or its wait
// set's eventfd when it sleeps in epoll_wait (written once per park).
func (r *Reactor) signal() {
	if r.parked.CompareAndSwap(parkedWait, parkedWoken) {
		r.ws.Load().wake()
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

var epoch = time.Now()

// nanotime is monotonic nanoseconds since process start.
func nanotime() int64 { return int64(time.Since(epoch)) }

func (r *Reactor) run() {
	// The thread is never unlocked: when the goroutine ends, the runtime
	// retires the thread, so a pinned affinity mask never leaks to other
	// goroutines.
	runtime.LockOSThread()
	r.tid.Store(int64(unix.Gettid()))
	if r.pin {
		if err := pinThread(r.core); err != nil {
			r.msgs.Close()
			r.started <- err
			close(r.done)
			return
		}
	}
	r.started <- nil
	defer close(r.done)
	defer r.closeWaitSet()
	byThread.Store(r.tid.Load(), r)
	defer byThread.Delete(r.tid.Load())

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	idleRuns := 0
	for {
		busy := r.iterate()
		if busy {
			r.stats.BusyIterations++
			idleRuns = 0
			if r.msgs.Drained() {
				break
			}
			continue
		}
		r.stats.IdleIterations++
		if r.msgs.Drained() {
			break
		}
		idleRuns++
		switch {
		case idleRuns <= r.idle.Spin:
		case idleRuns <= r.idle.Spin+r.idle.Yield:
			runtime.Gosched()
		default:
			if r.park(timer) {
				// The last poll before parking found work: spin again.
				r.stats.BusyIterations++
				idleRuns = 0
			}
		}
	}
}

// iterate runs one loop iteration: messages, then pollers, then due timed
// pollers. It reports whether anything did work.
func (r *Reactor) iterate() bool {
	busy := false
	if n := r.msgs.PopBatch(r.batch[:]); n > 0 {
		busy = true
		r.stats.Messages += uint64(n)
		for i := range r.batch[:n] {
			m := r.batch[i]
			r.batch[i] = Message{}
			m.Fn(m.Arg)
		}
	}
	for _, p := range r.pollers {
		if p.dead.Load() {
			r.dirty = true
			continue
		}
		if p.fn() == Busy {
			p.busyRuns++
			busy = true
		} else {
			p.idleRuns++
		}
	}
	if len(r.timed) > 0 {
		if now := nanotime(); now >= r.nextTimed {
			if r.runTimed(now) {
				busy = true
			}
		}
	}
	if r.dirty {
		r.pollers = compact(r.pollers)
		r.timed = compact(r.timed)
		r.nextTimed = earliest(r.timed)
		r.dirty = false
	}
	return busy
}

func (r *Reactor) runTimed(now int64) bool {
	busy := false
	for _, p := range r.timed {
		if p.dead.Load() {
			r.dirty = true
			continue
		}
		if now < p.next {
			continue
		}
		if p.fn() == Busy {
			p.busyRuns++
			busy = true
		} else {
			p.idleRuns++
		}
		// Missed periods are skipped, not made up in a burst.
		p.next += p.period
		if p.next <= now {
			p.next = now + p.period
		}
	}
	r.nextTimed = earliest(r.timed)
	return busy
}

func earliest(ps []*Poller) int64 {
	e := int64(1<<63 - 1)
	for _, p := range ps {
		e = min(e, p.next)
	}
	return e
}

func compact(ps []*Poller) []*Poller {
	out := ps[:0]
	for _, p := range ps {
		if !p.dead.Load() {
			out = append(out, p)
		}
	}
	clear(ps[len(out):])
	return out
}

// park sleeps until a message, the next timed poller, or the park limit,
// or, with a wait set, one of its descriptors is ready.
// It reports whether, instead, the last poll before sleeping did work.
func (r *Reactor) park(timer *time.Timer) bool {
	d := r.idle.Park
	if len(r.timed) > 0 {
		d = min(d, time.Duration(r.nextTimed-nanotime()))
	}
	if d <= 0 {
		return false
	}
	ws := r.ws.Load()
	if ws != nil && ws.fds.Load() > 0 {
		r.parked.Store(parkedWait)
	} else {
		ws = nil
		r.parked.Store(parkedChan)
	}
	// A sender that pushed before seeing parked=true is caught here: the ring
	// is not empty (or the group is stopping), so do not sleep. So is a
	// store that a poller watches, made before its writer's Wake saw
	// parked=false: the pollers run once more.
	// A descriptor of the wait set that becomes ready after the check is
	// kept by epoll (edge-triggered) for the wait below.
	if !r.msgs.Empty() || r.msgs.Closed() {
		r.parked.Store(running)
		return false
	}
	if r.iterate() {
		r.parked.Store(running)
		return true
	}
	start := nanotime()
	if ws != nil {
		ws.wait(d)
		r.stats.WaitParks++
	} else {
		timer.Reset(d)
		select {
		case <-r.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
	r.parked.Store(running)
	r.stats.Parks++
	r.stats.ParkedTime += time.Duration(nanotime() - start)
	return false
}

// Poller is a function registered on a reactor and called from its loop.
type Poller struct {
	_      cpu.CacheLinePad
	name   string
	fn     func() Status
	period int64 // ns; 0 = every iteration
	next   int64
	r      *Reactor
	dead   atomic.Bool

	busyRuns, idleRuns uint64 // owned by the reactor, written on every run
	_                  cpu.CacheLinePad
}

// Register adds a poller to the reactor. With period 0 fn runs on every loop
// iteration; with period > 0 it runs on a fixed-rate schedule: the n-th run is
// due n periods after registration and never runs before that, but may run late
// (by up to one park when the reactor is idle, or behind a slow poller); runs
// that fall a whole period behind are skipped, not made up in a burst.
// Register may be called
// from any goroutine; off the reactor, the registration travels as a message
// and takes effect when the reactor drains it.
func (r *Reactor) Register(name string, fn func() Status, period time.Duration) (*Poller, error) {
	if fn == nil {
		return nil, errors.Errorf("poller: register %q: nil function", name)
	}
	if period < 0 {
		return nil, errors.Errorf("poller: register %q: negative period %v", name, period)
	}
	p := &Poller{name: name, fn: fn, period: int64(period), r: r}
	if r.OnReactor() {
		if r.msgs.Closed() {
			return nil, ErrStopped
		}
		r.add(p)
		return p, nil
	}
	if err := r.SendMsg(addPoller, p); err != nil {
		return nil, errors.Wrapf(err, "poller: register %q on core %d", name, r.core)
	}
	return p, nil
}

func addPoller(arg any) {
	p := arg.(*Poller)
	p.r.add(p)
}

func (r *Reactor) add(p *Poller) {
	if p.dead.Load() {
		return
	}
	if p.period == 0 {
		r.pollers = append(r.pollers, p)
		return
	}
	p.next = nanotime() + p.period
	r.timed = append(r.timed, p)
	r.nextTimed = earliest(r.timed)
}

// Name returns the name the poller was registered with.
func (p *Poller) Name() string { return p.name }

// Unregister removes the poller. It may be called from inside the poller's own
// function, from the reactor, or from any other goroutine. Once it returns, the
// reactor starts no new run of the poller; a run already in progress on the
// reactor (when called from elsewhere) finishes normally.
func (p *Poller) Unregister() {
	p.dead.Store(true)
}

// PollerStats counts a poller's runs.
type PollerStats struct {
	Name     string
	Period   time.Duration
	BusyRuns uint64 // runs that returned Busy
	IdleRuns uint64 // runs that returned Idle
}

// ReactorStats counts a reactor's loop iterations and the runs of its pollers.
type ReactorStats struct {
	Core           int
	BusyIterations uint64        // iterations in which a message or poller did work
	IdleIterations uint64        // iterations that found nothing to do
	Messages       uint64        // messages delivered
	Parks          uint64        // times the reactor slept
	WaitParks      uint64        // of which in epoll_wait on its wait set (AddWaitFD)
	ParkedTime     time.Duration // total time asleep
	Pollers        []PollerStats // registered pollers, every-iteration ones first
}

// Stats returns a snapshot of the reactor's statistics. The reactor owns them,
// so from another goroutine Stats asks it by message and waits for the answer;
// on a stopped reactor it returns the final counts.
func (r *Reactor) Stats() (ReactorStats, error) {
	if r.OnReactor() {
		return r.snapshot(), nil
	}
	reply := make(chan ReactorStats, 1)
	if err := r.Send(func() { reply <- r.snapshot() }); err != nil {
		if errors.Is(err, ErrStopped) {
			<-r.done // the reactor's goroutine has ended; its fields are ours
			return r.snapshot(), nil
		}
		return ReactorStats{}, err
	}
	select {
	case s := <-reply:
		return s, nil
	case <-r.done:
		// Stop delivers every message before the reactor ends, so the reply
		// is there.
		return <-reply, nil
	}
}

func (r *Reactor) snapshot() ReactorStats {
	s := r.stats
	s.Core = r.core
	s.Pollers = nil
	for _, list := range [][]*Poller{r.pollers, r.timed} {
		for _, p := range list {
			if p.dead.Load() {
				continue
			}
			s.Pollers = append(s.Pollers, PollerStats{Name: p.name, Period: time.Duration(p.period), BusyRuns: p.busyRuns, IdleRuns: p.idleRuns})
		}
	}
	return s
}
