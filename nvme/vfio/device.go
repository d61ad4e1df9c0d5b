package vfio

import (
	"log"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/pci"
)

// Options configure Open. The zero value (or nil) gives a device in its own
// container with the best IOMMU backend and hugepage DMA memory.
type Options struct {
	// Container to join. Devices that move data to each other (peer CMBs)
	// share one; nil creates a container that closes with the device.
	Container *Container
	// Root is the system root for sysfs and /dev ("" means "/"); only for a
	// private container.
	Root string
	// IOMMUType forces the IOMMU backend of a private container (see
	// ContainerOptions.IOMMUType).
	IOMMUType int
	// NoHugePages takes DMA memory from locked 4 KiB pages instead of 2 MiB
	// hugepages, without the warning.
	NoHugePages bool
	// Reset issues VFIO_DEVICE_RESET after opening (vfio-pci already resets
	// a function that supports it when the device file is opened).
	Reset bool
	// Logf receives warnings; nil means log.Printf.
	Logf func(format string, args ...any)
}

// Device is an NVMe controller (any PCI function, really) owned through
// VFIO. It implements nvme.Transport. Register accessors are safe for
// concurrent use and never allocate; the other methods run at setup time.
type Device struct {
	addr    pci.Addr
	name    string
	c       *Container
	g       *group
	fd      int
	flags   uint32
	regions []Region
	bar0    atomic.Pointer[mmio]
	bars    [numBARs]*mmio
	barMaps [numBARs]*barMap
	pool    *dmaPool
	logf    func(string, ...any)

	mu     sync.Mutex
	cmb    *CMB
	peers  map[*CMB]bool // peer CMBs this device mapped into its container
	irqs   []*IRQ
	closed bool
}

var (
	_ nvme.Transport = (*Device)(nil)
	_ nvme.BARMapper = (*Device)(nil)
)

// PCI configuration space offsets and command register bits.
const (
	cfgCommand   = 0x04
	cmdMemory    = 1 << 1
	cmdMaster    = 1 << 2
	cmdINTxOff   = 1 << 10
	cfgBAR0      = 0x10
	barMem64     = 0x4
	barTypeMask  = 0x6
	barAddrMask  = ^uint64(0xf)
	bar0MinBytes = 0x1000 + 8 // registers plus the admin doorbells
)

// Open takes the PCI function at addr ("pci:0000:01:00.0" or
// "0000:01:00.0"), which must be bound to vfio-pci, maps BAR0 and enables
// memory decoding and bus mastering.
func Open(addr string, o *Options) (_ *Device, err error) {
	if o == nil {
		o = &Options{}
	}
	a, err := pci.ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	logf := o.Logf
	if logf == nil {
		logf = log.Printf
	}
	c := o.Container
	root := o.Root
	if c == nil {
		if c, err = OpenContainer(ContainerOptions{Root: root, IOMMUType: o.IOMMUType}); err != nil {
			return nil, err
		}
		c.addDevice()
		c.Close() // closes for real when the device does
	} else {
		root = c.host.Root
		c.addDevice()
	}
	d := &Device{addr: a, name: a.DevString(), c: c, fd: -1, logf: logf, peers: map[*CMB]bool{}}
	defer func() {
		if err != nil {
			d.release()
		}
	}()
	h := &pci.Host{Root: root}
	f, err := h.Function(a)
	if err != nil {
		return nil, err
	}
	if f.Driver != pci.DriverVFIO {
		drv := f.Driver
		if drv == "" {
			drv = "no driver"
		}
		return nil, errors.Errorf("vfio: %s is bound to %s, not vfio-pci: run 'bpfblk setup' (or bind it through driver_override)", a, drv)
	}
	if f.IOMMUGroup < 0 {
		return nil, errors.Errorf("vfio: %s has no IOMMU group: the kernel runs without an IOMMU", a)
	}
	if d.g, err = c.attach(f.IOMMUGroup, a); err != nil {
		return nil, err
	}
	name := append([]byte(a.String()), 0)
	fd, err := ioctlPtr(d.g.fd, ioctlGroupGetDeviceFD, unsafe.Pointer(&name[0]))
	if err != nil {
		return nil, errors.Wrapf(err, "vfio: get device %s from IOMMU group %d", a, f.IOMMUGroup)
	}
	d.fd = int(fd)
	unix.CloseOnExec(d.fd)
	di := deviceInfo{argsz: uint32(unsafe.Sizeof(deviceInfo{}))}
	if _, err := ioctlPtr(d.fd, ioctlDeviceGetInfo, unsafe.Pointer(&di)); err != nil {
		return nil, errors.Wrapf(err, "vfio: device info of %s", a)
	}
	if di.flags&deviceFlagsPCI == 0 || di.numRegions <= regionConfig {
		return nil, errors.Errorf("vfio: %s is not a PCI device (flags %#x, %d regions)", a, di.flags, di.numRegions)
	}
	d.flags = di.flags
	for i := 0; i <= regionConfig; i++ {
		r, err := d.regionInfo(i)
		if err != nil {
			return nil, err
		}
		d.regions = append(d.regions, r)
	}
	if o.Reset {
		if err := d.Reset(); err != nil {
			return nil, err
		}
	}
	if d.regions[regionBAR0].Size < bar0MinBytes {
		return nil, errors.Errorf("vfio: %s BAR0 is %#x bytes, too small for NVMe registers", a, d.regions[regionBAR0].Size)
	}
	m, err := d.mapBAR(regionBAR0)
	if err != nil {
		return nil, err
	}
	d.bar0.Store(m)
	if err := d.EnableBusMaster(); err != nil {
		return nil, err
	}
	d.pool = newDMAPool(c, logf, o.NoHugePages)
	return d, nil
}

