package bdev

import (
	"fmt"
	"sync"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/pkg/errors"
)

// NewNVMe makes a bdev of an NVM namespace of an initialised controller. The
// bdev's channels are queue pairs of c; the caller keeps ownership of c and
// closes it after the bdev.
func NewNVMe(name string, c *nvme.Controller, ns *nvme.Namespace) (*Bdev, error) {
	if ns == nil || ns.CSI != nvme.CSINVM || ns.BlockSize == 0 {
		return nil, errors.Errorf("nvme bdev %s: not an NVM namespace", name)
	}
	types := Types(Read, Write, Flush)
	if c.Supports(nvme.OpWriteZeroes) {
		types |= Types(WriteZeroes)
	}
	if c.Supports(nvme.OpDSM) {
		types |= Types(Unmap)
	}
	if c.Supports(nvme.OpCopy) {
		types |= Types(Copy)
	}
	return New(Info{
		Name:        name,
		Product:     fmt.Sprintf("NVMe namespace %d of %s", ns.ID, c.Name()),
		BlockSize:   int(ns.BlockSize),
		NumBlocks:   ns.Blocks,
		MaxTransfer: c.MaxTransfer(),
		IOTypes:     types,
		NSID:        ns.ID,
	}, &nvmeBackend{c: c, ns: ns})
}

// NVMeNamespace returns the controller and namespace behind an NVMe bdev, or
// nils for a bdev of another module.
func NVMeNamespace(b *Bdev) (*nvme.Controller, *nvme.Namespace) {
	if nb, ok := b.backend.(*nvmeBackend); ok {
		return nb.c, nb.ns
	}
	return nil, nil
}

type nvmeBackend struct {
	c  *nvme.Controller
	ns *nvme.Namespace
}

// NewChannel is the Backend method: a channel on a queue pair of its own,
// closed with it. Desc.NewChannel and Desc.NewChannelOn do not use it; they
// call join.
func (b *nvmeBackend) NewChannel(depth int) (BackendChannel, error) {
	// Plus the slot a full NVMe queue always keeps empty.
	qp, err := b.c.NewQueuePair(depth + 1)
	if err != nil {
		return nil, err
	}
	return &nvmeChannel{qp: qp, ns: b.ns, private: true}, nil
}

// join returns a channel of the namespace on the queue pair that owner
// shares for b's controller, creating the queue pair if owner has none. A
// nil owner stands for a private one: the channel gets a queue pair of its
// own, of depth entries (plus the slot a full NVMe queue keeps empty). A
// shared queue pair has at least sharedQueueEntries.
func (b *nvmeBackend) join(owner Owner, depth int) (*nvmeChannel, *sharedQP, error) {
	entries := depth + 1
	if owner == nil {
		owner = new(privateOwner)
	} else {
		entries = max(entries, sharedQueueEntries)
	}
	key := qpKey{c: b.c, owner: owner}
	qpRegistry.mu.Lock()
	sq := qpRegistry.qps[key]
	if sq != nil {
		sq.refs++
		qpRegistry.mu.Unlock()
		return &nvmeChannel{qp: sq.qp, ns: b.ns}, sq, nil
	}
	held := qpRegistry.held[b.c]
	qpRegistry.mu.Unlock()
	// Outside the lock: creating a queue pair is admin commands. No one
	// else adds this key meanwhile: only the owner's goroutine makes its
	// channels.
	qp, err := b.c.NewQueuePair(entries)
	if err != nil {
		return nil, nil, errors.Wrapf(err, "controller %s has %d I/O queue pairs, bdev channels ask for %d (one per owner, such as a reactor, and controller)", b.c.Name(), b.c.IOQueues(), held+1)
	}
	sq = &sharedQP{qp: qp, key: key, refs: 1}
	qpRegistry.mu.Lock()
	qpRegistry.qps[key] = sq
	qpRegistry.held[b.c]++
	qpRegistry.mu.Unlock()
	return &nvmeChannel{qp: qp, ns: b.ns}, sq, nil
}

func (b *nvmeBackend) AllocBuffer(size int) (Buffer, error) {
	d, err := b.c.Transport().AllocDMA(size)
	if err != nil {
		return Buffer{}, err
	}
	return Buffer{Bytes: d.Buf[:size], DMA: d}, nil
}

func (b *nvmeBackend) FreeBuffer(buf Buffer) error {
	if buf.DMA == nil {
		return nil
	}
	return b.c.Transport().FreeDMA(buf.DMA)
}

func (b *nvmeBackend) Close() error { return nil }

// sharedQueueEntries is the least number of entries of a queue pair that
// channels of an owner share: its channels' I/Os that find it full wait in
// their retry queues (or, for a tagged read or write of the fast path, are
// refused with ErrNoIO) until completions free room.
const sharedQueueEntries = 256

// privateOwner is the owner of a channel made by Desc.NewChannel: a new one
// per channel, so that the channel shares nothing.
type privateOwner struct{ _ byte }

