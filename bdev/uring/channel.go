//go:build linux

package uring

import (
	"sync"
	"unsafe"

	"github.com/bpfblk/bpfblk/bdev"
	iu "github.com/bpfblk/bpfblk/internal/uring"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// sharedEntries is the least number of SQ entries (and I/O slots) of a
// ring that an owner's channels share: the channels that come later are
// not known when it is made. An I/O that finds every slot taken is
// refused with ErrBusy and waits in its bdev channel's retry queue.
const sharedEntries = 256

// ring is one io_uring and the I/Os in flight on it: a channel's own
// (from NewChannel) or shared by the channels of one owner, whatever
// their devices (from NewChannelOn). The owner's goroutine alone touches
// it, but for refs, which registry.mu guards.
type ring struct {
	r     *iu.Ring
	key   ringKey // owner nil: a private ring
	refs  int     // channels; under registry.mu
	slots []slot  // the SQE's user data is the slot's index
	free  []uint32

	polls      uint64 // polls through a channel: the skip test of channel.Poll
	polling    int    // poll calls running (a callback may poll again)
	closeLater bool   // the last channel left during a poll: close after it

	fixed bool     // the ring has a registered-buffer table
	reg   []regBuf // registered-buffer table, by index; dma nil: free
	users map[*backend]*user

	files    bool // the ring has a registered-file table
	fileUsed [maxFiles]bool

	// evfd is the eventfd the ring signals on completions, in its
	// owner's wait set (a reactor parked in epoll_wait wakes on it);
	// unwait takes it out. -1 and nil: none.
	evfd   int
	unwait func()

	// inline holds the slots of I/Os the reactor does itself (a file
	// the kernel could only hand to a worker thread), in the order
	// submitted; the next poll runs them. spare is its other half: a
	// poll runs one while completions queue on the other. Each holds at
	// most every slot, so appending never allocates.
	inline, spare []uint32
}

// user is a device's use of a ring: its channels there and the slots of
// its descriptors in the ring's registered-file table (-1: none).
type user struct {
	refs          int
	fdIdx, bufIdx int32
}

// maxFiles is the size of a ring's registered-file table: two
// descriptors (O_DIRECT and buffered) for each of 32 devices; the
// devices past it use their descriptors unregistered.
const maxFiles = 64

// regBuf is an arena registered with a ring, and the backend it is of.
type regBuf struct {
	dma *nvme.DMA
	b   *backend
}

// ringKey names the ring of an owner. Devices opened with and without
// sqpoll do not share one.
type ringKey struct {
	owner  bdev.Owner
	sqpoll bool
}

// registry holds the shared rings, one per owner. Its lock is taken to
// make and close channels, never per I/O.
var registry = struct {
	mu    sync.Mutex
	rings map[ringKey]*ring
	open  int // rings open, private ones included
}{rings: map[ringKey]*ring{}}

// Rings returns the number of rings that open channels of uring bdevs
// hold: one per owner (and sqpoll setting) that has a channel of any
// uring device, plus one per channel made without an owner.
func Rings() int {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	return registry.open
}

// slot is one I/O in flight.
type slot struct {
	io   *bdev.IO
	ch   *channel
	done uint64 // bytes moved so far (a short transfer is continued)
}

// newRing sets up a ring with room for depth I/Os in flight.
func newRing(key ringKey, depth int, path string) (*ring, error) {
	entries := uint32(1)
	for entries < uint32(depth) {
		entries <<= 1
	}
	r, err := iu.New(iu.Options{Entries: entries, SQPoll: key.sqpoll, SingleThread: lockedThread(key.owner)})
	if err != nil {
		return nil, errors.Wrapf(err, "uring %s", path)
	}
	g := &ring{r: r, key: key, refs: 1, slots: make([]slot, depth), free: make([]uint32, depth), users: map[*backend]*user{},
		inline: make([]uint32, 0, depth), spare: make([]uint32, 0, depth), evfd: -1}
	if w, ok := key.owner.(waiter); ok {
		g.waitOn(w)
	}
	for i := range g.free {
		g.free[i] = uint32(depth - 1 - i)
	}
	// Without a registered-buffer table every I/O goes through plain
	// READ/WRITE: slower by the page pinning, but it works.
	g.fixed = r.RegisterSparseBuffers(maxArenas) == nil
	// Likewise without a registered-file table: every I/O then takes and
	// drops a reference to its file.
	g.files = r.RegisterSparseFiles(maxFiles) == nil
	if cpus, ok := workerCPUs(); ok {
		r.SetWorkerAffinity(&cpus) // best effort: the default works too
	}
	registry.mu.Lock()
	registry.open++
	registry.mu.Unlock()
	return g, nil
}

// waiter is an owner that can sleep on descriptors: a poller.Reactor
// parks in epoll_wait on them (poller.Reactor.AddWaitFD).
type waiter interface {
	AddWaitFD(fd int) (remove func(), err error)
}

// waitOn has the ring signal an eventfd in w's wait set on completions,
// so that w, parked with I/O in flight, wakes when it completes instead of
// at its park limit. On a deferred ring the kernel signals when a
// completion waits for the owner's thread to enter (internal/uring
// TestEventfd), which the next poll does (TaskRunPending). Best effort:
// without it w parks on its timer, as any owner without descriptors.
func (g *ring) waitOn(w waiter) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return
	}
	if g.r.RegisterEventfd(fd) != nil {
		unix.Close(fd)
		return
	}
	remove, err := w.AddWaitFD(fd)
	if err != nil {
		g.r.UnregisterEventfd()
		unix.Close(fd)
		return
	}
	g.evfd, g.unwait = fd, remove
}