func (d *Device) regionInfo(i int) (Region, error) {
	buf := make([]byte, 256)
	for {
		put32(buf, uint32(len(buf)))
		put32(buf[8:], uint32(i))
		if _, err := ioctlPtr(d.fd, ioctlDeviceRegionInfo, unsafe.Pointer(&buf[0])); err != nil {
			return Region{}, errors.Wrapf(err, "vfio: %s region %d info", d.addr, i)
		}
		r, need, ok := parseRegionInfo(buf)
		if ok {
			return r, nil
		}
		if int(need) <= len(buf) || need > 1<<20 {
			return Region{}, errors.Errorf("vfio: %s region %d info: capability chain needs %d bytes", d.addr, i, need)
		}
		buf = make([]byte, need)
	}
}

// Addr returns the device's PCI address.
func (d *Device) Addr() pci.Addr { return d.addr }

// Container returns the container the device belongs to.
func (d *Device) Container() *Container { return d.c }

// Region returns the VFIO region info of a BAR (0-5) or of the
// configuration space (7).
func (d *Device) Region(i int) (Region, error) {
	if i < 0 || i >= len(d.regions) {
		return Region{}, errors.Errorf("vfio: %s has no region %d", d.addr, i)
	}
	return d.regions[i], nil
}

// mapBAR maps region i (or the parts of it that the kernel lets userspace
// map, with holes left inaccessible) and caches the mapping.
func (d *Device) mapBAR(i int) (*mmio, error) {
	if d.bars[i] != nil {
		return d.bars[i], nil
	}
	r := d.regions[i]
	if !r.Mappable() {
		return nil, errors.Errorf("vfio: %s BAR%d cannot be mmapped (flags %#x, size %#x)", d.addr, i, r.Flags, r.Size)
	}
	prot := unix.PROT_READ | unix.PROT_WRITE
	var base unsafe.Pointer
	var err error
	if r.Sparse == nil || r.MSIXMappable {
		base, err = unix.MmapPtr(d.fd, int64(r.Offset), nil, uintptr(r.Size), prot, unix.MAP_SHARED)
		if err != nil {
			return nil, errors.Wrapf(err, "vfio: mmap %s BAR%d (%#x bytes)", d.addr, i, r.Size)
		}
	} else {
		// Reserve the whole BAR, then map the permitted areas into it.
		base, err = unix.MmapPtr(-1, 0, nil, uintptr(r.Size), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			return nil, errors.Wrapf(err, "vfio: reserve address space for %s BAR%d", d.addr, i)
		}
		for _, s := range r.Sparse {
			if s[0]+s[1] > r.Size || s[1] == 0 {
				continue
			}
			if _, err := unix.MmapPtr(d.fd, int64(r.Offset+s[0]), unsafe.Add(base, s[0]), uintptr(s[1]), prot, unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
				unix.MunmapPtr(base, uintptr(r.Size))
				return nil, errors.Wrapf(err, "vfio: mmap %s BAR%d area [%#x+%#x]", d.addr, i, s[0], s[1])
			}
		}
	}
	m := newMMIO(unsafe.Slice((*byte)(base), r.Size))
	d.bars[i] = m
	return m, nil
}

