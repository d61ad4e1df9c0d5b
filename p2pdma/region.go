package p2pdma

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
)

// ErrNoPeerPath means a controller cannot reach a region by DMA: it sits on
// another bus or in an IOMMU domain the region cannot be mapped into.
var ErrNoPeerPath = errors.New("p2pdma: no peer-to-peer path")

// Region is peer memory: a controller's CMB with its CPU mapping, the bus
// address its owner uses, the addresses registered peers use, and an
// allocator over it. There is one Region per controller in a process: Open
// returns the same one (counted) until the last Close.
type Region struct {
	owner *nvme.Controller
	cmb   CMB
	dma   *nvme.DMA
	alloc *Allocator

	mu    sync.Mutex
	refs  int
	peers map[*nvme.Controller]*nvme.DMA
	undo  []func() error
}

var registry = struct {
	mu sync.Mutex
	m  map[*nvme.Controller]*Region
}{m: map[*nvme.Controller]*Region{}}

// Open discovers c's CMB through its registers, maps it for the CPU and the
// bus (nvme.Controller.MapCMB: the transport's BAR mapping, then CMBMSC =
// CBA | CMSE | CRE) and returns it as a Region. A controller without a CMB,
// or whose CMB may hold neither read nor write data, is ErrNoCMB with the
// controller's name. Calls for the same controller share one Region; each
// must be matched by Close.
func Open(c *nvme.Controller) (*Region, error) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if r := registry.m[c]; r != nil {
		r.mu.Lock()
		r.refs++
		r.mu.Unlock()
		return r, nil
	}
	name := c.Name()
	if _, ok := c.CMBInfo(); !ok { // sets CMBMSC.CRE under the driver's lock
		return nil, kindf(ErrNoCMB, "%s has no controller memory buffer", name)
	}
	cmb, err := Discover(c.Transport())
	if err != nil {
		return nil, err
	}
	if !cmb.ReadData && !cmb.WriteData {
		return nil, kindf(ErrNoCMB, "the CMB of %s may hold neither read nor write data (CMBSZ %#08x: RDS and WDS clear)", name, cmb.SZ)
	}
	dma, _, err := c.MapCMB()
	if err != nil {
		if errors.Is(err, nvme.ErrNotSupported) {
			return nil, kindf(ErrNoCMB, "map the CMB of %s: %v", name, err)
		}
		return nil, errors.Wrapf(err, "p2pdma: map the CMB of %s", name)
	}
	if uint64(len(dma.Buf)) != cmb.Size {
		return nil, errors.Errorf("p2pdma: the CMB of %s maps %d bytes, CMBSZ says %d", name, len(dma.Buf), cmb.Size)
	}
	if cmb.Modern {
		t := c.Transport()
		msc := t.Read64(nvme.RegCMBMSC)
		if msc&nvme.CMBMSCCMSE == 0 || msc&^0xfff != dma.IOVA {
			return nil, errors.Errorf("p2pdma: the CMB of %s is not enabled at %#x (CMBMSC %#x)", name, dma.IOVA, msc)
		}
		if st := t.Read32(nvme.RegCMBSTS); st&cmbstsCBAI != 0 {
			return nil, errors.Errorf("p2pdma: %s rejected CMB base address %#x (CMBSTS %#x)", name, dma.IOVA, st)
		}
		cmb.Enabled, cmb.BusAddr = true, dma.IOVA
	}
	a, err := NewAllocator(cmb.Size)
	if err != nil {
		return nil, errors.Wrapf(err, "the CMB of %s", name)
	}
	r := &Region{owner: c, cmb: cmb, dma: dma, alloc: a, refs: 1, peers: map[*nvme.Controller]*nvme.DMA{c: dma}}
	registry.m[c] = r
	return r, nil
}

// OpenAny opens the CMB of the first controller in cs that has one usable
// for data. The error names every controller and why it did not qualify.
func OpenAny(cs []*nvme.Controller) (*Region, error) {
	var why []string
	for _, c := range cs {
		r, err := Open(c)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, ErrNoCMB) {
			return nil, err
		}
		why = append(why, err.Error())
	}
	if len(why) == 0 {
		return nil, kindf(ErrNoCMB, "no controllers")
	}
	return nil, kindf(ErrNoCMB, "%s", strings.Join(why, "; "))
}

// Close drops one reference; the last one removes the peers' IOMMU
// mappings (the CMB itself stays mapped for the owner until the controller
// closes). Blocks still allocated at the last Close are an error.
func (r *Region) Close() error {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refs == 0 {
		return errors.Errorf("p2pdma: region %s closed twice", r.Name())
	}
	r.refs--
	if r.refs > 0 {
		return nil
	}
	delete(registry.m, r.owner)
	var first error
	for i := len(r.undo) - 1; i >= 0; i-- {
		if err := r.undo[i](); err != nil && first == nil {
			first = err
		}
	}
	r.undo, r.peers = nil, nil
	if n := r.alloc.Stats().Blocks; n > 0 && first == nil {
		first = errors.Errorf("p2pdma: region %s closed with %d blocks allocated", r.Name(), n)
	}
	return first
}

// Owner returns the controller whose CMB this is.
func (r *Region) Owner() *nvme.Controller { return r.owner }

