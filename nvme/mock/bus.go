// Package mock is an emulated NVMe 2.0 controller behind nvme.Transport: the
// CI stand-in for real hardware. Registers and doorbells behave as in the
// spec, SQ and CQ rings live in host DMA memory the driver allocated, and the
// device reaches host memory only through an emulated bus with an IOMMU, so a
// DMA to an unmapped address faults (and completes with Data Transfer Error).
//
// A Bus holds the IOMMU and any number of controllers; each controller has
// namespaces backed by sparse memory, by a file, or by nothing (null). The
// controller runs inline (commands execute when the doorbell is written, in the
// writer's goroutine: deterministic) or on its own reactor (device-core mode,
// in parallel like hardware). Faults are injected deterministically by seed.
//
// Controllers with the same Config.Subsystem form one NVM subsystem
// (Identify SUBNQN, CMIC). A compute controller's Memory Copy from another
// controller of its subsystem is a peer transfer: that controller executes a
// Read whose DMA lands in the compute controller's memory at its bus address
// (peer.go), counted as peer memory traffic; controllers of other subsystems
// are unreachable. A host CPU read of an emulated CMB costs what an uncached
// BAR read does (Config.CMBReadCost, charged by ChargeCMBRead).
//
// Like hardware with independent queues, nothing a command does writes a
// cache line that another queue's commands write: the counters (bus bytes
// and faults, SMART, fault hits, the error log) are kept per queue and
// summed when read, and the shared tables (IOMMU map, controllers on the
// bus, namespaces, fault rules) are read without locks and replaced
// copy-on-write. See stats.go.
package mock

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/pkg/errors"
)

// MemKind says where memory mapped on the bus lives.
type MemKind int

const (
	// HostMemory is host DRAM (DMA buffers the driver allocated).
	HostMemory MemKind = iota
	// PeerMemory is device memory exposed on the bus, such as a CMB.
	PeerMemory
	numKinds
)

// String returns "host" or "peer".
func (k MemKind) String() string {
	if k == PeerMemory {
		return "peer"
	}
	return "host"
}

type region struct {
	iova uint64
	buf  []byte
	kind MemKind
}

// BusStats counts DMA traffic through the bus by where it went.
type BusStats struct {
	// Faults counts DMA accesses to unmapped or partially mapped addresses.
	Faults uint64
	// HostRead and HostWrite count payload bytes devices read from / wrote to
	// host memory; PeerRead and PeerWrite those to peer memory (CMBs).
	HostRead, HostWrite, PeerRead, PeerWrite uint64
}

// Bus is an emulated PCIe bus with an IOMMU shared by its controllers. Every
// device access to host or peer memory goes through Bus.access.
type Bus struct {
	mu       sync.Mutex
	regions  atomic.Pointer[[]region] // sorted by iova, copy-on-write
	nextIOVA uint64
	nextCtrl int
	// ctrls holds the controllers by index (device-to-device access, compute
	// state, statistics): copy-on-write under mu, read without a lock.
	ctrls atomic.Pointer[[]*attached]
}

// iovaBase is the first IOVA handed out; lower addresses stay unmapped so
// that small bogus addresses fault.
const iovaBase = 0x1000_0000

// NewBus returns an empty bus.
func NewBus() *Bus {
	b := &Bus{nextIOVA: iovaBase}
	b.regions.Store(&[]region{})
	return b
}

