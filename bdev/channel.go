package bdev

import (
	"math/bits"
	"reflect"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/pkg/errors"
)

// IO is one pooled I/O object. The channel owns it: the completion callback
// may read it, but must not keep it after returning.
type IO struct {
	// The fields a read or write of the fast path touches, on submission
	// and on completion, fill the first cache line (through ch).
	// Everything else comes after.

	// Type, LBA and Count describe the I/O; SrcLBA is the source of a Copy.
	Type  IOType
	LBA   uint64
	Count uint64
	// Buf is the data of a read or write: the caller's Buffer, or a piece
	// of it for a split I/O; nil for other types.
	Buf *Buffer
	// Arg is the caller's argument, handed back in the callback.
	Arg any

	cb func(*IO)
	ch *Channel

	parent *IO // the I/O this one is a piece of, if it was split
	next   *IO // retry queue or backend completion list link
	err    error

	SrcLBA uint64

	// Splitting: a parent issues children of at most maxBlocks each.
	splitNext uint64 // next LBA a child will cover
	inFlight  int    // children in flight
	part      Buffer // a child's piece of its parent's buffer

	// The completion of a tagged I/O (ReadTagged, WriteTagged) that needed
	// an IO: it was split, waited for a retry or failed. comp is nil in
	// the pool and for I/Os with a callback.
	comp Completer
	tag  uint64

	child bool // from the pool of split pieces

	// IO is 192 bytes, three cache lines on 64-bit platforms, so that each
	// IO of the pool, allocated on its own, starts on a line and its
	// fast-path fields share that line. TestIOLayout checks both.
}

// Completer receives the completion of an I/O submitted with ReadTagged or
// WriteTagged: Complete(tag, result, err) runs from Poll on the channel's
// goroutine, exactly once per I/O. tag is the caller's, result the
// device's completion dwords (NVMe CQE DW0 | DW1<<32; 0 for other modules
// and for split I/Os), err nil or the I/O's error. It is nvme.Completer, so
// that an NVMe bdev hands it to its queue pair as it is and the completion
// reaches the caller straight from the driver. Implement it on a
// long-lived object: passing a pointer as a Completer does not allocate.
type Completer = nvme.Completer

// Err returns the I/O's result: nil on success.
func (io *IO) Err() error { return io.err }

// Channel returns the channel the I/O was submitted on: a callback that
// starts the next I/O can use it without a lookup of its own.
func (io *IO) Channel() *Channel { return io.ch }

// Done completes the I/O with err. Backends call it from Poll, exactly once
// per submitted I/O. (The NVMe module's nvmeIO.Complete does the common case,
// a whole I/O that succeeded, itself.)
func (io *IO) Done(err error) {
	ch := io.ch
	if p := io.parent; p != nil {
		ch.childDone(p, io, err)
		return
	}
	io.err = err
	ch.complete(io)
}

// splitWindow is the number of children a split I/O keeps in flight.
const splitWindow = 4

// Owner is the thread of execution that channels belong to: normally a
// *poller.Reactor, which satisfies it. Channels of one owner share what
// their backend keeps per thread — the channels of NVMe bdevs share one
// I/O queue pair per controller, whatever the number of namespaces — so an
// owner's channels must all be made and used on the owner's goroutine:
// OnReactor reports whether the caller runs there, and NewChannelOn
// refuses to make a channel elsewhere. An Owner is compared as a map key:
// use a pointer.
type Owner interface {
	// OnReactor reports whether the calling goroutine is the owner's.
	OnReactor() bool
}

// OwnedBackend is a Backend whose channels of one owner share what the
// backend keeps per thread (the io_uring module: one ring per owner for
// all its devices). NewChannelOn uses its NewChannelOn; NewChannel, with
// no owner, uses NewChannel, which shares nothing.
type OwnedBackend interface {
	Backend
	// NewChannelOn returns an I/O channel of owner with room for depth
	// I/Os in flight, like NewChannel. It is called on owner's goroutine,
	// and the channel is used there only.
	NewChannelOn(owner Owner, depth int) (BackendChannel, error)
}