// OnReactor is true: a private owner is whoever uses the channel.
func (*privateOwner) OnReactor() bool { return true }

// qpKey names the queue pair of one owner on one controller.
type qpKey struct {
	c     *nvme.Controller
	owner Owner
}

// qpRegistry holds the queue pairs that NVMe bdev channels use, one per
// (controller, owner). Its lock is taken to make and close channels, never
// per I/O.
var qpRegistry = struct {
	mu   sync.Mutex
	qps  map[qpKey]*sharedQP
	held map[*nvme.Controller]int // queue pairs in qps, per controller
}{qps: map[qpKey]*sharedQP{}, held: map[*nvme.Controller]int{}}

// NVMeQueuePairs returns the number of I/O queue pairs that open channels
// of NVMe bdevs hold on c: one per owner that has a channel of one of c's
// namespaces, plus one per channel made without an owner.
func NVMeQueuePairs(c *nvme.Controller) int {
	qpRegistry.mu.Lock()
	defer qpRegistry.mu.Unlock()
	return qpRegistry.held[c]
}

// sharedQP is a queue pair and the channels of one owner that use it. The
// owner's goroutine alone touches it but for refs, which the registry's
// lock guards.
//
// Its channels tell their I/Os apart without a word per I/O. Every channel
// but one, the primary, counts what it has in the queue pair from its pool
// of IOs (cmds), and so takes no fast path: each of its I/Os is an IO (on
// the counted path at the start of Channel.rw, for a read or write of one command). The
// primary's commands are the queue pair's less the others' (Outstanding),
// so it keeps both fast paths, and a channel alone on its queue pair — the
// usual case, one namespace per controller — runs as if it owned it. When
// the primary closes, another channel becomes the primary.
type sharedQP struct {
	qp  *nvme.QueuePair
	key qpKey

	refs int // channels; under qpRegistry.mu

	chans   []*Channel // the channels, for the primary's count
	primary *Channel
	polls   uint64 // polls of the queue pair through Channel.Poll

	_ [48]byte // 128 bytes: cache lines of its own (TestChannelLayout)
}

// add makes ch one of the queue pair's channels, the primary if there is
// none.
func (sq *sharedQP) add(ch *Channel) {
	sq.chans = append(sq.chans, ch)
	if sq.primary == nil {
		sq.primary = ch
		ch.primary = true
	}
	ch.seen = sq.polls
}

// others returns the commands in the queue pair of every channel but ch.
func (sq *sharedQP) others(ch *Channel) int {
	n := 0
	for _, o := range sq.chans {
		if o != ch {
			n += o.cmds()
		}
	}
	return n
}

// Channel.Poll reaps the queue pair's completions, whichever of the
// owner's channels they belong to, unless another channel has polled it
// since this one last did: then that poll served this channel too. So when
// every channel of an owner polls once per reactor iteration, the queue
// pair is processed once per iteration, not once per channel, and a channel
// polled alone processes it on every call.

// leave takes ch off the queue pair, makes another channel the primary if
// ch was, and closes the queue pair with its last channel.
func (sq *sharedQP) leave(ch *Channel) error {
	for i, o := range sq.chans {
		if o == ch {
			sq.chans = append(sq.chans[:i], sq.chans[i+1:]...)
			break
		}
	}
	if sq.primary == ch {
		ch.primary = false
		sq.primary = nil
		if len(sq.chans) > 0 {
			p := sq.chans[0]
			sq.primary, p.primary = p, true
			p.cqp = nil
			if p.retryHead == nil && !p.closed {
				p.qp = sq.qp // its fast path is on
			}
		}
	}
	qpRegistry.mu.Lock()
	sq.refs--
	last := sq.refs == 0
	if last {
		delete(qpRegistry.qps, sq.key)
		if qpRegistry.held[sq.key.c]--; qpRegistry.held[sq.key.c] == 0 {
			delete(qpRegistry.held, sq.key.c)
		}
	}
	qpRegistry.mu.Unlock()
	if !last {
		return nil
	}
	return sq.qp.Close()
}

type nvmeChannel struct {
	qp      *nvme.QueuePair
	ns      *nvme.Namespace
	ranges  [1]nvme.Range // scratch for Unmap and Copy; the driver copies it
	private bool          // made by nvmeBackend.NewChannel: Close closes qp
	_       [24]byte      // 64 bytes: a cache line of its own (TestChannelLayout)
}

// nvmeIO is an IO as the nvme.Completer of its command: converting the
// pointer costs nothing and allocates nothing.
type nvmeIO IO

// Complete finishes the I/O on the queue pair's goroutine. An I/O that
// succeeded, the common case, runs its callback and goes back to the pool
// here, touching only the IO's first cache line; a failed one is IO.Done.
// (Calling Done for every I/O costs ~1 ns per I/O in BenchmarkNullQD32.)
// Split children complete through nvmeChildIO instead.
func (c *nvmeIO) Complete(_ uint64, _ uint64, err error) {
	io := (*IO)(c)
	if err != nil {
		io.Done(err)
		return
	}
	if cb := io.cb; cb != nil {
		cb(io)
	}
	// Back to the pool as put does for an I/O without a parent or an error.
	// ch is loaded after the call: one register less to keep across it.
	ch := io.ch
	ch.free = append(ch.free, io)
}