// Map maps buf into the IOMMU at a fresh 4 KiB-aligned IOVA and returns it.
// A guard page after each mapping stays unmapped.
func (b *Bus) Map(buf []byte, kind MemKind) (uint64, error) {
	if len(buf) == 0 {
		return 0, errors.New("mock: map of an empty buffer")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	iova := b.nextIOVA
	b.nextIOVA += (uint64(len(buf)) + 4095) &^ 4095
	b.nextIOVA += 4096
	b.insertLocked(region{iova: iova, buf: buf, kind: kind})
	return iova, nil
}

// MapAt maps buf at iova, failing if it overlaps an existing mapping.
func (b *Bus) MapAt(iova uint64, buf []byte, kind MemKind) error {
	if len(buf) == 0 {
		return errors.New("mock: map of an empty buffer")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	end := iova + uint64(len(buf))
	if end < iova {
		return errors.Errorf("mock: mapping at %#x of %d bytes wraps", iova, len(buf))
	}
	for _, r := range *b.regions.Load() {
		if iova < r.iova+uint64(len(r.buf)) && r.iova < end {
			return errors.Errorf("mock: mapping [%#x,%#x) overlaps [%#x,%#x)", iova, end, r.iova, r.iova+uint64(len(r.buf)))
		}
	}
	b.insertLocked(region{iova: iova, buf: buf, kind: kind})
	if end > b.nextIOVA {
		b.nextIOVA = (end+4095)&^4095 + 4096
	}
	return nil
}

func (b *Bus) insertLocked(r region) {
	old := *b.regions.Load()
	n := make([]region, 0, len(old)+1)
	n = append(n, old...)
	n = append(n, r)
	sort.Slice(n, func(i, j int) bool { return n[i].iova < n[j].iova })
	b.regions.Store(&n)
}

// Unmap removes the mapping that starts at iova.
func (b *Bus) Unmap(iova uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.regions.Load()
	for i, r := range old {
		if r.iova == iova {
			n := make([]region, 0, len(old)-1)
			n = append(n, old[:i]...)
			n = append(n, old[i+1:]...)
			b.regions.Store(&n)
			return nil
		}
	}
	return errors.Errorf("mock: unmap of %#x: not mapped", iova)
}

// Translate returns the memory at [iova, iova+n) if one mapping covers it.
func (b *Bus) Translate(iova uint64, n int) ([]byte, MemKind, bool) {
	rs := *b.regions.Load()
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].iova <= iova {
			lo = m + 1
		} else {
			hi = m
		}
	}
	i := lo - 1
	if i < 0 {
		return nil, 0, false
	}
	r := &rs[i]
	off := iova - r.iova
	if n < 0 || off >= uint64(len(r.buf)) || uint64(n) > uint64(len(r.buf))-off {
		return nil, 0, false
	}
	return r.buf[off : off+uint64(n) : off+uint64(n)], r.kind, true
}

// access is the one path for device DMA: it translates [iova, iova+n) and
// counts, in st (the counters of the queue whose command does the DMA), the
// payload bytes (count=true) by memory kind and direction, or a fault.
func (b *Bus) access(st *counters, iova uint64, n int, write, count bool) ([]byte, bool) {
	m, kind, ok := b.Translate(iova, n)
	if !ok {
		st.busFaults.Add(1)
		return nil, false
	}
	if count {
		d := 0
		if write {
			d = 1
		}
		st.bus[kind][d].Add(uint64(n))
	}
	return m, true
}

// Stats returns the bus counters: the sums of the per-queue counters of
// every controller that has been on the bus.
func (b *Bus) Stats() BusStats {
	var s BusStats
	for _, a := range b.attachedList() {
		if a == nil {
			continue
		}
		c := a.c
		s.Faults += c.sum(func(x *counters) *atomic.Uint64 { return &x.busFaults })
		s.HostRead += c.sum(func(x *counters) *atomic.Uint64 { return &x.bus[HostMemory][0] })
		s.HostWrite += c.sum(func(x *counters) *atomic.Uint64 { return &x.bus[HostMemory][1] })
		s.PeerRead += c.sum(func(x *counters) *atomic.Uint64 { return &x.bus[PeerMemory][0] })
		s.PeerWrite += c.sum(func(x *counters) *atomic.Uint64 { return &x.bus[PeerMemory][1] })
	}
	return s
}

func (b *Bus) attachedList() []*attached {
	if l := b.ctrls.Load(); l != nil {
		return *l
	}
	return nil
}

// attached is a controller on the bus with its compute device state.
type attached struct {
	c  *Controller
	cp computeState
}

// attach records c so that peers can address it by controller ID.
func (b *Bus) attach(c *Controller) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.attachedList()
	n := make([]*attached, max(len(old), c.index+1))
	copy(n, old)
	n[c.index] = &attached{c: c}
	b.ctrls.Store(&n)
}

// peerOf returns the controller whose CNTLID is cntlid if c reaches it: it
// is open and in c's NVM subsystem. Otherwise it returns nil and why.
func (b *Bus) peerOf(c *Controller, cntlid uint16) (*Controller, string) {
	l := b.attachedList()
	i := int(cntlid) - 1
	if i < 0 || i >= len(l) || l[i] == nil {
		return nil, "no such controller on the bus"
	}
	p := l[i].c
	if p.closed.Load() {
		return nil, "the controller is closed"
	}
	if p.subsystem() != c.subsystem() {
		return nil, "the controller is in NVM subsystem " + p.subsystem() + ", not in " + c.subsystem()
	}
	return p, ""
}

// computeOf returns the compute state of c.
func (b *Bus) computeOf(c *Controller) *computeState {
	return &b.attachedList()[c.index].cp
}