// close closes the ring, and its eventfd after taking it out of the
// owner's wait set.
func (g *ring) close() error {
	if g.unwait != nil {
		g.unwait()
		g.unwait = nil
	}
	err := g.r.Close()
	if g.evfd >= 0 {
		unix.Close(g.evfd)
		g.evfd = -1
	}
	return err
}

// NewChannel is the Backend method: a channel on a ring of its own, of
// depth slots, closed with it.
func (b *backend) NewChannel(depth int) (bdev.BackendChannel, error) {
	r, err := newRing(ringKey{sqpoll: b.sqpoll}, depth, b.path)
	if err != nil {
		return nil, err
	}
	return b.join(r), nil
}

// NewChannelOn is the bdev.OwnedBackend method: a channel on the ring
// that owner's channels of all uring devices share, made if owner has
// none, with room for sharedEntries I/Os in flight or depth if that is
// more. It runs on owner's goroutine.
func (b *backend) NewChannelOn(owner bdev.Owner, depth int) (bdev.BackendChannel, error) {
	key := ringKey{owner: owner, sqpoll: b.sqpoll}
	registry.mu.Lock()
	r := registry.rings[key]
	if r != nil {
		r.refs++
		registry.mu.Unlock()
		return b.join(r), nil
	}
	registry.mu.Unlock()
	// Outside the lock: no one else adds this key meanwhile, since only
	// the owner's goroutine makes its channels.
	r, err := newRing(key, max(sharedEntries, depth), b.path)
	if err != nil {
		return nil, err
	}
	registry.mu.Lock()
	registry.rings[key] = r
	registry.mu.Unlock()
	return b.join(r), nil
}

// lockedThread reports whether owner's goroutine keeps one OS thread for
// its life, as a poller.Reactor's does (it locks its thread and never
// unlocks it): only then may its ring be bound to the thread that made it
// (iu.Options.SingleThread). Other owners, and channels without one, may
// move between threads.
func lockedThread(owner bdev.Owner) bool {
	_, ok := owner.(*poller.Reactor)
	return ok
}