// Channel is a per-goroutine I/O channel of a descriptor: it owns a pool of I/O
// objects and the backend's channel (for NVMe, a queue pair it shares with
// the other channels of its owner on the same controller). Use it from
// one goroutine only — normally a reactor, from its pollers and messages.
// Nothing on its I/O path allocates or locks.
type Channel struct {
	desc       *Desc
	backend    BackendChannel
	nvmeCh     *nvmeChannel    // backend when it is an NVMe queue pair: a direct call
	qp         *nvme.QueuePair // nvmeCh's queue pair while the fast path is on, else nil
	ns         *nvme.Namespace // nvmeCh's namespace
	sq         *sharedQP       // nvmeCh's queue pair and its other channels
	blockSize  int
	blockShift uint8 // log2(blockSize)
	numBlocks  uint64
	maxBlocks  uint64 // largest child in blocks; 0 = no split
	types      IOTypes

	free      []*IO // stack of idle IOs; the last one is the most recently used
	freeChild []*IO // stack of idle IOs for split pieces
	retryHead *IO   // I/Os the backend refused with ErrBusy, oldest first
	retryTail *IO
	retries   int             // I/Os in the retry queue
	splitting int             // split parents in flight: out of the pool, not submitted
	callbacks int             // callbacks running from complete
	writable  bool            // the descriptor is read-write
	closed    bool            // no new I/O
	released  bool            // the backend channel is closed
	primary   bool            // sq's primary channel: fast paths, counted from the queue pair
	polling   bool            // Poll is running the backend's completions
	seen      uint64          // sq.polls after this channel's last Poll
	ios       int             // IOs of both pools
	cqp       *nvme.QueuePair // sq's queue pair for a channel but the primary, while its counted path is on, else nil

	// Channel is 256 bytes, a size class of its own, so that no object
	// of another core shares its cache lines. TestChannelLayout checks it.
	_ [40]byte
}

// ioStack returns a stack of n IOs (len n) whose array fills cache lines
// of its own: the pool's push and pop write it on every I/O. Up to 64
// pointers, a power of two of at least 64 bytes is an allocator size
// class whose objects start on a line; above 512 bytes every size class is
// a multiple of 64 bytes (an array of pointers there starts behind the
// allocator's 8-byte header, in the object's first line).
func ioStack(n int) []*IO {
	c := 8
	for c < n && c < 64 {
		c *= 2
	}
	return make([]*IO, n, max(c, n))
}

// NewChannel makes an I/O channel for depth I/Os in flight that shares
// nothing with other channels: on an NVMe bdev it has a queue pair of its
// own. It is NewChannelOn for an owner of its own; code that runs on a
// reactor uses NewChannelOn with the reactor, which takes one queue pair
// per controller for all of the reactor's channels.
func (d *Desc) NewChannel(depth int) (*Channel, error) {
	return d.newChannel(nil, depth)
}

// NewChannelOn makes an I/O channel of owner for depth I/Os in flight. It
// must be called on owner's goroutine, and the channel used there only.
//
// Its pool holds depth+1 I/O objects, so that a completion callback can
// start the next I/O while its own object is still in use; past that,
// Read, Write and the rest return ErrNoIO until an I/O completes. An I/O
// larger than the bdev's MaxTransfer is split into pieces, up to
// splitWindow of them in flight, from a pool of their own.
//
// On an NVMe bdev the channel uses the queue pair that owner's channels
// share on the namespace's controller, and creates it if owner has none
// (with room for at least 256 commands, or depth plus split pieces if
// that is more); the last of them to close deletes it. A controller with
// no queue pair left fails the call with an error that names the
// controller, the queue pairs it has and how many bdev channels ask for.
// The first channel on a queue pair, and after it closes the oldest
// remaining, takes the fast paths of Read, Write and their tagged forms;
// the others' reads and writes take an IO each, like the other I/O types.
// A backend that is an OwnedBackend makes the channel with its
// NewChannelOn (the io_uring module: on owner's ring).
func (d *Desc) NewChannelOn(owner Owner, depth int) (*Channel, error) {
	if owner == nil {
		return nil, errors.Errorf("bdev %s: new channel: nil owner", d.bdev.info.Name)
	}
	if !reflect.TypeOf(owner).Comparable() {
		return nil, errors.Errorf("bdev %s: new channel: owner of type %T is not comparable (use a pointer)", d.bdev.info.Name, owner)
	}
	if !owner.OnReactor() {
		return nil, errors.Errorf("bdev %s: new channel: called off its owner's goroutine", d.bdev.info.Name)
	}
	return d.newChannel(owner, depth)
}

