package bdev

import (
	"fmt"
	"sync"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/pkg/errors"
)

// IOType is the kind of an I/O.
type IOType uint8

// I/O types a bdev may support.
const (
	Read IOType = iota
	Write
	Flush
	WriteZeroes
	Unmap
	Copy
	numIOTypes
)

var ioTypeNames = [numIOTypes]string{"read", "write", "flush", "write zeroes", "unmap", "copy"}

func (t IOType) String() string {
	if t < numIOTypes {
		return ioTypeNames[t]
	}
	return fmt.Sprintf("IOType(%d)", uint8(t))
}

// IOTypes is a set of I/O types.
type IOTypes uint32

// Has reports whether t is in the set.
func (s IOTypes) Has(t IOType) bool { return s&(1<<t) != 0 }

// Types builds a set.
func Types(ts ...IOType) IOTypes {
	var s IOTypes
	for _, t := range ts {
		s |= 1 << t
	}
	return s
}

// Errors of the bdev layer.
var (
	// ErrNoIO means the channel has no room for another I/O: its pool of
	// I/O objects is exhausted or, for a tagged I/O, its device queue is
	// full. Wait for completions (Poll) and submit again. It is
	// back-pressure, not failure.
	ErrNoIO = errors.New("bdev: no room for another I/O on this channel")
	// ErrBusy is returned by a backend channel whose device queue is full;
	// the bdev layer queues the I/O and retries it after completions.
	ErrBusy = errors.New("bdev: device queue full")
	// ErrUnsupported means the bdev does not support the I/O type.
	ErrUnsupported = errors.New("bdev: I/O type not supported")
	// ErrReadOnly means a write was submitted through a read-only descriptor.
	ErrReadOnly = errors.New("bdev: descriptor is read-only")
	// ErrClaimed means the bdev is claimed by a virtual bdev.
	ErrClaimed = errors.New("bdev: claimed by another module")
	// ErrOutOfRange means the I/O runs past the end of the bdev.
	ErrOutOfRange = errors.New("bdev: LBA range out of bounds")
	// ErrClosed means the descriptor or channel has been closed.
	ErrClosed = errors.New("bdev: closed")
)

// Buffer is memory an I/O moves data into or out of. For NVMe bdevs it must be
// DMA memory (from Desc.AllocBuffer); for malloc and null bdevs any memory
// will do.
type Buffer struct {
	// Bytes is the CPU view.
	Bytes []byte
	// DMA is the DMA allocation Bytes lies in, or nil for plain memory.
	DMA *nvme.DMA
	// Off is the offset of Bytes[0] within DMA.Buf.
	Off int
}

// Slice returns the part of b from off for n bytes.
func (b Buffer) Slice(off, n int) Buffer {
	return Buffer{Bytes: b.Bytes[off : off+n], DMA: b.DMA, Off: b.Off + off}
}

// Backend is the module side of a bdev: NVMe namespace, malloc, null, or a
// virtual bdev.
type Backend interface {
	// NewChannel returns an I/O channel for one goroutine (normally one
	// reactor) with room for depth I/Os in flight; past that, its Submit
	// may return ErrBusy.
	NewChannel(depth int) (BackendChannel, error)
	// AllocBuffer returns size bytes of memory the backend can transfer.
	AllocBuffer(size int) (Buffer, error)
	// FreeBuffer releases memory from AllocBuffer.
	FreeBuffer(b Buffer) error
	// Close releases the backend once the bdev is unregistered.
	Close() error
}

// BackendChannel moves I/Os for one goroutine.
type BackendChannel interface {
	// Submit starts io. It returns ErrBusy when the device queue is full (the
	// bdev layer retries later) or another error for an I/O it cannot start.
	// On success the backend later calls io.Done exactly once, from Poll,
	// never from inside Submit.
	Submit(io *IO) error
	// Poll completes finished I/Os and returns how many.
	Poll() int
	// Close releases the channel; no I/O may be in flight.
	Close() error
}

// Info describes a bdev.
type Info struct {
	Name        string
	Product     string // module-specific description, e.g. "NVMe namespace"
	BlockSize   int    // bytes per block (LBA)
	NumBlocks   uint64
	MaxTransfer int // largest I/O the backend takes in bytes; 0 = no limit
	IOTypes     IOTypes
	NSID        uint32 // NVMe namespace id; 0 for bdevs of other modules
}