// join returns a channel of b on r, which counts it already. The first
// channel of b on r puts b's descriptors in r's registered-file table.
func (b *backend) join(r *ring) *channel {
	u := r.users[b]
	if u == nil {
		u = &user{fdIdx: -1, bufIdx: -1}
		r.users[b] = u
		u.fdIdx = r.registerFile(b.fd)
		if b.bufFd != b.fd {
			u.bufIdx = r.registerFile(b.bufFd)
		} else {
			u.bufIdx = u.fdIdx
		}
	}
	u.refs++
	c := &channel{b: b, ring: r, fd: int32(b.fd), bufFd: int32(b.bufFd), bs: uint64(b.bs),
		alignMask: uintptr(b.memAlign - 1), seen: r.polls, inline: b.inline, eager: !b.batch && !b.inline && !b.sqpoll}
	// Registered descriptors for both or neither: one SQE flag for
	// either.
	if u.fdIdx >= 0 && u.bufIdx >= 0 {
		c.fd, c.bufFd, c.sqeFlags = u.fdIdx, u.bufIdx, iu.SQEFixedFile
	}
	return c
}

// registerFile puts fd in a free slot of r's file table and returns the
// slot, or -1 when the table is full or absent.
func (r *ring) registerFile(fd int) int32 {
	if !r.files {
		return -1
	}
	for i := range r.fileUsed {
		if !r.fileUsed[i] {
			if r.r.UpdateFile(uint32(i), int32(fd)) != nil {
				return -1
			}
			r.fileUsed[i] = true
			return int32(i)
		}
	}
	return -1
}

// unregisterFile empties slot i of r's file table (i -1: nothing).
func (r *ring) unregisterFile(i int32) error {
	if i < 0 || !r.fileUsed[i] {
		return nil
	}
	if err := r.r.UpdateFile(uint32(i), -1); err != nil {
		if offThread(r, err) {
			return nil // the slot keeps the file until the ring closes
		}
		return err
	}
	r.fileUsed[i] = false
	return nil
}

// offThread reports whether err is a deferred ring's refusal of a call
// from a thread other than its own: a channel closed after its reactor
// ended. What the call would have unregistered then stays registered
// until the ring closes with its last channel, holding a reference to
// the file or the pages of the buffer, no more.
func offThread(r *ring, err error) bool {
	return r.r.Deferred() && errors.Is(err, unix.EEXIST)
}

// channel is one device's I/O channel on a ring.
type channel struct {
	b         *backend
	ring      *ring
	fd, bufFd int32 // registered-file indexes when sqeFlags says so
	sqeFlags  uint8
	bs        uint64
	alignMask uintptr
	seen      uint64 // ring.polls after this channel's last Poll
	closed    bool
	// inline: reads and writes are done by the reactor with pread and
	// pwrite (see backend.inline).
	inline bool
	// eager: an I/O submitted while the ring is being polled (from a
	// completion callback) goes to the kernel at once, not with the
	// poll's one enter (see Config.Batch).
	eager bool

	// fallback[0] is set once Write Zeroes found FALLOC_FL_ZERO_RANGE
	// unsupported (tmpfs) and punches holes instead; fallback[1] once
	// Unmap found FALLOC_FL_PUNCH_HOLE unsupported (a block device without
	// discard) and zeroes instead. Either way the blocks read as zeroes.
	fallback [2]bool

	lastDMA *nvme.DMA // the arena of the last lookup, registered at lastIdx
	lastIdx uint16
	lastNo  *nvme.DMA // memory the last lookup found unregistered
}

func (c *channel) Submit(io *bdev.IO) error {
	r := c.ring
	n := len(r.free)
	if n == 0 {
		return bdev.ErrBusy
	}
	i := r.free[n-1]
	s := &r.slots[i]
	s.io, s.ch, s.done = io, c, 0
	if !c.prep(i, s) {
		s.io, s.ch = nil, nil
		return bdev.ErrBusy
	}
	r.free = r.free[:n-1]
	if c.eager && r.polling > 0 {
		// An error leaves the SQEs pending: the poll's own submit, once
		// the callbacks are done, fails them.
		r.submit(false)
	}
	return nil
}