// Name describes the region, e.g. "cmb of mock1".
func (r *Region) Name() string { return "cmb of " + r.owner.Name() }

// cmbReadCharger is a transport whose CMB is emulated in host memory and
// that charges host CPU reads of it what an uncached BAR read costs
// (nvme/mock).
type cmbReadCharger interface {
	CMBReadCost() time.Duration
	ChargeCMBRead(n int)
}

// EmulatedReadCost returns what the emulated CMB charges a CPU read of 64
// bytes, or 0 for real memory (whose reads cost what they cost) and for an
// emulated CMB whose reads are free.
func (r *Region) EmulatedReadCost() time.Duration {
	if t, ok := r.owner.Transport().(cmbReadCharger); ok {
		return t.CMBReadCost()
	}
	return 0
}

// ChargeCPURead charges a host CPU read of n bytes of the region, if its
// CMB is emulated (see EmulatedReadCost): on the calling core.
func (r *Region) ChargeCPURead(n int) {
	if t, ok := r.owner.Transport().(cmbReadCharger); ok {
		t.ChargeCMBRead(n)
	}
}

// CMB returns what discovery found.
func (r *Region) CMB() CMB { return r.cmb }

// Size returns the region's size in bytes.
func (r *Region) Size() uint64 { return uint64(len(r.dma.Buf)) }

// Mem returns the CPU mapping. Over VFIO it is uncached device memory.
func (r *Region) Mem() []byte { return r.dma.Buf }

// BusAddr returns the address the owner uses for the region (CMBMSC.CBA).
func (r *Region) BusAddr() uint64 { return r.dma.IOVA }

// Allocator returns the region's allocator.
func (r *Region) Allocator() *Allocator { return r.alloc }

// CanRead reports whether c's Reads may land in the region: peers treat it
// as memory; the owner needs CMBSZ.RDS.
func (r *Region) CanRead(c *nvme.Controller) bool { return c != r.owner || r.cmb.ReadData }

// CanWrite reports whether c's Writes may take data from the region: peers
// treat it as memory; the owner needs CMBSZ.WDS.
func (r *Region) CanWrite(c *nvme.Controller) bool { return c != r.owner || r.cmb.WriteData }

// Peer registers c as a user of the region and returns the region as c
// sees it: Buf is the CPU mapping, IOVA the address c puts in its commands.
// The owner's transport decides whether and how c reaches the CMB
// (CMBSharer): on the mock bus every controller of the owner's bus reaches
// it where the owner mapped it; over VFIO the CMB's BAR mmap is mapped into
// c's IOMMU address space unless c shares the owner's container. A
// controller with no path is ErrNoPeerPath. Registration lasts until the
// region's last Close.
func (r *Region) Peer(c *nvme.Controller) (*nvme.DMA, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refs == 0 {
		return nil, errors.Errorf("p2pdma: region %s is closed", r.Name())
	}
	if v := r.peers[c]; v != nil {
		return v, nil
	}
	sh, ok := r.owner.Transport().(CMBSharer)
	if !ok {
		return nil, kindf(ErrNoPeerPath, "transport %T of %s cannot share its CMB", r.owner.Transport(), r.owner.Name())
	}
	v, undo, reachable, err := sh.ShareCMB(c.Transport(), r.dma)
	if !reachable {
		return nil, kindf(ErrNoPeerPath, "%v", err)
	}
	if err != nil {
		return nil, errors.Wrap(err, "p2pdma")
	}
	if undo != nil {
		r.undo = append(r.undo, undo)
	}
	r.peers[c] = v
	return v, nil
}

// Block is an allocated part of a region.
type Block struct {
	Off  uint64 // offset in the region
	Size int    // bytes requested (the block occupies BlockSize(Size))
}

// Alloc allocates size bytes, aligned to BlockSize(size), or fails with
// ErrFull.
func (r *Region) Alloc(size int) (Block, error) {
	off, err := r.alloc.Alloc(size)
	if err != nil {
		return Block{}, r.wrap(err)
	}
	return Block{Off: off, Size: size}, nil
}

// wrap prefixes err with the region's name, keeping its kind.
func (r *Region) wrap(err error) error {
	if errors.Is(err, ErrFull) {
		return kindf(ErrFull, "%s: %v", r.Name(), err)
	}
	return errors.Wrap(err, r.Name())
}

// AllocWait is Alloc that waits for space until ctx ends.
func (r *Region) AllocWait(ctx context.Context, size int) (Block, error) {
	off, err := r.alloc.AllocWait(ctx, size)
	if err != nil {
		return Block{}, r.wrap(err)
	}
	return Block{Off: off, Size: size}, nil
}

// Free returns a block.
func (r *Region) Free(b Block) error { return r.alloc.Free(b.Off) }

// Buffer returns block b as a bdev buffer in view (from Peer): the memory
// the controller of view reads into or writes from.
func (b Block) Buffer(view *nvme.DMA) bdev.Buffer {
	return bdev.Buffer{Bytes: view.Buf[b.Off : b.Off+uint64(b.Size) : b.Off+uint64(b.Size)], DMA: view, Off: int(b.Off)}
}
