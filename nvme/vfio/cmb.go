package vfio

import (
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/nvme"
)

// NVMe controller registers used for the CMB (NVMe base spec 3.1.4).
const (
	regCAP    = 0x00
	regCMBLOC = 0x38
	regCMBSZ  = 0x3c
	regCMBMSC = 0x50
	regCMBSTS = 0x58

	capCMBS       = 1 << 57
	cmbmscCRE     = 1 << 0 // capabilities registers enabled
	cmbmscCMSE    = 1 << 1 // controller memory space enabled
	cmbstsCBAI    = 1 << 0 // controller base address invalid
	cmbszSQS      = 1 << 0
	cmbszCQS      = 1 << 1
	cmbszLISTS    = 1 << 2
	cmbszRDS      = 1 << 3
	cmbszWDS      = 1 << 4
	cmbAlignBytes = 2 << 20
)

// ErrNoCMB is returned by Device.CMB for a controller without a controller
// memory buffer.
var ErrNoCMB = errors.New("controller has no CMB")

// CMB is a controller memory buffer: controller memory in one of its BARs
// that the CPU maps and that the controller, and through the IOMMU its
// peers, use for queues and data. This is what p2pdma builds on:
//
//   - Mem is the CPU mapping (uncached device memory: use ReadAt/WriteAt,
//     which access it at widths every device accepts),
//   - BusAddr is the address the owning controller uses for it in PRPs and
//     queue base addresses,
//   - Device.MapPeer maps it into another device's IOMMU address space and
//     returns the address that device uses.
type CMB struct {
	owner   *Device
	m       *mmio
	bar     int
	offset  uint64
	size    uint64
	busAddr uint64
	loc, sz uint32
	modern  bool // NVMe 1.4: the host sets the address through CMBMSC

	mu     sync.Mutex
	maps   map[*Container]*cmbMap
	closed bool
}

type cmbMap struct {
	iova   uint64
	mapped bool
	refs   int
}

// CMBFeatures says what a CMB may hold (CMBSZ).
type CMBFeatures struct {
	SubmissionQueues bool // SQS
	CompletionQueues bool // CQS
	PRPLists         bool // LISTS: PRP and SGL lists
	ReadData         bool // RDS: data of commands that transfer to the host
	WriteData        bool // WDS: data of commands that transfer to the controller
}

// decodeCMB turns CMBLOC and CMBSZ into BAR index, offset in the BAR and
// size in bytes.
func decodeCMB(loc, sz uint32) (bar int, offset, size uint64, err error) {
	szu := (sz >> 8) & 0xf
	if szu > 6 {
		return 0, 0, 0, errors.Errorf("vfio: CMBSZ %#x has reserved size unit %d", sz, szu)
	}
	unit := uint64(4096) << (4 * szu)
	size = uint64(sz>>12) * unit
	offset = uint64(loc>>12) * unit
	bar = int(loc & 7)
	if size == 0 {
		return 0, 0, 0, ErrNoCMB
	}
	if bar == 1 || bar >= numBARs {
		return 0, 0, 0, errors.Errorf("vfio: CMBLOC %#x names BAR%d, which cannot hold a CMB", loc, bar)
	}
	return bar, offset, size, nil
}

// barMap is a BAR mapped for the CPU and into the device's own IOMMU
// address space, so the controller's peers in the container reach it.
type barMap struct {
	m      *mmio
	iova   uint64
	mapped bool // the IOMMU maps it (peers can reach it)
	mapErr error
}

// MapBAR maps BAR bir for the CPU and into the IOMMU of the device's
// container, and returns it as a DMA region: Buf is the CPU view (uncached
// device memory), IOVA the bus address the controller and devices in its
// container use for it. The IOVA is the BAR's own bus address when that
// range is free in the container (a pre-1.4 CMB is recognised by it), any
// free range otherwise. It implements nvme.BARMapper; the mapping lasts until
// Close. The memory must not be passed to FreeDMA.
func (d *Device) MapBAR(bir int) (*nvme.DMA, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	bm, err := d.mapBARLocked(bir)
	if err != nil {
		return nil, err
	}
	return &nvme.DMA{Buf: bm.m.mem, IOVA: bm.iova}, nil
}