// newChannel is NewChannel (owner nil) and NewChannelOn.
func (d *Desc) newChannel(owner Owner, depth int) (*Channel, error) {
	if depth < 1 {
		return nil, errors.Errorf("bdev %s: channel depth %d", d.bdev.info.Name, depth)
	}
	info := d.bdev.info
	// The backend's queue has room for a full pool plus the pieces of one
	// split I/O; pieces of more wait their turn (ErrBusy, then a retry
	// from Poll). A larger device queue would only spread the same I/Os
	// over more memory.
	backendDepth := depth + 1
	if info.MaxTransfer > 0 {
		backendDepth += splitWindow
	}
	var bc BackendChannel
	var nc *nvmeChannel
	var sq *sharedQP
	var err error
	if nb, ok := d.bdev.backend.(*nvmeBackend); ok {
		nc, sq, err = nb.join(owner, backendDepth)
		bc = nc
	} else if ob, ok := d.bdev.backend.(OwnedBackend); ok && owner != nil {
		bc, err = ob.NewChannelOn(owner, backendDepth)
	} else {
		bc, err = d.bdev.backend.NewChannel(backendDepth)
	}
	if err != nil {
		return nil, errors.Wrapf(err, "bdev %s: new channel", info.Name)
	}
	var ns *nvme.Namespace
	if nc != nil {
		ns = nc.ns
	}
	ch := &Channel{
		desc:       d,
		backend:    bc,
		nvmeCh:     nc,
		ns:         ns,
		sq:         sq,
		blockSize:  info.BlockSize,
		blockShift: uint8(bits.TrailingZeros(uint(info.BlockSize))),
		numBlocks:  info.NumBlocks,
		types:      info.IOTypes,
		writable:   d.write,
	}
	children := 0
	if info.MaxTransfer > 0 {
		// No larger than the bdev, which lets the fast path test the range
		// with one subtraction.
		ch.maxBlocks = min(uint64(info.MaxTransfer/info.BlockSize), info.NumBlocks)
		children = depth * splitWindow
	}
	// One allocation per IO: a small object of a size class that is a
	// multiple of 64 starts on a cache line, where an element of a larger
	// array would not (the runtime puts a header in front of it).
	ch.free = ioStack(depth + 1)
	for i := range ch.free {
		ch.free[i] = &IO{ch: ch}
	}
	ch.freeChild = ioStack(children)
	ch.ios = len(ch.free) + len(ch.freeChild)
	for i := range ch.freeChild {
		ch.freeChild[i] = &IO{ch: ch, child: true}
	}
	if sq != nil {
		sq.add(ch)
		if ch.primary {
			ch.qp = sq.qp // the fast path is on
		} else {
			ch.cqp = sq.qp // the counted path is on
		}
	}
	return ch, nil
}

// Bdev returns the channel's bdev.
func (ch *Channel) Bdev() *Bdev { return ch.desc.bdev }

// Outstanding returns the number of I/Os submitted and not yet completed: an
// I/O counts until its callback or Completer starts to run, and a split I/O
// counts the pieces it has in flight.
func (ch *Channel) Outstanding() int {
	// Counted without a counter on the fast paths. On an NVMe bdev every
	// I/O or piece in flight holds a command of the queue pair (a tagged
	// I/O holds nothing else) or waits in the retry queue: the primary
	// channel's commands are the queue pair's less the other channels'.
	if ch.primary {
		return ch.sq.qp.Outstanding() - ch.sq.others(ch) + ch.retries
	}
	// Elsewhere every IO out of the pool is in flight, waits for a retry
	// or runs its callback, but for the split parents themselves.
	return ch.ios - len(ch.free) - len(ch.freeChild) - ch.splitting - ch.callbacks
}

// cmds returns the commands a channel that is not its queue pair's primary
// has in the queue pair: its I/Os in flight but those in the retry queue.
// (Each IO in flight holds one command: the bdev cuts I/Os to the
// controller's transfer limit, and a callback runs after its command's
// slot is free, as callbacks counts.)
func (ch *Channel) cmds() int {
	return ch.ios - len(ch.free) - len(ch.freeChild) - ch.splitting - ch.callbacks - ch.retries
}

