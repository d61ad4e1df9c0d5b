package tcp

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// waiter lets an idle worker sleep until one of its sockets is readable
// instead of polling them: an epoll set of the worker's connections (level
// triggered) and an eventfd that new connections and Close kick. The worker
// sleeps in it itself (Target.Run), or a helper goroutine sleeps in it and
// wakes the reactor that polls the worker (Worker.OnReady).
type waiter struct {
	ready      bool       // init succeeded; the rest is unused otherwise
	mu         sync.Mutex // kick and close: the eventfd is never written once closed
	closed     bool
	epfd, evfd int
	events     [8]unix.EpollEvent
	stopping   atomic.Bool
	armed      atomic.Bool // the helper watches the sockets (OnReady)

	wake     func()        // OnReady's
	arm      chan struct{} // the worker asks the helper to watch
	done     chan struct{} // the helper ended
	idle     int           // consecutive idle polls
	ioActive bool          // the last poll left I/O, responses or sends in progress
	slept    bool          // Run's worker slept before this poll
}

func (w *waiter) init() error {
	var err error
	if w.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return errors.Wrap(err, "nvme/tcp: worker epoll set")
	}
	if w.evfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		unix.Close(w.epfd)
		return errors.Wrap(err, "nvme/tcp: worker eventfd")
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(w.evfd)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, w.evfd, &ev); err != nil {
		unix.Close(w.epfd)
		unix.Close(w.evfd)
		return errors.Wrap(err, "nvme/tcp: worker eventfd in epoll set")
	}
	w.ready = true
	return nil
}

// watch adds a connection's socket to the set; a closed socket leaves it
// by itself.
func (w *waiter) watch(c *conn) {
	if !w.ready {
		return
	}
	c.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
		unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
}

// kick makes a sleeping worker (or its helper) return.
func (w *waiter) kick() {
	if !w.ready {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		var one = [8]byte{1}
		unix.Write(w.evfd, one[:])
	}
}

// sleep blocks in epoll_wait for at most d (forever if d < 0); it returns
// at once if kicked since the last sleep.
func (w *waiter) sleep(d time.Duration) {
	ms := -1
	if d >= 0 {
		ms = int((d + time.Millisecond - 1) / time.Millisecond)
	}
	for {
		n, err := unix.EpollWait(w.epfd, w.events[:], ms)
		if err == unix.EINTR {
			continue
		}
		for i := 0; i < n; i++ {
			if int(w.events[i].Fd) == w.evfd {
				var b [8]byte
				unix.Read(w.evfd, b[:])
			}
		}
		return
	}
}

// idlePoll is called after each poll of the worker. In OnReady mode it arms
// the helper after a few idle polls, and again whenever the helper woke the
// reactor without the worker finding work (a kick, a socket event nothing
// was read for): an idle worker always has its sockets watched.
func (w *waiter) idlePoll(work int) {
	if work > 0 || w.ioActive {
		w.idle = 0
		return
	}
	w.idle++
	if w.wake != nil && w.idle >= armAfter && !w.armed.Load() {
		w.armed.Store(true)
		select {
		case w.arm <- struct{}{}:
		default:
		}
	}
}

// armAfter is how many idle polls pass before a worker driven by a reactor
// has its sockets watched; runSpin is how many a worker of Target.Run spins
// through before it sleeps.
const (
	armAfter = 8
	runSpin  = 64
	runSleep = 10 * time.Millisecond // bounded, for the keep-alive checks
)

// helper is OnReady's goroutine: armed by an idle worker, it sleeps until
// a socket is readable (or a kick) and wakes the reactor.
func (w *waiter) helper() {
	defer close(w.done)
	for range w.arm {
		if w.stopping.Load() {
			return
		}
		w.sleep(-1) // close kicks
		w.armed.Store(false)
		if w.stopping.Load() {
			return
		}
		w.wake()
	}
}

func (w *waiter) close() {
	if !w.ready || w.stopping.Swap(true) {
		return
	}
	if w.wake != nil {
		w.kick()
		select {
		case w.arm <- struct{}{}:
		default:
		}
		<-w.done
	}
	w.mu.Lock()
	w.closed = true
	unix.Close(w.epfd)
	unix.Close(w.evfd)
	w.mu.Unlock()
}

// Active reports whether the last Poll left work in progress that only
// polling finishes — namespace I/O in flight, responses or data waiting for
// room to be sent. A reactor should keep polling (not park) while it is
// true; otherwise OnReady's wake-up brings the next request.
func (w *Worker) Active() bool { return w.wt.ioActive }

// OnReady makes the worker usable from a reactor that parks when idle:
// after a few idle polls the worker has a goroutine of its own wait for any
// of its sockets to become readable (or a new connection), which calls wake
// — the reactor's Wake — so a parked reactor answers a request at once,
// without polling sockets while nothing arrives. Call it once, before
// polling starts and before Serve; Close stops the goroutine.
func (w *Worker) OnReady(wake func()) error {
	if w.wt.wake != nil || wake == nil {
		return nil
	}
	if err := w.wt.init(); err != nil {
		return err
	}
	w.wt.wake = wake
	w.wt.arm = make(chan struct{}, 1)
	w.wt.done = make(chan struct{})
	go w.wt.helper()
	return nil
}