// ReadConfig reads PCI configuration space at off into b.
func (d *Device) ReadConfig(off int64, b []byte) error {
	r := d.regions[regionConfig]
	if off < 0 || uint64(off)+uint64(len(b)) > r.Size {
		return errors.Errorf("vfio: %s config read [%#x+%d] outside %#x bytes", d.addr, off, len(b), r.Size)
	}
	n, err := unix.Pread(d.fd, b, int64(r.Offset)+off)
	if err == nil && n != len(b) {
		err = errors.Errorf("short read %d of %d", n, len(b))
	}
	return errors.Wrapf(err, "vfio: %s config read at %#x", d.addr, off)
}

// WriteConfig writes b to PCI configuration space at off.
func (d *Device) WriteConfig(off int64, b []byte) error {
	r := d.regions[regionConfig]
	if off < 0 || uint64(off)+uint64(len(b)) > r.Size {
		return errors.Errorf("vfio: %s config write [%#x+%d] outside %#x bytes", d.addr, off, len(b), r.Size)
	}
	n, err := unix.Pwrite(d.fd, b, int64(r.Offset)+off)
	if err == nil && n != len(b) {
		err = errors.Errorf("short write %d of %d", n, len(b))
	}
	return errors.Wrapf(err, "vfio: %s config write at %#x", d.addr, off)
}

// Config16 reads a 16-bit configuration register.
func (d *Device) Config16(off int64) (uint16, error) {
	var b [2]byte
	err := d.ReadConfig(off, b[:])
	return uint16(b[0]) | uint16(b[1])<<8, err
}

// Config32 reads a 32-bit configuration register.
func (d *Device) Config32(off int64) (uint32, error) {
	var b [4]byte
	err := d.ReadConfig(off, b[:])
	return le32(b[:]), err
}

func (d *Device) setCommand(set, clear uint16) error {
	cmd, err := d.Config16(cfgCommand)
	if err != nil {
		return err
	}
	cmd = cmd&^clear | set
	if err := d.WriteConfig(cfgCommand, []byte{byte(cmd), byte(cmd >> 8)}); err != nil {
		return err
	}
	got, err := d.Config16(cfgCommand)
	if err == nil && got&set != set {
		err = errors.Errorf("vfio: %s command register is %#x after writing %#x", d.addr, got, cmd)
	}
	return err
}

// EnableBusMaster turns on memory decoding and bus mastering (and turns
// legacy INTx off) in the PCI command register.
func (d *Device) EnableBusMaster() error { return d.setCommand(cmdMemory|cmdMaster|cmdINTxOff, 0) }

// DisableBusMaster stops the function from issuing DMA.
func (d *Device) DisableBusMaster() error { return d.setCommand(0, cmdMaster) }

// Reset resets the function through VFIO_DEVICE_RESET (a function-level or
// bus reset chosen by the kernel), then restores bus mastering and the CMB
// setup. The controller comes back disabled (CC.EN=0); the driver must
// initialise it again.
func (d *Device) Reset() error {
	if d.flags&deviceFlagsReset == 0 {
		return errors.Errorf("vfio: %s cannot be reset through VFIO (no reset method)", d.addr)
	}
	if _, err := ioctl(d.fd, ioctlDeviceReset, 0); err != nil {
		return errors.Wrapf(err, "vfio: VFIO_DEVICE_RESET of %s", d.addr)
	}
	if d.bar0.Load() == nil {
		return nil // during Open
	}
	if err := d.EnableBusMaster(); err != nil {
		return err
	}
	d.mu.Lock()
	cmb := d.cmb
	d.mu.Unlock()
	if cmb != nil {
		return cmb.program()
	}
	return nil
}