// get takes an IO for a new I/O from the pool, or returns nil.
func (ch *Channel) get() *IO { return pop(&ch.free) }

// getChild takes an IO for a split piece, or returns nil.
func (ch *Channel) getChild() *IO { return pop(&ch.freeChild) }

// pop takes the IO on top of stack, or returns nil.
func pop(stack *[]*IO) *IO {
	n := len(*stack) - 1
	if n < 0 {
		return nil
	}
	io := (*stack)[n]
	*stack = (*stack)[:n]
	return io
}

// put returns io to the pool. Fields are overwritten by the next submission;
// only the links that the pool and the splitter test are reset here.
func (ch *Channel) put(io *IO) {
	if io.parent != nil {
		io.parent = nil
	}
	if io.err != nil {
		io.err = nil
	}
	if io.comp != nil {
		io.comp = nil
	}
	// Neither stack grows: each has room for every IO of its pool.
	if io.child {
		ch.freeChild = append(ch.freeChild, io)
	} else {
		ch.free = append(ch.free, io)
	}
}

// Read reads count blocks at lba into buf; cb(io) runs from Poll when done.
// The channel keeps buf (the pointer, not a copy) until the callback
// returns: neither the Buffer nor its memory may change before that.
func (ch *Channel) Read(buf *Buffer, lba, count uint64, cb func(*IO), arg any) error {
	return ch.readWrite(Read, buf, lba, count, cb, arg)
}

// Write writes count blocks from buf at lba, under the rules of Read.
func (ch *Channel) Write(buf *Buffer, lba, count uint64, cb func(*IO), arg any) error {
	return ch.readWrite(Write, buf, lba, count, cb, arg)
}

// ReadTagged reads count blocks at lba into buf under the rules of Read,
// and calls c.Complete(tag, result, err) from Poll when done (c may be
// nil). On an NVMe bdev a read or write that needs one command, the common
// case, takes no IO: the channel checks it and hands it to the queue pair
// with c as the command's completer, so that neither submission nor
// completion has anything else to do. Such an I/O that the queue pair
// refuses is not queued: a full queue returns ErrNoIO (poll, then submit
// again), a controller that is closed, resetting or failed its error. It
// is the form for I/Os that are many and small; Read is the simpler one.
func (ch *Channel) ReadTagged(buf *Buffer, lba, count uint64, c Completer, tag uint64) error {
	return ch.readWriteTagged(Read, buf, lba, count, c, tag)
}

// WriteTagged writes count blocks from buf at lba, under the rules of
// ReadTagged.
func (ch *Channel) WriteTagged(buf *Buffer, lba, count uint64, c Completer, tag uint64) error {
	return ch.readWriteTagged(Write, buf, lba, count, c, tag)
}

// fast reports whether a read or write can take the fast path: an NVMe
// namespace, DMA memory, one command. qp is nil while I/Os wait for a
// retry (they go first) and once the channel is closed; count-1 wraps for
// a count of 0, and count <= maxBlocks <= numBlocks. It inlines, and a
// bool keeps the branches of the caller as direct as if the test were
// written there.
func (ch *Channel) fast(t IOType, buf *Buffer, lba, count uint64) bool {
	return ch.qp != nil && (t == Read || ch.writable) && buf != nil && buf.DMA != nil &&
		count-1 < ch.maxBlocks && lba <= ch.numBlocks-count &&
		count <= uint64(len(buf.Bytes))>>(ch.blockShift&63)
}

// readWrite is Read and Write. They inline to a call of it, so the fast
// path costs one call frame.
func (ch *Channel) readWrite(t IOType, buf *Buffer, lba, count uint64, cb func(*IO), arg any) error {
	if ch.fast(t, buf, lba, count) && len(ch.free) > 0 {
		qp := ch.qp
		io := ch.free[len(ch.free)-1]
		ch.free = ch.free[:len(ch.free)-1]
		io.Type, io.LBA, io.Count, io.Buf, io.cb, io.Arg = t, lba, count, buf, cb, arg
		var err error
		if t == Read {
			err = qp.ReadOne(ch.ns, lba, uint32(count), buf.DMA, buf.Off, (*nvmeIO)(io), 0)
		} else {
			err = qp.WriteOne(ch.ns, lba, uint32(count), buf.DMA, buf.Off, (*nvmeIO)(io), 0)
		}
		if err != nil {
			ch.nvmeRefused(io, err)
		}
		return nil
	}
	return ch.rw(t, buf, lba, count, cb, arg, nil, 0)
}