// prep writes the SQE of slot i (from s.done on, for a read or write),
// or queues it for the next poll to do inline.
func (c *channel) prep(i uint32, s *slot) bool {
	io := s.io
	if c.inline && (io.Type == bdev.Read || io.Type == bdev.Write) {
		c.ring.inline = append(c.ring.inline, i)
		return true
	}
	sqe := c.ring.r.GetSQE()
	if sqe == nil {
		return false
	}
	sqe.UserData = uint64(i)
	sqe.Fd = c.fd
	sqe.Flags = c.sqeFlags
	switch io.Type {
	case bdev.Read, bdev.Write:
		buf := io.Buf
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(buf.Bytes))) + uintptr(s.done)
		sqe.Off = io.LBA*c.bs + s.done
		sqe.Addr = uint64(addr)
		sqe.Len = uint32(io.Count*c.bs - s.done)
		if addr&c.alignMask != 0 {
			sqe.Fd = c.bufFd // memory O_DIRECT cannot take
		}
		if idx, ok := c.bufIndex(buf.DMA); ok {
			sqe.Opcode = iu.OpReadFixed
			if io.Type == bdev.Write {
				sqe.Opcode = iu.OpWriteFixed
			}
			sqe.BufIndex = idx
		} else {
			sqe.Opcode = iu.OpRead
			if io.Type == bdev.Write {
				sqe.Opcode = iu.OpWrite
			}
		}
	case bdev.Flush:
		sqe.Opcode = iu.OpFsync
		sqe.OpFlags = iu.FsyncDatasync
	case bdev.WriteZeroes, bdev.Unmap:
		// fallocate takes the length in addr and the mode in len.
		sqe.Opcode = iu.OpFallocate
		sqe.Off = io.LBA * c.bs
		sqe.Addr = io.Count * c.bs
		sqe.Len = c.fallocMode(io.Type)
	default:
		sqe.Opcode = iu.OpNop // completes with the error below
		s.done = ^uint64(0)
	}
	return true
}

// bufIndex returns the registered-buffer index of arena memory d.
func (c *channel) bufIndex(d *nvme.DMA) (uint16, bool) {
	if d == c.lastDMA && d != nil {
		return c.lastIdx, true
	}
	return c.lookup(d)
}

// lookup is bufIndex off its one-entry cache: it finds d among the
// ring's registered arenas of this channel's device, or registers it if
// it is one of the device's arenas (once per arena and ring). A channel
// uses only its own device's registrations: they stay while it is open.
func (c *channel) lookup(d *nvme.DMA) (uint16, bool) {
	r := c.ring
	if d == nil || d == c.lastNo || !r.fixed {
		return 0, false
	}
	for i, e := range r.reg {
		if e.dma == d && e.b == c.b {
			c.lastDMA, c.lastIdx = d, uint16(i)
			return uint16(i), true
		}
	}
	if p := c.b.arenas.Load(); p != nil {
		for _, a := range *p {
			if &a.dma != d {
				continue
			}
			idx := len(r.reg)
			for i, e := range r.reg {
				if e.dma == nil {
					idx = i
					break
				}
			}
			if idx >= maxArenas {
				break
			}
			if err := r.r.UpdateBuffer(uint32(idx), a.dma.Buf); err != nil {
				// Out of lockable memory, say: this ring moves
				// everything with plain READ/WRITE from now on,
				// rather than trying again on every miss.
				r.fixed = false
				break
			}
			if idx == len(r.reg) {
				r.reg = append(r.reg, regBuf{})
			}
			r.reg[idx] = regBuf{dma: d, b: c.b}
			c.lastDMA, c.lastIdx = d, uint16(idx)
			return uint16(idx), true
		}
	}
	c.lastNo = d
	return 0, false
}

// fallocMode is the fallocate mode of a Write Zeroes or an Unmap.
func (c *channel) fallocMode(t bdev.IOType) uint32 {
	zero := t == bdev.WriteZeroes
	if c.fallback[t-bdev.WriteZeroes] {
		zero = !zero
	}
	if zero {
		return unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE
	}
	return unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
}

// ErrShort is the error of a read that found the end of the file before
// the I/O's end (the file shrank).
var ErrShort = errors.New("uring: short transfer at end of file")

