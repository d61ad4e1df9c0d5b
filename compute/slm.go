package compute

import (
	"sort"
	"sync"

	"github.com/bpfblk/bpfblk/nvme"
)

// The device memory allocator: every scan of the process that offloads to a
// compute device takes the bytes of its memory (SLM) namespace from one
// pool per namespace, so concurrent scans never share device memory. It is
// taken at job setup and teardown, never per chunk.

// span is a piece of a memory namespace.
type span struct{ off, n uint64 }

// slmPool hands out the memory of one memory namespace to every scan of the
// process that uses it, so concurrent scans on one device never share bytes.
type slmPool struct {
	mu   sync.Mutex
	free []span // sorted by offset, coalesced
}

type poolKey struct {
	c    *nvme.Controller
	nsid uint32
}

var slmPools sync.Map // poolKey -> *slmPool

func poolFor(c *nvme.Controller, ns *nvme.Namespace, size uint64) *slmPool {
	p, _ := slmPools.LoadOrStore(poolKey{c, ns.ID}, &slmPool{free: []span{{0, size}}})
	return p.(*slmPool)
}

func (p *slmPool) get(n uint64) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, f := range p.free {
		if f.n >= n {
			p.free[i] = span{f.off + n, f.n - n}
			if p.free[i].n == 0 {
				p.free = append(p.free[:i], p.free[i+1:]...)
			}
			return f.off, true
		}
	}
	return 0, false
}

func (p *slmPool) put(s span) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := sort.Search(len(p.free), func(i int) bool { return p.free[i].off > s.off })
	p.free = append(p.free, span{})
	copy(p.free[i+1:], p.free[i:])
	p.free[i] = s
	// Coalesce with the neighbours.
	if i+1 < len(p.free) && p.free[i].off+p.free[i].n == p.free[i+1].off {
		p.free[i].n += p.free[i+1].n
		p.free = append(p.free[:i+1], p.free[i+2:]...)
	}
	if i > 0 && p.free[i-1].off+p.free[i-1].n == p.free[i].off {
		p.free[i-1].n += p.free[i].n
		p.free = append(p.free[:i], p.free[i+1:]...)
	}
}

// alloc hands out n bytes of SLM (4 KiB aligned), or false when full.
func (d *offDevice) alloc(n uint64) (uint64, bool) {
	n = (n + 4095) &^ 4095
	off, ok := d.pool.get(n)
	if ok {
		d.held = append(d.held, span{off, n})
	}
	return off, ok
}

// release returns the last allocations, back to a length of mark.
func (d *offDevice) release(mark int) {
	for _, s := range d.held[mark:] {
		d.pool.put(s)
	}
	d.held = d.held[:mark]
}