// Name returns "pci:DDDD:BB:DD.F".
func (d *Device) Name() string { return d.name }

// Read32 reads the 32-bit register at off in BAR0 (all ones after Close or
// outside BAR0).
func (d *Device) Read32(off uint32) uint32 {
	if m := d.bar0.Load(); m != nil {
		return m.read32(uint64(off))
	}
	return ^uint32(0)
}

// Write32 writes the 32-bit register at off in BAR0.
func (d *Device) Write32(off uint32, v uint32) {
	if m := d.bar0.Load(); m != nil {
		m.write32(uint64(off), v)
	}
}

// Read64 reads the 64-bit register at off in BAR0 with one 64-bit load.
func (d *Device) Read64(off uint32) uint64 {
	if m := d.bar0.Load(); m != nil {
		return m.read64(uint64(off))
	}
	return ^uint64(0)
}

// Write64 writes the 64-bit register at off in BAR0 with one 64-bit store.
func (d *Device) Write64(off uint32, v uint64) {
	if m := d.bar0.Load(); m != nil {
		m.write64(uint64(off), v)
	}
}

// AllocDMA returns zeroed memory mapped into the IOMMU, 4 KiB aligned in
// both address spaces and contiguous in IOVA space. Small buffers share 2 MiB
// hugepages; buffers over 1 MiB get hugepages of their own.
func (d *Device) AllocDMA(size int) (*nvme.DMA, error) {
	if d.pool == nil {
		return nil, errors.New("vfio: AllocDMA on a closed device")
	}
	return d.pool.alloc(size)
}

// FreeDMA unmaps and releases memory from AllocDMA.
func (d *Device) FreeDMA(m *nvme.DMA) error {
	if d.pool == nil {
		return errors.New("vfio: FreeDMA on a closed device")
	}
	return d.pool.free(m)
}

// HugePageChunks reports how many 2 MiB DMA chunks are backed by hugepages
// (for diagnostics: 0 with chunks allocated means the 4 KiB fallback).
func (d *Device) HugePageChunks() int {
	if d.pool == nil {
		return 0
	}
	d.pool.mu.Lock()
	defer d.pool.mu.Unlock()
	return d.pool.hugeN
}

// Close stops the device's DMA, disables its interrupts, removes its memory
// and CMB mappings from the IOMMU, unmaps its BARs and gives the group and
// container back. It is safe to call twice.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	return d.release()
}

// release undoes whatever part of Open succeeded, in reverse order.
func (d *Device) release() error {
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if d.fd >= 0 && len(d.regions) > regionConfig {
		keep(d.DisableMSIX())
		keep(d.DisableBusMaster())
	}
	d.mu.Lock()
	peers := d.peers
	d.peers = nil
	cmb := d.cmb
	d.cmb = nil
	d.mu.Unlock()
	for p := range peers {
		keep(p.unmapFrom(d.c))
	}
	if cmb != nil {
		keep(cmb.close())
	}
	d.mu.Lock()
	keep(d.unmapBARs())
	d.mu.Unlock()
	if d.pool != nil {
		keep(d.pool.close())
		d.pool = nil
	}
	d.bar0.Store(nil)
	for i, m := range d.bars {
		if m != nil {
			keep(errors.Wrapf(unix.MunmapPtr(m.base, m.size), "vfio: munmap %s BAR%d", d.addr, i))
			d.bars[i] = nil
		}
	}
	if d.fd >= 0 {
		keep(errors.Wrapf(unix.Close(d.fd), "vfio: close %s", d.addr))
		d.fd = -1
	}
	if d.g != nil {
		keep(d.c.detach(d.g))
		d.g = nil
	}
	if d.c != nil {
		keep(d.c.removeDevice())
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}