// readWriteTagged is ReadTagged and WriteTagged, as readWrite is Read and
// Write.
func (ch *Channel) readWriteTagged(t IOType, buf *Buffer, lba, count uint64, c Completer, tag uint64) error {
	if ch.fast(t, buf, lba, count) {
		// A refusal is returned, not queued: queueing would need the
		// arguments after the call, and keeping them costs every I/O
		// more than the rest of this function.
		var err error
		if t == Read {
			err = ch.qp.ReadOne(ch.ns, lba, uint32(count), buf.DMA, buf.Off, c, tag)
		} else {
			err = ch.qp.WriteOne(ch.ns, lba, uint32(count), buf.DMA, buf.Off, c, tag)
		}
		if err != nil {
			return refusedTagged(err)
		}
		return nil
	}
	return ch.rw(t, buf, lba, count, nil, nil, c, tag)
}

// refusedTagged is the error of a tagged I/O the queue pair refused: a
// full queue is ErrNoIO, back-pressure like an empty pool.
func refusedTagged(err error) error {
	if errors.Is(err, nvme.ErrQueueFull) {
		return ErrNoIO
	}
	return err
}

// rw is the four of them for everything but their fast path: other
// modules, plain memory, transfers to split, and I/Os that fail. It
// starts with the counted path, the reads and writes of an NVMe channel
// that is not its queue pair's primary under the tests of fast: the I/O
// takes an IO, which keeps the channel's count of commands (see
// sharedQP), and goes to the queue pair as one command, completing
// through nvmeDoneIO (callback) or nvmeCountedIO (Completer); a full
// queue queues it for a retry. The I/O
// completes to cb and arg, or to c and tag if c is not nil. (Its
// arguments are the callers' own, passed on: none stays live across a
// call in the callers.)
func (ch *Channel) rw(t IOType, buf *Buffer, lba, count uint64, cb func(*IO), arg any, c Completer, tag uint64) error {
	if ch.cqp != nil && (t == Read || ch.writable) && buf != nil && buf.DMA != nil &&
		count-1 < ch.maxBlocks && lba <= ch.numBlocks-count &&
		count <= uint64(len(buf.Bytes))>>(ch.blockShift&63) {
		// The counted path, written out here: a call less per I/O.
		io := ch.get()
		if io == nil {
			return ErrNoIO
		}
		io.Type, io.LBA, io.Count, io.Buf, io.cb, io.Arg, io.comp, io.tag = t, lba, count, buf, cb, arg, c, tag
		var comp nvme.Completer = (*nvmeDoneIO)(io)
		if c != nil {
			comp = (*nvmeCountedIO)(io)
		}
		var err error
		if t == Read {
			err = ch.cqp.ReadOne(ch.ns, lba, uint32(count), buf.DMA, buf.Off, comp, 0)
		} else {
			err = ch.cqp.WriteOne(ch.ns, lba, uint32(count), buf.DMA, buf.Off, comp, 0)
		}
		if err != nil {
			ch.nvmeRefused(io, err)
		}
		return nil
	}
	if err := ch.check(t, lba, count); err != nil {
		return err
	}
	if buf == nil {
		return errors.Errorf("%s: %v without a buffer", ch.desc.bdev.info.Name, t)
	}
	if need := count * uint64(ch.blockSize); uint64(len(buf.Bytes)) < need {
		return errors.Errorf("%s: %v of %d blocks needs %d bytes, buffer has %d", ch.desc.bdev.info.Name, t, count, need, len(buf.Bytes))
	}
	io := ch.get()
	if io == nil {
		return ErrNoIO
	}
	io.Type, io.LBA, io.Count, io.Buf, io.cb, io.Arg, io.comp, io.tag = t, lba, count, buf, cb, arg, c, tag
	return ch.issue(io)
}

