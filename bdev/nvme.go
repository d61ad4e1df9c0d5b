package bdev

import (
	"fmt"

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

func (b *nvmeBackend) NewChannel(depth int) (BackendChannel, error) {
	// Plus the slot a full NVMe queue always keeps empty.
	qp, err := b.c.NewQueuePair(depth + 1)
	if err != nil {
		return nil, err
	}
	return &nvmeChannel{qp: qp, ns: b.ns}, nil
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

type nvmeChannel struct {
	qp     *nvme.QueuePair
	ns     *nvme.Namespace
	ranges [1]nvme.Range // scratch for Unmap and Copy; the driver copies it
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

// completer returns io as the nvme.Completer of its command.
func completer(io *IO) nvme.Completer {
	if io.parent != nil {
		return (*nvmeChildIO)(io)
	}
	if io.comp != nil {
		return (*nvmeTaggedIO)(io)
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

func (ch *nvmeChannel) Close() error { return ch.qp.Close() }