// Poll reaps the ring's completions, whichever of its channels they
// belong to, and submits what was written since, unless another channel
// of the ring has polled it since this one last did: then that poll
// served this channel too. So when every channel of an owner polls once
// per reactor iteration, the ring costs one pass and at most one
// io_uring_enter per iteration, not one per device; a channel polled
// alone processes it on every call. It returns the ring's completions.
func (c *channel) Poll() int {
	r := c.ring
	if p := r.polls; c.seen != p {
		c.seen = p
		return 0
	}
	r.polls++
	c.seen = r.polls
	return r.poll()
}

func (r *ring) poll() int {
	r.polling++
	n := 0
	if r.r.Deferred() && len(r.free) < len(r.slots) && r.r.TaskRunPending() && r.r.Peek() == nil {
		// Completions the kernel holds until this thread asks: post
		// them (and submit what is written) with one enter. With CQEs
		// to reap already, the enter that submits their follow-ups
		// posts them, for the next poll.
		if _, err := r.r.GetEvents(); err != nil {
			r.failPending(err)
		}
	}
	// At most a ring's worth of CQEs per poll: eager submissions from
	// the callbacks post more as they go (an enter with GETEVENTS on a
	// deferred ring, or a read the kernel finished at once), and a poll
	// must end for the reactor's other pollers to run.
	for budget := len(r.slots); budget > 0 && !r.closeLater; budget-- {
		cqe := r.r.Peek()
		if cqe == nil {
			break
		}
		i, res := uint32(cqe.UserData), cqe.Res
		r.r.Advance()
		if i >= uint32(len(r.slots)) || r.slots[i].io == nil {
			continue // not ours: nothing else submits on this ring
		}
		if r.finish(i, res) {
			n++
		}
	}
	if len(r.inline) > 0 && !r.closeLater && r.polling == 1 {
		// The I/Os queued so far, callbacks' included; those the
		// callbacks of these queue go on the other half, for the next
		// poll, so that a poll ends. A poll from a callback leaves
		// them to the outer one.
		q := r.inline
		r.inline = r.spare[:0]
		for _, i := range q {
			if r.closeLater {
				break
			}
			s := &r.slots[i]
			if r.finish(i, s.ch.runInline(s)) {
				n++
			}
		}
		r.spare = q[:0]
	}
	// One enter for everything submitted since the last poll, the
	// callbacks' new I/Os included: they go out now rather than a
	// reactor round later.
	if !r.closeLater {
		r.submit(true)
	}
	r.polling--
	if r.polling == 0 && r.closeLater {
		r.close() // its last channel closed from a callback
	}
	return n
}

// submit hands the SQEs written since the last enter to the kernel. On
// an error it fails them if fail says so, and leaves them pending
// otherwise.
func (r *ring) submit(fail bool) {
	if r.r.Pending() == 0 {
		return
	}
	if onSubmit != nil {
		onSubmit(r.r.Pending())
	}
	if _, err := r.r.Submit(); err != nil && fail {
		r.failPending(err)
	}
}

// finish handles the result res of slot i's I/O: it completes the I/O,
// or continues it (the rest of a short transfer, a fallback) and reports
// false.
func (r *ring) finish(i uint32, res int32) bool {
	s := &r.slots[i]
	io, c := s.io, s.ch
	var err error
	switch {
	case s.done == ^uint64(0):
		err = errors.Wrapf(bdev.ErrUnsupported, "uring %s: %v", c.b.path, io.Type)
	case res == -int32(unix.EOPNOTSUPP) && (io.Type == bdev.WriteZeroes || io.Type == bdev.Unmap) && !c.fallback[io.Type-bdev.WriteZeroes]:
		c.fallback[io.Type-bdev.WriteZeroes] = true
		if c.prep(i, s) {
			return false
		}
		err = errors.Wrapf(iu.Errno(res), "uring %s: %v of blocks %d+%d", c.b.path, io.Type, io.LBA, io.Count)
	case res < 0:
		err = errors.Wrapf(iu.Errno(res), "uring %s: %v of blocks %d+%d", c.b.path, io.Type, io.LBA, io.Count)
	case io.Type == bdev.Read || io.Type == bdev.Write:
		s.done += uint64(res)
		if want := io.Count * c.bs; s.done < want {
			if res > 0 && c.prep(i, s) {
				return false // the rest of a short transfer
			}
			err = errors.Wrapf(ErrShort, "%s: %v of blocks %d+%d moved %d of %d bytes", c.b.path, io.Type, io.LBA, io.Count, s.done, want)
		}
	}
	s.io, s.ch = nil, nil
	r.free = append(r.free, i)
	io.Done(err)
	return true
}