// check validates an I/O of any type against the channel and the bdev.
func (ch *Channel) check(t IOType, lba, count uint64) error {
	if ch.closed {
		return ErrClosed
	}
	if !ch.types.Has(t) {
		return errors.Wrapf(ErrUnsupported, "%s: %v", ch.desc.bdev.info.Name, t)
	}
	if t != Read && !ch.writable {
		return errors.Wrapf(ErrReadOnly, "%s: %v", ch.desc.bdev.info.Name, t)
	}
	if t != Flush {
		if count == 0 || lba >= ch.numBlocks || count > ch.numBlocks-lba {
			return errors.Wrapf(ErrOutOfRange, "%s: %v of blocks %d+%d on a bdev of %d blocks", ch.desc.bdev.info.Name, t, lba, count, ch.numBlocks)
		}
	}
	return nil
}

// issue starts io, splitting it if it is larger than the backend takes.
func (ch *Channel) issue(io *IO) error {
	if io.Count > ch.maxBlocks && ch.maxBlocks > 0 {
		return ch.split(io)
	}
	ch.start(io)
	return nil
}

// Flush makes previously completed writes durable.
func (ch *Channel) Flush(cb func(*IO), arg any) error {
	return ch.submit(Flush, 0, 0, 0, cb, arg, nil, 0)
}

// WriteZeroes zeroes count blocks at lba without moving data.
func (ch *Channel) WriteZeroes(lba, count uint64, cb func(*IO), arg any) error {
	return ch.submit(WriteZeroes, lba, count, 0, cb, arg, nil, 0)
}

// Unmap deallocates count blocks at lba (NVMe Dataset Management).
func (ch *Channel) Unmap(lba, count uint64, cb func(*IO), arg any) error {
	return ch.submit(Unmap, lba, count, 0, cb, arg, nil, 0)
}

// Copy copies count blocks from src to dst within the bdev.
func (ch *Channel) Copy(dst, src, count uint64, cb func(*IO), arg any) error {
	return ch.copy(dst, src, count, cb, arg, nil, 0)
}

// FlushTagged is Flush, completing to c.Complete(tag, result, err) as
// ReadTagged does. It takes an IO from the pool like every I/O but tagged
// reads and writes.
func (ch *Channel) FlushTagged(c Completer, tag uint64) error {
	return ch.submit(Flush, 0, 0, 0, nil, nil, c, tag)
}

// WriteZeroesTagged is WriteZeroes under the rules of FlushTagged.
func (ch *Channel) WriteZeroesTagged(lba, count uint64, c Completer, tag uint64) error {
	return ch.submit(WriteZeroes, lba, count, 0, nil, nil, c, tag)
}

// UnmapTagged is Unmap under the rules of FlushTagged.
func (ch *Channel) UnmapTagged(lba, count uint64, c Completer, tag uint64) error {
	return ch.submit(Unmap, lba, count, 0, nil, nil, c, tag)
}

// CopyTagged is Copy under the rules of FlushTagged.
func (ch *Channel) CopyTagged(dst, src, count uint64, c Completer, tag uint64) error {
	return ch.copy(dst, src, count, nil, nil, c, tag)
}

func (ch *Channel) copy(dst, src, count uint64, cb func(*IO), arg any, c Completer, tag uint64) error {
	if src >= ch.numBlocks || count > ch.numBlocks-src {
		return errors.Wrapf(ErrOutOfRange, "%s: copy source %d+%d of %d blocks", ch.desc.bdev.info.Name, src, count, ch.numBlocks)
	}
	return ch.submit(Copy, dst, count, src, cb, arg, c, tag)
}

// submit starts an I/O of a type without data. It completes to cb and
// arg, or to c and tag if c is not nil.
func (ch *Channel) submit(t IOType, lba, count, src uint64, cb func(*IO), arg any, c Completer, tag uint64) error {
	if err := ch.check(t, lba, count); err != nil {
		return err
	}
	io := ch.get()
	if io == nil {
		return ErrNoIO
	}
	io.Type, io.Buf, io.LBA, io.Count, io.SrcLBA, io.cb, io.Arg, io.comp, io.tag = t, nil, lba, count, src, cb, arg, c, tag
	if t == Copy {
		return ch.issue(io)
	}
	ch.start(io)
	return nil
}

