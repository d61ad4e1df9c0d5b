package p2pdma

import (
	"context"
	"math/bits"
	"sync"

	"github.com/pkg/errors"
)

// ErrFull means the allocator has no free block of the requested size right
// now. It is back-pressure: space returns when blocks are freed.
var ErrFull = errors.New("p2pdma: peer memory full")

// MinBlock is the smallest block the allocator hands out (one NVMe memory
// page, so every block can start a PRP list).
const MinBlock = 4096

// Allocator is a buddy allocator over [0, size): blocks are powers of two of
// at least MinBlock bytes, naturally aligned (a block of 2^k bytes starts at
// a multiple of 2^k), and freed blocks merge with their buddies, so
// fragmentation stays bounded: the largest free block after freeing
// everything is the largest the region could ever give. Alloc and Free take
// a mutex and cost O(log(size/MinBlock)); they are meant for setting up
// copies and scans, not for each I/O. Safe for concurrent use.
type Allocator struct {
	size  uint64
	top   uint // order of the root: the tree covers MinBlock << top bytes
	mu    sync.Mutex
	tree  []uint8          // per node: 1 + order of the largest free block below it; 0 none
	owned map[uint64]uint8 // offset of each allocated block -> its order
	inUse uint64           // bytes in allocated blocks
	wake  chan struct{}    // closed when space is freed, for AllocWait
	stats AllocStats
}

// AllocStats are an allocator's counters.
type AllocStats struct {
	Size     uint64 // bytes managed
	InUse    uint64 // bytes in allocated blocks (rounded up to powers of two)
	Largest  uint64 // largest block that can be allocated now
	Blocks   int    // allocated blocks
	Allocs   uint64 // successful allocations
	Failures uint64 // allocations refused with ErrFull
	Waits    uint64 // AllocWait calls that had to wait for space
}

// NewAllocator returns an allocator over size bytes (rounded down to
// MinBlock). A size that is not a power of two works: the tail beyond it is
// never handed out.
func NewAllocator(size uint64) (*Allocator, error) {
	pages := size / MinBlock
	if pages == 0 {
		return nil, errors.Errorf("p2pdma: region of %d bytes is smaller than one %d-byte block", size, MinBlock)
	}
	if pages > 1<<22 {
		return nil, errors.Errorf("p2pdma: region of %d bytes is larger than %d GiB", size, (MinBlock<<22)>>30)
	}
	top := uint(bits.Len64(pages - 1))
	a := &Allocator{size: pages * MinBlock, top: top, tree: make([]uint8, 2<<top), owned: map[uint64]uint8{}, wake: make(chan struct{})}
	a.build(0, top, 0, pages)
	return a, nil
}

// build initialises the subtree of node (covering 2^order pages from page
// start): pages at or beyond limit are unavailable.
func (a *Allocator) build(node int, order uint, start, limit uint64) {
	switch {
	case start >= limit:
		a.tree[node] = 0
	case start+1<<order <= limit:
		a.tree[node] = uint8(order + 1)
		if order > 0 { // children are fully free too
			a.build(2*node+1, order-1, start, limit)
			a.build(2*node+2, order-1, start+1<<(order-1), limit)
		}
	default:
		a.build(2*node+1, order-1, start, limit)
		a.build(2*node+2, order-1, start+1<<(order-1), limit)
		a.tree[node] = max(a.tree[2*node+1], a.tree[2*node+2])
	}
}

// Size returns the bytes the allocator manages.
func (a *Allocator) Size() uint64 { return a.size }

// orderFor returns the order of the smallest block holding size bytes.
func orderFor(size int) uint {
	pages := (uint64(size) + MinBlock - 1) / MinBlock
	if pages <= 1 {
		return 0
	}
	return uint(bits.Len64(pages - 1))
}

// BlockSize returns the bytes a request for size bytes occupies: size
// rounded up to a power of two of at least MinBlock.
func BlockSize(size int) uint64 { return MinBlock << orderFor(size) }

// Alloc returns the offset of a free block of at least size bytes, aligned
// to its own size, or ErrFull.
func (a *Allocator) Alloc(size int) (uint64, error) {
	if size <= 0 {
		return 0, errors.Errorf("p2pdma: allocation of %d bytes", size)
	}
	order := orderFor(size)
	if order > a.top || MinBlock<<order > a.size {
		return 0, errors.Errorf("p2pdma: allocation of %d bytes exceeds the region (%d bytes)", size, a.size)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	off, ok := a.allocLocked(order)
	if !ok {
		a.stats.Failures++
		return 0, kindf(ErrFull, "full: %d of %d bytes in use, largest free block %d bytes, want %d", a.inUse, a.size, a.largestLocked(), MinBlock<<order)
	}
	return off, nil
}

func (a *Allocator) allocLocked(order uint) (uint64, bool) {
	want := uint8(order + 1)
	if a.tree[0] < want {
		return 0, false
	}
	node, o := 0, a.top
	for o > order {
		// Lowest address first: go left whenever the left subtree fits.
		if a.tree[2*node+1] >= want {
			node = 2*node + 1
		} else {
			node = 2*node + 2
		}
		o--
	}
	a.tree[node] = 0
	a.fixUp(node, order)
	first := (1 << (a.top - order)) - 1 // index of the first node at this level
	off := uint64(node-first) << order * MinBlock
	a.owned[off] = uint8(order)
	a.inUse += MinBlock << order
	a.stats.Allocs++
	return off, true
}

// fixUp recomputes the ancestors of node (at the given order), merging
// buddies that are both wholly free.
func (a *Allocator) fixUp(node int, order uint) {
	for node > 0 {
		node = (node - 1) / 2
		order++
		l, r := a.tree[2*node+1], a.tree[2*node+2]
		if l == uint8(order) && r == uint8(order) {
			a.tree[node] = uint8(order + 1)
		} else {
			a.tree[node] = max(l, r)
		}
	}
}

// Free returns the block at off. Freeing an offset that is not an allocated
// block is an error and changes nothing.
func (a *Allocator) Free(off uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	order, ok := a.owned[off]
	if !ok {
		return errors.Errorf("p2pdma: free of offset %#x: not an allocated block", off)
	}
	delete(a.owned, off)
	first := (1 << (a.top - uint(order))) - 1
	node := first + int(off/MinBlock>>order)
	a.tree[node] = order + 1
	a.fixUp(node, uint(order))
	a.inUse -= MinBlock << order
	close(a.wake)
	a.wake = make(chan struct{})
	return nil
}

// AllocWait is Alloc that waits for space while the allocator is full, until
// ctx ends. It is how users apply back-pressure: a full region delays them
// instead of failing them.
func (a *Allocator) AllocWait(ctx context.Context, size int) (uint64, error) {
	waited := false
	for {
		a.mu.Lock()
		wake := a.wake
		a.mu.Unlock()
		off, err := a.Alloc(size)
		if !errors.Is(err, ErrFull) {
			return off, err
		}
		if !waited {
			waited = true
			a.mu.Lock()
			a.stats.Waits++
			a.mu.Unlock()
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, kindf(ErrFull, "%v; no space was freed before %v", err, ctx.Err())
		}
	}
}

func (a *Allocator) largestLocked() uint64 {
	if a.tree[0] == 0 {
		return 0
	}
	return MinBlock << (a.tree[0] - 1)
}

// Stats returns the allocator's counters.
func (a *Allocator) Stats() AllocStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.Size, s.InUse, s.Largest, s.Blocks = a.size, a.inUse, a.largestLocked(), len(a.owned)
	return s
}