// nvmeChildIO is a split child as the nvme.Completer of its command.
type nvmeChildIO IO

// Complete finishes the child.
func (c *nvmeChildIO) Complete(_ uint64, _ uint64, err error) { (*IO)(c).Done(err) }

// nvmeTaggedIO is a tagged I/O's IO as the nvme.Completer of its command:
// a flush, write zeroes, unmap or copy, or a read or write that waited for
// a retry. (Split pieces complete through nvmeChildIO.)
type nvmeTaggedIO IO

// Complete puts the IO back and passes the completion on, result included.
func (c *nvmeTaggedIO) Complete(_ uint64, result uint64, err error) {
	io := (*IO)(c)
	comp, tag := io.comp, io.tag
	io.ch.put(io)
	comp.Complete(tag, result, err)
}

// nvmeDoneIO is an IO with a callback as the nvme.Completer of its
// command on a channel that is not its queue pair's primary. It runs the
// callback the way that keeps the channel's count of commands exact (the
// callback counts in callbacks, not as a command): for an I/O that
// succeeded, here, as nvmeIO.Complete does; otherwise through IO.Done.
// (Split pieces complete through nvmeChildIO.)
type nvmeDoneIO IO

// Complete finishes the I/O.
func (c *nvmeDoneIO) Complete(_ uint64, _ uint64, err error) {
	io := (*IO)(c)
	if err != nil {
		io.Done(err)
		return
	}
	ch := io.ch
	ch.callbacks++
	if cb := io.cb; cb != nil {
		cb(io)
	}
	ch = io.ch
	ch.callbacks--
	ch.free = append(ch.free, io)
}

// nvmeCountedIO is a tagged read or write of the counted path
// (Channel.rw) as the nvme.Completer of its command: the IO goes back
// to the pool, then the completion on to the caller's Completer. Such an
// IO has no parent and no error of its own.
type nvmeCountedIO IO

// Complete puts the IO back and passes the completion on.
func (c *nvmeCountedIO) Complete(_ uint64, result uint64, err error) {
	io := (*IO)(c)
	comp, tag, ch := io.comp, io.tag, io.ch
	io.comp = nil
	ch.free = append(ch.free, io)
	comp.Complete(tag, result, err)
}

// completer returns io as the nvme.Completer of its command.
func completer(io *IO) nvme.Completer {
	if io.parent != nil {
		return (*nvmeChildIO)(io)
	}
	if io.comp != nil {
		return (*nvmeTaggedIO)(io)
	}
	if !io.ch.primary {
		return (*nvmeDoneIO)(io)
	}
	return (*nvmeIO)(io)
}

func (ch *nvmeChannel) Submit(io *IO) error {
	cb := completer(io)
	var err error
	switch io.Type {
	case Read, Write:
		if io.Buf.DMA == nil {
			return errors.Errorf("nvme namespace %d: %v buffer is not DMA memory (allocate it with Desc.AllocBuffer)", ch.ns.ID, io.Type)
		}
		if io.Type == Read {
			err = ch.qp.Read(ch.ns, io.LBA, uint32(io.Count), io.Buf.DMA, io.Buf.Off, cb, 0)
		} else {
			err = ch.qp.Write(ch.ns, io.LBA, uint32(io.Count), io.Buf.DMA, io.Buf.Off, cb, 0)
		}
	case Flush:
		err = ch.qp.Flush(ch.ns, cb, 0)
	case WriteZeroes:
		err = ch.qp.WriteZeroes(ch.ns, io.LBA, uint32(io.Count), false, cb, 0)
	case Unmap:
		ch.ranges[0] = nvme.Range{LBA: io.LBA, Blocks: uint32(io.Count)}
		err = ch.qp.Deallocate(ch.ns, ch.ranges[:], cb, 0)
	case Copy:
		ch.ranges[0] = nvme.Range{LBA: io.SrcLBA, Blocks: uint32(io.Count)}
		err = ch.qp.Copy(ch.ns, io.LBA, ch.ranges[:], cb, 0)
	default:
		return errors.Wrapf(ErrUnsupported, "nvme namespace %d: %v", ch.ns.ID, io.Type)
	}
	if err != nil && errors.Is(err, nvme.ErrQueueFull) {
		return ErrBusy
	}
	return err
}

func (ch *nvmeChannel) Poll() int { return ch.qp.Process(0) }

// Close closes the queue pair of a channel from nvmeBackend.NewChannel. A
// Channel's queue pair is its sharedQP's, closed with the last channel by
// sharedQP.leave.
func (ch *nvmeChannel) Close() error {
	if ch.private {
		return ch.qp.Close()
	}
	return nil
}