// start hands io to the backend, queueing it for a retry if the device queue
// is full, or completing it with the error the backend gave.
func (ch *Channel) start(io *IO) {
	if ch.retryHead != nil {
		// Behind the I/Os that wait, so that none waits forever.
		ch.enqueueRetry(io)
		return
	}
	var err error
	if ch.nvmeCh != nil {
		err = ch.nvmeCh.Submit(io)
	} else {
		err = ch.backend.Submit(io)
	}
	if err != nil {
		ch.refused(io, err)
	}
}

// nvmeRefused handles an NVMe queue pair's refusal of io.
func (ch *Channel) nvmeRefused(io *IO, err error) {
	if errors.Is(err, nvme.ErrQueueFull) {
		err = ErrBusy
	}
	ch.refused(io, err)
}

// refused queues io for a retry if the backend said ErrBusy, or to complete
// with err on the next Poll, so callbacks never run inside Submit.
func (ch *Channel) refused(io *IO, err error) {
	if !errors.Is(err, ErrBusy) {
		io.err = err // Poll completes it: see there
	}
	ch.enqueueRetry(io)
}

// split issues the children of a large I/O, up to splitWindow at a time; each
// completed child is reused for the next piece.
func (ch *Channel) split(p *IO) error {
	ch.splitting++
	p.splitNext = p.LBA
	for p.inFlight < splitWindow && p.splitNext < p.LBA+p.Count {
		c := ch.getChild()
		if c == nil {
			break
		}
		ch.issueChild(p, c)
	}
	if p.inFlight == 0 {
		ch.splitting--
		ch.put(p)
		return ErrNoIO
	}
	return nil
}

func (ch *Channel) issueChild(p, c *IO) {
	n := min(ch.maxBlocks, p.LBA+p.Count-p.splitNext)
	off := (p.splitNext - p.LBA) * uint64(ch.blockSize)
	c.Type, c.LBA, c.Count, c.parent = p.Type, p.splitNext, n, p
	if p.Type == Copy {
		c.SrcLBA = p.SrcLBA + (p.splitNext - p.LBA)
	} else {
		c.part = p.Buf.Slice(int(off), int(n)*ch.blockSize)
		c.Buf = &c.part
	}
	p.splitNext += n
	p.inFlight++
	ch.start(c)
}

func (ch *Channel) childDone(p, c *IO, err error) {
	p.inFlight--
	if err != nil && p.err == nil {
		p.err = err
	}
	if p.err == nil && p.splitNext < p.LBA+p.Count {
		c.err = nil
		ch.issueChild(p, c)
		return
	}
	ch.put(c)
	if p.inFlight == 0 {
		ch.splitting--
		ch.complete(p)
	}
}

// complete runs io's callback or Completer and puts io back in the pool.
// A Completer runs after the put: it has no use for io, and may start the
// next I/O with it.
func (ch *Channel) complete(io *IO) {
	if c := io.comp; c != nil {
		tag, err := io.tag, io.err
		ch.put(io)
		c.Complete(tag, 0, err)
		return
	}
	if cb := io.cb; cb != nil {
		ch.callbacks++
		cb(io)
		ch.callbacks--
	}
	ch.put(io)
}

// enqueueRetry appends io to the queue that Poll works through: I/Os to
// resubmit, and refused ones to complete.
func (ch *Channel) enqueueRetry(io *IO) {
	ch.qp, ch.cqp = nil, nil // the fast and counted paths are off until the queue is empty
	ch.retries++
	io.next = nil
	if ch.retryTail == nil {
		ch.retryHead = io
	} else {
		ch.retryTail.next = io
	}
	ch.retryTail = io
}

// Poll reaps completions from the backend, runs their callbacks, and retries
// I/Os that found the device queue full. It returns the number of I/Os
// completed. On an NVMe bdev it reaps the queue pair the channel shares
// with its owner's other channels on the controller: the completions of
// all of them, counted in what it returns, unless another of them has
// polled the queue pair since this channel last did (see sharedQP.poll).
func (ch *Channel) Poll() int {
	var n int
	if sq := ch.sq; sq != nil {
		// sharedQP.poll, written out: a call less per Poll.
		if p := sq.polls; ch.seen == p {
			sq.polls = p + 1
			ch.seen = p + 1
			n = sq.qp.Process(0)
		} else {
			ch.seen = p
		}
	} else {
		ch.polling = true
		n = ch.backend.Poll()
		ch.polling = false
	}
	if ch.retryHead != nil {
		n += ch.retry()
	}
	return n
}

