package vfio

import (
	"sync"
	"unsafe"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/bpfblk/bpfblk/nvme"
)

const (
	pageSize  = 4096
	chunkSize = 2 << 20 // one 2 MiB hugepage
	chunkPgs  = chunkSize / pageSize
)

// dmaMapper is the IOMMU side of DMA memory: IOVA allocation and mapping.
// The container implements it; tests use a fake.
type dmaMapper interface {
	allocIOVA(size, align uint64) (uint64, error)
	freeIOVA(iova, size uint64)
	mapDMA(vaddr unsafe.Pointer, iova, size uint64) error
	unmapDMA(iova, size uint64) error
}

// chunk is one mapping into the IOMMU: a 2 MiB hugepage shared by small
// allocations, or a dedicated run of hugepages for one large allocation.
type chunk struct {
	mem       []byte
	iova      uint64
	huge      bool
	dedicated bool
	used      [chunkPgs / 64]uint64 // page bitmap (shared chunks)
	nused     int
}

type allocation struct {
	c            *chunk
	first, pages int
}

// dmaPool sub-allocates 4 KiB-aligned DMA buffers from 2 MiB hugepages that
// are mapped into the IOMMU once each. Without hugepages it falls back to
// locked 4 KiB pages (still contiguous in IOVA space) and warns once.
type dmaPool struct {
	mu     sync.Mutex
	m      dmaMapper
	logf   func(format string, args ...any)
	noHuge bool
	warned bool
	chunks map[*chunk]bool
	allocs map[unsafe.Pointer]allocation
	hugeN  int // chunks backed by hugepages (for diagnostics and tests)
}

func newDMAPool(m dmaMapper, logf func(string, ...any), noHuge bool) *dmaPool {
	return &dmaPool{m: m, logf: logf, noHuge: noHuge, chunks: map[*chunk]bool{}, allocs: map[unsafe.Pointer]allocation{}}
}

func (p *dmaPool) newChunk(size int) (*chunk, error) {
	var mem []byte
	var err error
	huge := false
	if !p.noHuge {
		mem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_HUGETLB|unix.MAP_HUGE_2MB|unix.MAP_POPULATE|unix.MAP_LOCKED)
		huge = err == nil
	}
	if !huge {
		if !p.warned && !p.noHuge {
			p.warned = true
			p.logf("vfio: no free 2 MiB hugepages (%v); using locked 4 KiB pages. Reserve hugepages with 'bpfblk setup'", err)
		}
		mem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE|unix.MAP_LOCKED)
		if err != nil {
			mem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
		}
		if err != nil {
			return nil, errors.Wrapf(err, "vfio: mmap %d bytes of DMA memory", size)
		}
	}
	// A child of fork must not share pages the device writes to.
	_ = unix.Madvise(mem, unix.MADV_DONTFORK)
	iova, err := p.m.allocIOVA(uint64(size), chunkSize)
	if err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	if err := p.m.mapDMA(unsafe.Pointer(&mem[0]), iova, uint64(size)); err != nil {
		p.m.freeIOVA(iova, uint64(size))
		unix.Munmap(mem)
		return nil, err
	}
	c := &chunk{mem: mem, iova: iova, huge: huge}
	p.chunks[c] = true
	if huge {
		p.hugeN++
	}
	return c, nil
}

func (p *dmaPool) dropChunk(c *chunk) error {
	delete(p.chunks, c)
	if c.huge {
		p.hugeN--
	}
	err := p.m.unmapDMA(c.iova, uint64(len(c.mem)))
	if err == nil {
		// Only reuse the IOVA range when the IOMMU no longer maps it.
		p.m.freeIOVA(c.iova, uint64(len(c.mem)))
	}
	if e := unix.Munmap(c.mem); err == nil && e != nil {
		err = errors.Wrap(e, "vfio: munmap DMA memory")
	}
	return err
}

// findRun returns the first run of n free pages in c, or -1.
func (c *chunk) findRun(n int) int {
	run := 0
	for i := 0; i < chunkPgs; i++ {
		if c.used[i/64]&(1<<(i%64)) != 0 {
			run = 0
			continue
		}
		run++
		if run == n {
			return i - n + 1
		}
	}
	return -1
}

func (c *chunk) mark(first, n int, used bool) {
	for i := first; i < first+n; i++ {
		if used {
			c.used[i/64] |= 1 << (i % 64)
		} else {
			c.used[i/64] &^= 1 << (i % 64)
		}
	}
	if used {
		c.nused += n
	} else {
		c.nused -= n
	}
}

func (p *dmaPool) alloc(size int) (*nvme.DMA, error) {
	if size <= 0 {
		return nil, errors.Errorf("vfio: DMA allocation of %d bytes", size)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.chunks == nil {
		return nil, errors.New("vfio: DMA allocation on a closed device")
	}
	pages := (size + pageSize - 1) / pageSize
	var c *chunk
	first := 0
	if pages > chunkPgs/2 {
		// Large buffers get their own hugepages, contiguous in IOVA space.
		n := (size + chunkSize - 1) &^ (chunkSize - 1)
		var err error
		if c, err = p.newChunk(n); err != nil {
			return nil, err
		}
		c.dedicated = true
		pages = n / pageSize
	} else {
		for k := range p.chunks {
			if !k.dedicated && chunkPgs-k.nused >= pages {
				if f := k.findRun(pages); f >= 0 {
					c, first = k, f
					break
				}
			}
		}
		if c == nil {
			var err error
			if c, err = p.newChunk(chunkSize); err != nil {
				return nil, err
			}
		}
		c.mark(first, pages, true)
	}
	buf := c.mem[first*pageSize : first*pageSize+size : first*pageSize+pages*pageSize]
	clear(buf)
	p.allocs[unsafe.Pointer(&buf[0])] = allocation{c: c, first: first, pages: pages}
	return &nvme.DMA{Buf: buf, IOVA: c.iova + uint64(first*pageSize)}, nil
}

func (p *dmaPool) free(d *nvme.DMA) error {
	if d == nil || len(d.Buf) == 0 {
		return errors.New("vfio: FreeDMA of an empty buffer")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	key := unsafe.Pointer(&d.Buf[0])
	a, ok := p.allocs[key]
	if !ok {
		return errors.Errorf("vfio: FreeDMA of a buffer at IOVA %#x that this device did not allocate (or freed twice)", d.IOVA)
	}
	delete(p.allocs, key)
	if a.c.dedicated {
		return p.dropChunk(a.c)
	}
	a.c.mark(a.first, a.pages, false)
	if a.c.nused == 0 {
		return p.dropChunk(a.c)
	}
	return nil
}

// close releases every chunk, allocated or not.
func (p *dmaPool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first error
	for c := range p.chunks {
		if err := p.dropChunk(c); err != nil && first == nil {
			first = err
		}
	}
	p.chunks, p.allocs = nil, nil
	return first
}