func (d *Device) mapBARLocked(bir int) (*barMap, error) {
	if d.closed {
		return nil, errors.New("vfio: MapBAR on a closed device")
	}
	if bir < 0 || bir >= numBARs {
		return nil, errors.Errorf("vfio: %s has no BAR%d", d.addr, bir)
	}
	if d.barMaps[bir] != nil {
		return d.barMaps[bir], nil
	}
	m, err := d.mapBAR(bir)
	if err != nil {
		return nil, err
	}
	size := (uint64(m.size) + pageSize - 1) &^ (pageSize - 1)
	bm := &barMap{m: m}
	if bus, err := d.barAddress(bir); err == nil && bus != 0 && bus%pageSize == 0 && d.c.reserveIOVA(bus, size) {
		bm.iova = bus
	} else if bm.iova, err = d.c.allocIOVA(size, cmbAlignBytes); err != nil {
		return nil, err
	}
	if err := d.c.mapDMA(m.base, bm.iova, size); err != nil {
		// The controller reaches its own BAR without the IOMMU; only peers
		// need the mapping. Keep going and report it to MapPeer.
		bm.mapErr = err
		d.logf("vfio: %s BAR%d cannot be mapped into the IOMMU (peers will not reach it): %v", d.addr, bir, err)
	} else {
		bm.mapped = true
	}
	d.barMaps[bir] = bm
	return bm, nil
}

func (d *Device) unmapBARs() error {
	var first error
	for i, bm := range d.barMaps {
		if bm == nil {
			continue
		}
		size := (uint64(bm.m.size) + pageSize - 1) &^ (pageSize - 1)
		if bm.mapped {
			if err := d.c.unmapDMA(bm.iova, size); err != nil {
				if first == nil {
					first = err
				}
				d.barMaps[i] = nil
				continue
			}
		}
		d.c.freeIOVA(bm.iova, size)
		d.barMaps[i] = nil
	}
	return first
}

// CMB enables the controller memory buffer, maps it for the CPU and gives
// it a bus address (MapBAR of its BAR plus its offset). For an NVMe 1.4 CMB
// it first sets CMBMSC.CRE (CMBLOC and CMBSZ read 0 until then), then
// programs the bus address as the controller base address (CMBMSC.CBA) with
// CMSE set. Call it before enabling the controller; a driver that maps the
// CMB itself (nvme.Controller.MapCMB) obtains the same bus address through
// MapBAR. Repeated calls return the same CMB.
func (d *Device) CMB() (*CMB, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("vfio: CMB of a closed device")
	}
	if d.cmb != nil {
		return d.cmb, nil
	}
	modern := d.Read64(regCAP)&capCMBS != 0
	if msc := d.Read64(regCMBMSC); modern && msc&cmbmscCRE == 0 {
		// Only set CRE: a driver may have enabled the CMB already, and
		// clearing CMSE under it would pull memory from running commands.
		d.Write64(regCMBMSC, msc|cmbmscCRE)
	}
	loc, sz := d.Read32(regCMBLOC), d.Read32(regCMBSZ)
	if sz == 0 || sz == ^uint32(0) {
		return nil, errors.Wrapf(ErrNoCMB, "vfio: %s", d.addr)
	}
	bar, off, size, err := decodeCMB(loc, sz)
	if err != nil {
		return nil, errors.Wrapf(err, "vfio: %s", d.addr)
	}
	r := d.regions[bar]
	if off+size > r.Size || off+size < off {
		return nil, errors.Errorf("vfio: %s CMB [%#x+%#x] lies outside BAR%d (%#x bytes)", d.addr, off, size, bar, r.Size)
	}
	bm, err := d.mapBARLocked(bar)
	if err != nil {
		return nil, err
	}
	c := &CMB{owner: d, bar: bar, offset: off, size: size, loc: loc, sz: sz, modern: modern,
		busAddr: bm.iova + off, maps: map[*Container]*cmbMap{}}
	c.m = newMMIO(bm.m.mem[off : off+size])
	if !modern {
		if bus, err := d.barAddress(bar); err != nil || bus != bm.iova {
			d.logf("vfio: %s has a pre-1.4 CMB but its BAR address is taken in the IOMMU space; peers cannot use it", d.addr)
		}
	}
	if err := c.program(); err != nil {
		return nil, err
	}
	d.cmb = c
	return c, nil
}

// barAddress reads the bus address of BAR i from configuration space.
func (d *Device) barAddress(i int) (uint64, error) {
	lo, err := d.Config32(cfgBAR0 + 4*int64(i))
	if err != nil {
		return 0, err
	}
	addr := uint64(lo) & barAddrMask
	if lo&barTypeMask == barMem64 && i < numBARs-1 {
		hi, err := d.Config32(cfgBAR0 + 4*int64(i+1))
		if err != nil {
			return 0, err
		}
		addr |= uint64(hi) << 32
	}
	return addr, nil
}

