package bdev

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/pkg/errors"
)

// completions is a FIFO of I/Os a memory backend has finished, completed on
// the next Poll so that callbacks never run inside Submit.
type completions struct {
	head, tail *IO
}

func (c *completions) push(io *IO) {
	io.next = nil
	if c.tail == nil {
		c.head = io
	} else {
		c.tail.next = io
	}
	c.tail = io
}

func (c *completions) drain() int {
	n := 0
	// Completions may submit new I/Os, which land behind the ones taken now.
	head := c.head
	c.head, c.tail = nil, nil
	for head != nil {
		io := head
		head = io.next
		io.next = nil
		io.Done(nil)
		n++
	}
	return n
}

// NewMalloc makes a RAM bdev of numBlocks blocks (SPDK's malloc bdev). Its
// memory is allocated at once; data lives as long as the bdev.
func NewMalloc(name string, blockSize int, numBlocks uint64) (*Bdev, error) {
	if blockSize <= 0 || numBlocks == 0 || numBlocks > (1<<40)/uint64(blockSize) {
		return nil, errors.Errorf("malloc bdev %s: %d blocks of %d bytes is not a size this module makes (at most 1 TiB)", name, numBlocks, blockSize)
	}
	m := &memBackend{mem: make([]byte, numBlocks*uint64(blockSize)), bs: blockSize}
	return New(Info{
		Name: name, Product: "malloc", BlockSize: blockSize, NumBlocks: numBlocks,
		IOTypes: Types(Read, Write, Flush, WriteZeroes, Unmap, Copy),
	}, m)
}

// NewNull makes a bdev that moves no data (SPDK's null bdev): reads leave the
// buffer untouched, writes are dropped. It measures the stack itself.
func NewNull(name string, blockSize int, numBlocks uint64) (*Bdev, error) {
	return New(Info{
		Name: name, Product: "null", BlockSize: blockSize, NumBlocks: numBlocks,
		IOTypes: Types(Read, Write, Flush, WriteZeroes, Unmap),
	}, &memBackend{bs: blockSize})
}

// memBackend serves malloc (mem != nil) and null (mem == nil) bdevs.
//
// Channels on different cores may touch the same bytes at once, as two queues
// of a real drive may; the media serialises them. Here striped locks do: the
// memory is cut into 1 MiB regions, each guarded by one of 64 RWMutexes, and
// an I/O takes the locks of the regions it covers in increasing order. The
// locks are uncontended unless I/Os from different cores overlap a region.
//
// Each lock has a cache line of its own, the first at the start of the
// struct (a size class that is a multiple of 64 bytes), so that cores
// working in different regions write no line in common.
type memBackend struct {
	stripes [memStripes]stripe
	mem     []byte
	bs      int
}

// stripe is one region's lock, padded to a cache line.
type stripe struct {
	sync.RWMutex
	_ [64 - unsafe.Sizeof(sync.RWMutex{})]byte
}

const (
	memStripes     = 64
	memRegionShift = 20
)

// stripeMask returns the set of stripes covering [off, off+n).
func stripeMask(off, n uint64) uint64 {
	first, last := off>>memRegionShift, (off+n-1)>>memRegionShift
	if last-first+1 >= memStripes {
		return ^uint64(0)
	}
	var m uint64
	for r := first; r <= last; r++ {
		m |= 1 << (r % memStripes)
	}
	return m
}

func (m *memBackend) lock(mask uint64, write bool) {
	for rest := mask; rest != 0; rest &= rest - 1 {
		i := bits.TrailingZeros64(rest)
		if write {
			m.stripes[i].Lock()
		} else {
			m.stripes[i].RLock()
		}
	}
}

func (m *memBackend) unlock(mask uint64, write bool) {
	for rest := mask; rest != 0; rest &= rest - 1 {
		i := bits.TrailingZeros64(rest)
		if write {
			m.stripes[i].Unlock()
		} else {
			m.stripes[i].RUnlock()
		}
	}
}

func (m *memBackend) NewChannel(depth int) (BackendChannel, error) {
	return &memChannel{m: m}, nil
}

func (m *memBackend) AllocBuffer(size int) (Buffer, error) {
	return Buffer{Bytes: make([]byte, size)}, nil
}

func (m *memBackend) FreeBuffer(Buffer) error { return nil }

func (m *memBackend) Close() error {
	m.mem = nil
	return nil
}

type memChannel struct {
	m    *memBackend
	done completions
	_    [40]byte // 64 bytes: a cache line of its own (TestChannelLayout)
}

func (c *memChannel) Submit(io *IO) error {
	if mem := c.m.mem; mem != nil {
		bs := uint64(c.m.bs)
		off, n := io.LBA*bs, io.Count*bs
		mask, write := stripeMask(off, n), io.Type != Read
		if io.Type == Copy {
			mask |= stripeMask(io.SrcLBA*bs, n)
		}
		if io.Type == Flush {
			mask = 0
		}
		c.m.lock(mask, write)
		switch io.Type {
		case Read:
			copy(io.Buf.Bytes[:n], mem[off:off+n])
		case Write:
			copy(mem[off:off+n], io.Buf.Bytes[:n])
		case WriteZeroes, Unmap:
			clear(mem[off : off+n])
		case Copy:
			src := io.SrcLBA * bs
			copy(mem[off:off+n], mem[src:src+n])
		}
		c.m.unlock(mask, write)
	}
	c.done.push(io)
	return nil
}

func (c *memChannel) Poll() int { return c.done.drain() }

func (c *memChannel) Close() error { return nil }