// runInline does slot s's read or write (from s.done on) with one pread
// or pwrite, and returns what its CQE would hold: bytes moved, or a
// negative errno.
func (c *channel) runInline(s *slot) int32 {
	io := s.io
	p := unsafe.Add(unsafe.Pointer(unsafe.SliceData(io.Buf.Bytes)), s.done)
	b := unsafe.Slice((*byte)(p), io.Count*c.bs-s.done)
	off := int64(io.LBA*c.bs + s.done)
	fd := c.b.fd
	if uintptr(p)&c.alignMask != 0 {
		fd = c.b.bufFd
	}
	for {
		var n int
		var err error
		if io.Type == bdev.Read {
			n, err = unix.Pread(fd, b, off)
		} else {
			n, err = unix.Pwrite(fd, b, off)
		}
		switch en, _ := err.(unix.Errno); {
		case err == nil:
			return int32(n)
		case en == unix.EINTR:
			continue
		case en != 0:
			return -int32(en)
		default:
			return -int32(unix.EIO)
		}
	}
}

// onSubmit, when set (by tests), sees each batch Poll hands the kernel.
var onSubmit func(sqes uint32)

// failPending completes the I/Os whose SQEs the kernel refused to take.
func (r *ring) failPending(err error) {
	r.r.Drop(func(ud uint64) {
		i := uint32(ud)
		if i >= uint32(len(r.slots)) || r.slots[i].io == nil {
			return
		}
		s := &r.slots[i]
		io, c := s.io, s.ch
		s.io, s.ch = nil, nil
		r.free = append(r.free, i)
		io.Done(errors.Wrapf(err, "uring %s", c.b.path))
	})
}

// Close takes the channel off its ring: the device's registered buffers
// leave the ring with its last channel there, and the ring closes with
// its last channel.
func (c *channel) Close() error {
	if c.closed {
		return nil
	}
	r := c.ring
	for i := range r.slots {
		if s := &r.slots[i]; s.io != nil && s.ch == c {
			return errors.Errorf("uring %s: close a channel with I/Os in flight", c.b.path)
		}
	}
	c.closed = true
	registry.mu.Lock()
	r.refs--
	last := r.refs == 0
	if last {
		registry.open--
		if r.key.owner != nil {
			delete(registry.rings, r.key)
		}
	}
	registry.mu.Unlock()
	if last {
		if r.polling > 0 {
			r.closeLater = true
			return nil
		}
		return r.close()
	}
	var first error
	if u := r.users[c.b]; u != nil {
		u.refs--
	}
	if u := r.users[c.b]; u != nil && u.refs == 0 {
		delete(r.users, c.b)
		// Its descriptors leave the file table, which holds references
		// to the files of its own.
		if err := r.unregisterFile(u.fdIdx); err != nil {
			first = errors.Wrapf(err, "uring %s: unregister file", c.b.path)
		}
		if u.bufIdx != u.fdIdx {
			if err := r.unregisterFile(u.bufIdx); err != nil && first == nil {
				first = errors.Wrapf(err, "uring %s: unregister file", c.b.path)
			}
		}
		// The device's arenas are unmapped when it closes: unregister
		// them, so that the ring pins none of their pages.
		for i, e := range r.reg {
			if e.b == c.b {
				err := r.r.UpdateBuffer(uint32(i), nil)
				if err != nil && offThread(r, err) {
					continue // the slot stays taken until the ring closes
				}
				if err != nil && first == nil {
					first = errors.Wrapf(err, "uring %s: unregister buffer", c.b.path)
				}
				r.reg[i] = regBuf{}
			}
		}
	}
	return first
}

var _ bdev.OwnedBackend = (*backend)(nil)