// program (re)writes CMBMSC: CRE first, then CBA with CMSE.
func (c *CMB) program() error {
	if !c.modern {
		return nil
	}
	d := c.owner
	want := c.busAddr | cmbmscCMSE | cmbmscCRE
	if d.Read64(regCMBMSC) == want {
		return nil // already enabled at this address (by a driver's MapCMB)
	}
	d.Write64(regCMBMSC, cmbmscCRE)
	d.Write64(regCMBMSC, want)
	if st := d.Read32(regCMBSTS); st&cmbstsCBAI != 0 {
		return errors.Errorf("vfio: %s rejected CMB base address %#x (CMBSTS %#x)", d.addr, c.busAddr, st)
	}
	return nil
}

// Size returns the CMB's size in bytes.
func (c *CMB) Size() uint64 { return c.size }

// BusAddr returns the address the owning controller uses for the CMB in
// commands and queue base addresses. Devices in the owner's container reach
// it at this address too.
func (c *CMB) BusAddr() uint64 { return c.busAddr }

// BAR returns the BAR holding the CMB and the CMB's offset in it.
func (c *CMB) BAR() (bar int, offset uint64) { return c.bar, c.offset }

// Mem returns the CPU mapping of the CMB. It is uncached device memory:
// prefer ReadAt and WriteAt, and never use atomics on it.
func (c *CMB) Mem() []byte { return c.m.mem }

// Owner returns the device whose CMB this is.
func (c *CMB) Owner() *Device { return c.owner }

// Features returns what the CMB may hold.
func (c *CMB) Features() CMBFeatures {
	return CMBFeatures{
		SubmissionQueues: c.sz&cmbszSQS != 0,
		CompletionQueues: c.sz&cmbszCQS != 0,
		PRPLists:         c.sz&cmbszLISTS != 0,
		ReadData:         c.sz&cmbszRDS != 0,
		WriteData:        c.sz&cmbszWDS != 0,
	}
}

// DMA returns the CMB as the owning controller sees it: Buf is the CPU
// mapping and IOVA the bus address.
func (c *CMB) DMA() *nvme.DMA { return &nvme.DMA{Buf: c.m.mem, IOVA: c.busAddr} }

// ReadAt copies CMB bytes at off into p with 8- and 4-byte loads.
func (c *CMB) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || uint64(off) > c.size {
		return 0, errors.Errorf("vfio: CMB read at %#x outside %#x bytes", off, c.size)
	}
	n := c.m.copyOut(p, uint64(off))
	if n < len(p) {
		return n, errors.Errorf("vfio: CMB read of %d bytes at %#x crosses its end (%#x)", len(p), off, c.size)
	}
	return n, nil
}

// WriteAt copies p into the CMB at off with 8- and 4-byte stores.
func (c *CMB) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || uint64(off) > c.size {
		return 0, errors.Errorf("vfio: CMB write at %#x outside %#x bytes", off, c.size)
	}
	n := c.m.copyIn(uint64(off), p)
	if n < len(p) {
		return n, errors.Errorf("vfio: CMB write of %d bytes at %#x crosses its end (%#x)", len(p), off, c.size)
	}
	return n, nil
}