// Bdev is a block device: a name, a block size, a capacity and a backend.
type Bdev struct {
	info    Info
	backend Backend

	mu      sync.Mutex // open/close/claim only, never per I/O
	opens   int
	claimer string
	closed  bool
}

// New makes a bdev of backend.
func New(info Info, backend Backend) (*Bdev, error) {
	if info.Name == "" {
		return nil, errors.New("bdev: empty name")
	}
	if info.BlockSize <= 0 || info.BlockSize&(info.BlockSize-1) != 0 {
		return nil, errors.Errorf("bdev %s: block size %d is not a power of two", info.Name, info.BlockSize)
	}
	if info.MaxTransfer != 0 && info.MaxTransfer < info.BlockSize {
		return nil, errors.Errorf("bdev %s: max transfer %d is below the block size %d", info.Name, info.MaxTransfer, info.BlockSize)
	}
	info.IOTypes |= Types(Read, Write)
	return &Bdev{info: info, backend: backend}, nil
}

// Name returns the bdev's name.
func (b *Bdev) Name() string { return b.info.Name }

// Info returns the bdev's description.
func (b *Bdev) Info() Info { return b.info }

// BlockSize returns the bytes per block.
func (b *Bdev) BlockSize() int { return b.info.BlockSize }

// NumBlocks returns the capacity in blocks.
func (b *Bdev) NumBlocks() uint64 { return b.info.NumBlocks }

// Supports reports whether the bdev takes I/Os of type t.
func (b *Bdev) Supports(t IOType) bool { return b.info.IOTypes.Has(t) }

// Close unregisters the bdev and closes its backend. It fails while
// descriptors are open.
func (b *Bdev) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	if b.opens > 0 {
		return errors.Errorf("bdev %s: %d descriptors still open", b.info.Name, b.opens)
	}
	b.closed = true
	return errors.Wrapf(b.backend.Close(), "bdev %s", b.info.Name)
}

// Desc is an open descriptor of a bdev, read-only or read-write.
type Desc struct {
	bdev    *Bdev
	write   bool
	claimed bool
	closed  bool
}

// Open opens b. A read-write open fails while a virtual bdev holds a claim on
// b (only the claimer writes to a claimed base bdev).
func Open(b *Bdev, write bool) (*Desc, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.Wrapf(ErrClosed, "bdev %s", b.info.Name)
	}
	if write && b.claimer != "" {
		return nil, errors.Wrapf(ErrClaimed, "bdev %s: open for writing (claimed by %s)", b.info.Name, b.claimer)
	}
	b.opens++
	return &Desc{bdev: b, write: write}, nil
}

// Bdev returns the descriptor's bdev.
func (d *Desc) Bdev() *Bdev { return d.bdev }

// Writable reports whether the descriptor may write.
func (d *Desc) Writable() bool { return d.write }

// Claim takes the exclusive claim a virtual bdev holds on its base bdevs:
// afterwards no one else may open the bdev for writing. It fails if another
// descriptor already writes to the bdev or another module holds a claim.
func (d *Desc) Claim(module string) error {
	b := d.bdev
	b.mu.Lock()
	defer b.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if b.claimer != "" {
		return errors.Wrapf(ErrClaimed, "bdev %s: claim by %s (claimed by %s)", b.info.Name, module, b.claimer)
	}
	b.claimer = module
	d.claimed = true
	d.write = true
	return nil
}

// Close closes the descriptor, releasing its claim. Channels made from it
// must be closed first.
func (d *Desc) Close() error {
	b := d.bdev
	b.mu.Lock()
	defer b.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	b.opens--
	if d.claimed {
		b.claimer = ""
	}
	return nil
}

// AllocBuffer returns size bytes of I/O memory suitable for the bdev (DMA
// memory for NVMe). It is a setup-time call, not a per-I/O one.
func (d *Desc) AllocBuffer(size int) (Buffer, error) {
	if size <= 0 {
		return Buffer{}, errors.Errorf("bdev %s: buffer size %d", d.bdev.info.Name, size)
	}
	buf, err := d.bdev.backend.AllocBuffer(size)
	return buf, errors.Wrapf(err, "bdev %s: allocate %d-byte buffer", d.bdev.info.Name, size)
}

// FreeBuffer releases a buffer from AllocBuffer.
func (d *Desc) FreeBuffer(b Buffer) error { return d.bdev.backend.FreeBuffer(b) }
