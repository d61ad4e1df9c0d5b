package poller

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// Parked states of a reactor (Reactor.parked): what a sender that wants it
// awake must do.
const (
	running     = iota // not parked: nothing to do
	parkedChan         // asleep on its wake channel and timer
	parkedWait         // asleep in epoll_wait on its wait set
	parkedWoken        // asleep in epoll_wait, its eventfd already written
)

// waitSet is a reactor's epoll set: the descriptors its pollers wait on
// plus an eventfd that senders write to wake it. Made by the first
// AddWaitFD, closed when the reactor ends.
type waitSet struct {
	epfd, evfd int
	fds        atomic.Int32 // registered descriptors, the eventfd aside

	mu     sync.Mutex // AddWaitFD, removals, close
	closed bool

	events [16]unix.EpollEvent // the reactor's alone
}

// AddWaitFD adds descriptor fd to the reactor's wait set: while it has
// any, a parked reactor sleeps in epoll_wait, woken by any of them
// becoming ready (readable, or in error) as well as by messages, Wake, its
// next timed poller and the park limit. Without, it parks as before.
//
// The reactor waits edge-triggered and never reads fd: a wake-up only
// makes it run its pollers, and the poller that watches fd consumes what
// made it ready (reaps the ring, reads the socket). fd is for a poller of
// this reactor whose work arrives from the kernel — an io_uring's
// registered eventfd, a socket — so that the reactor can park with I/O in
// flight and wake on its completion rather than at the park limit.
//
// remove takes fd out of the set; call it before closing fd (a closed
// descriptor's number may be reused). It may be called from any
// goroutine, more than once, and after the reactor ended. AddWaitFD may be
// called from any goroutine; it returns ErrStopped once the reactor ended.
func (r *Reactor) AddWaitFD(fd int) (remove func(), err error) {
	ws, err := r.waitSet()
	if err != nil {
		return nil, errors.Wrapf(err, "poller: wait for descriptor %d on core %d", fd, r.core)
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.closed {
		return nil, ErrStopped
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(ws.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return nil, errors.Wrapf(err, "poller: epoll_ctl add descriptor %d on core %d", fd, r.core)
	}
	ws.fds.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			ws.mu.Lock()
			defer ws.mu.Unlock()
			if ws.closed {
				return
			}
			// ENOENT: fd was closed already, which took it out.
			_ = unix.EpollCtl(ws.epfd, unix.EPOLL_CTL_DEL, fd, nil)
			ws.fds.Add(-1)
		})
	}, nil
}

// waitSet returns the reactor's wait set, made on first use.
func (r *Reactor) waitSet() (*waitSet, error) {
	if ws := r.ws.Load(); ws != nil {
		return ws, nil
	}
	r.wsMu.Lock()
	defer r.wsMu.Unlock()
	if ws := r.ws.Load(); ws != nil {
		return ws, nil
	}
	if r.msgs.Closed() {
		return nil, ErrStopped
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, errors.Wrap(err, "epoll_create1")
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, errors.Wrap(err, "eventfd")
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, errors.Wrap(err, "epoll_ctl add eventfd")
	}
	ws := &waitSet{epfd: epfd, evfd: evfd}
	r.ws.Store(ws)
	return ws, nil
}

// closeWaitSet closes the wait set when the reactor ends; later
// AddWaitFD calls fail and removals do nothing.
func (r *Reactor) closeWaitSet() {
	r.wsMu.Lock()
	defer r.wsMu.Unlock()
	ws := r.ws.Load()
	if ws == nil {
		// No set will be made: waitSet sees the closed ring.
		return
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.closed = true
	unix.Close(ws.epfd)
	unix.Close(ws.evfd)
}

// wake writes the wait set's eventfd. It runs once per park at most (the
// sender that moved the reactor from parkedWait to parkedWoken), so the
// lock, which keeps the descriptor from being closed under it, costs
// nothing on the I/O path.
func (ws *waitSet) wake() {
	one := uint64(1)
	ws.mu.Lock()
	if !ws.closed {
		// EAGAIN (the counter is full) still leaves it readable.
		_, _ = unix.Write(ws.evfd, (*[8]byte)(unsafe.Pointer(&one))[:])
	}
	ws.mu.Unlock()
}

// noPwait2 is set when the kernel lacks epoll_pwait2 (before 5.11): parks
// then wait in whole milliseconds, rounded up.
var noPwait2 atomic.Bool

// wait sleeps in epoll_wait for at most d.
func (ws *waitSet) wait(d time.Duration) {
	if !noPwait2.Load() {
		ts := unix.NsecToTimespec(int64(d))
		_, _, errno := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(ws.epfd), uintptr(unsafe.Pointer(&ws.events[0])), uintptr(len(ws.events)), uintptr(unsafe.Pointer(&ts)), 0, 0)
		if errno != unix.ENOSYS {
			return // woken, timed out or interrupted: the loop looks again
		}
		noPwait2.Store(true)
	}
	ms := int((d + time.Millisecond - 1) / time.Millisecond)
	_, _ = unix.EpollWait(ws.epfd, ws.events[:], ms)
}