// MapPeer makes peer CMB c reachable by DMA from d: it maps c's BAR into
// d's IOMMU address space (its container) and returns c as d sees it: Buf is
// the CPU mapping, IOVA the address d puts in its commands. In the owner's
// container that address is c.BusAddr(); elsewhere the same address is used
// when it is free. For d == c.Owner() it returns c.DMA() and maps nothing.
// The mapping lasts until UnmapPeer, d.Close or the owner's Close.
//
// Peer-to-peer DMA needs a path between the devices that the platform
// routes (ACS and root-port P2P support on real hardware).
func (d *Device) MapPeer(c *CMB) (*nvme.DMA, error) {
	if c.owner == d {
		return c.DMA(), nil
	}
	if d.c == c.owner.c {
		// MapBAR already put the whole BAR into this IOMMU address space.
		c.owner.mu.Lock()
		bm, closed := c.owner.barMaps[c.bar], c.owner.closed
		c.owner.mu.Unlock()
		if closed || bm == nil {
			return nil, errors.Errorf("vfio: CMB of %s is closed", c.owner.addr)
		}
		if !bm.mapped {
			return nil, errors.Wrapf(bm.mapErr, "vfio: CMB of %s is not in the IOMMU for %s", c.owner.addr, d.addr)
		}
		return &nvme.DMA{Buf: c.m.mem, IOVA: c.busAddr}, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("vfio: MapPeer on a closed device")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.Errorf("vfio: CMB of %s is closed", c.owner.addr)
	}
	mm := c.maps[d.c]
	if mm == nil {
		mm = &cmbMap{}
		if d.c.reserveIOVA(c.busAddr, c.size) {
			mm.iova = c.busAddr
		} else {
			iova, err := d.c.allocIOVA(c.size, cmbAlignBytes)
			if err != nil {
				return nil, err
			}
			mm.iova = iova
		}
		c.maps[d.c] = mm
	}
	if !mm.mapped {
		if err := d.c.mapDMA(c.m.base, mm.iova, c.size); err != nil {
			if mm.refs == 0 {
				d.c.freeIOVA(mm.iova, c.size)
				delete(c.maps, d.c)
			}
			return nil, errors.Wrapf(err, "vfio: map CMB of %s for %s", c.owner.addr, d.addr)
		}
		mm.mapped = true
	}
	if !d.peers[c] {
		d.peers[c] = true
		mm.refs++
	}
	return &nvme.DMA{Buf: c.m.mem, IOVA: mm.iova}, nil
}

// UnmapPeer undoes MapPeer(c).
func (d *Device) UnmapPeer(c *CMB) error {
	if c.owner == d || d.c == c.owner.c {
		return nil // the owner's BAR mapping stays until the owner closes
	}
	d.mu.Lock()
	had := d.peers[c]
	delete(d.peers, c)
	d.mu.Unlock()
	if !had {
		return errors.Errorf("vfio: CMB of %s is not mapped for %s", c.owner.addr, d.addr)
	}
	return c.unmapFrom(d.c)
}

func (c *CMB) unmapFrom(ct *Container) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	mm := c.maps[ct]
	if mm == nil || c.closed {
		return nil
	}
	mm.refs--
	if mm.refs > 0 {
		return nil
	}
	var err error
	if mm.mapped {
		err = ct.unmapDMA(mm.iova, c.size)
		mm.mapped = false
	}
	if err == nil {
		ct.freeIOVA(mm.iova, c.size)
		delete(c.maps, ct)
	}
	return err
}

// close removes the CMB from every IOMMU it is mapped into and disables it.
func (c *CMB) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var first error
	for ct, mm := range c.maps {
		if mm.mapped {
			if err := ct.unmapDMA(mm.iova, c.size); err != nil && first == nil {
				first = err
				continue
			}
		}
		ct.freeIOVA(mm.iova, c.size)
	}
	c.maps = nil
	if c.modern {
		c.owner.Write64(regCMBMSC, 0)
	}
	return first
}

// ShareCMB makes d's CMB reachable by peer, another VFIO device: the BAR
// mmap is mapped into peer's IOMMU address space (MapPeer) unless peer
// shares d's container, where it is mapped already; undo unmaps it. cmb is
// d's own mapping of the CMB (nvme.Controller.MapCMB); the view peer uses
// comes from d's CMB. A peer that is not a VFIO device, or whose IOMMU
// cannot map the BAR, is unreachable. (p2pdma.CMBSharer)
func (d *Device) ShareCMB(peer nvme.Transport, cmb *nvme.DMA) (view *nvme.DMA, undo func() error, reachable bool, err error) {
	pd, ok := peer.(*Device)
	if !ok {
		return nil, nil, false, errors.Errorf("%s is not a VFIO device like %s", peer.Name(), d.Name())
	}
	vc, err := d.CMB()
	if err != nil {
		return nil, nil, true, errors.Wrapf(err, "CMB of %s", d.Name())
	}
	v, err := pd.MapPeer(vc)
	if err != nil {
		return nil, nil, false, err
	}
	return v, func() error { return pd.UnmapPeer(vc) }, true, nil
}

// SharesHostMemory reports whether other is a VFIO device of d's IOMMU
// container, which reaches d's DMA memory at the same address.
// (p2pdma.HostMemorySharer)
func (d *Device) SharesHostMemory(other nvme.Transport) bool {
	o, ok := other.(*Device)
	return ok && o.c == d.c
}