// retry works through the retry queue, and turns the fast path on again
// once it is empty. It returns the number of I/Os it completed. The fast
// path is off only while the queue holds I/Os (enqueueRetry turns it off)
// and once the channel is closed, so Poll has nothing to do when the queue
// is empty.
func (ch *Channel) retry() int {
	n := 0
	// Retry the queued I/Os in order; stop at the first that is still refused.
	for ch.retryHead != nil {
		io := ch.retryHead
		ch.retryHead = io.next
		if ch.retryHead == nil {
			ch.retryTail = nil
		}
		io.next = nil
		ch.retries--
		if io.err != nil {
			// Refused outright. Queued I/Os otherwise have no error: a
			// pooled I/O starts without one, and a split child is reused
			// only after its error is cleared.
			n++
			io.Done(io.err)
			continue
		}
		err := ch.backend.Submit(io)
		if err == nil {
			continue
		}
		if errors.Is(err, ErrBusy) {
			io.next = ch.retryHead
			ch.retryHead = io
			if ch.retryTail == nil {
				ch.retryTail = io
			}
			ch.retries++
			break
		}
		n++
		io.Done(err)
	}
	if ch.retryHead == nil && ch.sq != nil && !ch.closed {
		if ch.primary {
			ch.qp = ch.sq.qp // the fast path is on again
		} else {
			ch.cqp = ch.sq.qp // the counted path is on again
		}
	}
	return n
}

// closeTimeout bounds how long Close waits for I/Os in flight. The NVMe
// driver ends every command within its I/O timeout, an abort and a reset;
// this is a backstop for a device that a reset does not bring back.
const closeTimeout = 30 * time.Second

// Close closes the channel. It takes no more I/O, then waits for the I/Os
// in flight: it polls the backend until they have completed (their
// callbacks and Completers run from Close; an I/O they submit fails with
// ErrClosed) and releases the channel's share of the backend — on an NVMe
// bdev, the queue pair with its last channel. Once Close has returned nil,
// nothing of the channel runs again.
//
// Called from a completion of the channel's backend (its callback, or a
// callback of another channel on the same NVMe queue pair) while I/Os are
// in flight, it cannot wait, and fails without changing anything. If the
// I/Os do not complete within 30 s it fails too: the channel takes no new
// I/O but keeps what its I/Os use, and Close may be called again.
func (ch *Channel) Close() error {
	if ch.released {
		return nil
	}
	name := ch.desc.bdev.info.Name
	if n := ch.Outstanding(); n > 0 && ch.inCompletion() {
		return errors.Errorf("bdev %s: close channel from a completion with %d I/Os in flight", name, n)
	}
	ch.closed = true
	ch.qp, ch.cqp = nil, nil // off the fast and counted paths
	if err := ch.drain(); err != nil {
		return errors.Wrapf(err, "bdev %s: close channel", name)
	}
	ch.released = true
	var err error
	if sq := ch.sq; sq != nil {
		err = sq.leave(ch)
	} else {
		err = ch.backend.Close()
	}
	return errors.Wrapf(err, "bdev %s: close channel", name)
}

// inCompletion reports whether the caller runs inside a completion of the
// channel's backend, where polling it again would not reap.
func (ch *Channel) inCompletion() bool {
	if ch.sq != nil {
		return ch.sq.qp.Processing()
	}
	return ch.polling || ch.callbacks > 0
}

// drain polls the backend until no I/O of the channel is in flight, or
// closeTimeout has passed.
func (ch *Channel) drain() error {
	var deadline time.Time
	for i := 0; ; i++ {
		n := ch.Outstanding()
		if n == 0 {
			return nil
		}
		var done int
		if sq := ch.sq; sq != nil {
			done = sq.qp.Process(0)
		} else {
			ch.polling = true
			done = ch.backend.Poll()
			ch.polling = false
		}
		if ch.retryHead != nil {
			done += ch.retry()
		}
		if done > 0 {
			continue
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(closeTimeout)
		}
		if i&255 == 255 {
			if time.Now().After(deadline) {
				return errors.Errorf("%d I/Os still in flight after %v", n, closeTimeout)
			}
			time.Sleep(10 * time.Microsecond)
		}
	}
}
