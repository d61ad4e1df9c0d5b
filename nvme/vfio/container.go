package vfio

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/bpfblk/bpfblk/nvme/pci"
)

// Container is a VFIO container: one IOMMU address space shared by the
// devices (IOMMU groups) attached to it. Devices in the same container reach
// each other's mapped memory, CMBs included, at the same IOVAs.
//
// A Container is safe for concurrent use; its methods run at setup time.
type Container struct {
	mu      sync.Mutex
	fd      int
	host    *pci.Host
	devDir  string
	want    int // requested IOMMU type, 0 for automatic
	typ     int // IOMMU type in use, 0 until the first group is attached
	info    IOMMUInfo
	space   *iovaSpace
	groups  map[int]*group
	devices int  // open devices
	closing bool // Close was called: close when the last device closes
	closed  bool
}

type group struct {
	n    int
	fd   int
	refs int
}

// ContainerOptions configure OpenContainer.
type ContainerOptions struct {
	// Root is the system root for sysfs and /dev ("" means "/").
	Root string
	// IOMMUType forces an IOMMU backend: 1 (VFIO_TYPE1_IOMMU, what DPDK and
	// SPDK request) or 3 (VFIO_TYPE1v2_IOMMU). 0 picks type1v2 when offered
	// and falls back to type1.
	IOMMUType int
}

// OpenContainer opens /dev/vfio/vfio. Devices join it through
// Options.Container; it is closed with Close once they are closed.
func OpenContainer(o ContainerOptions) (*Container, error) {
	h := &pci.Host{Root: o.Root}
	c := &Container{fd: -1, host: h, devDir: h.Path("/dev/vfio"), want: o.IOMMUType, groups: map[int]*group{}}
	if o.IOMMUType != 0 && o.IOMMUType != iommuType1 && o.IOMMUType != iommuType1v2 {
		return nil, errors.Errorf("vfio: unsupported IOMMU type %d (want 1 or 3)", o.IOMMUType)
	}
	fd, err := unix.Open(c.devDir+"/vfio", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		why := ""
		if s := h.VFIO(); s.Problem() != "" {
			why = ": " + s.Problem()
		}
		return nil, errors.Wrapf(err, "vfio: open %s/vfio%s", c.devDir, why)
	}
	c.fd = fd
	v, err := ioctl(fd, ioctlGetAPIVersion, 0)
	if err != nil || v != apiVersion {
		unix.Close(fd)
		return nil, errors.Errorf("vfio: API version %d (%v), want %d", v, err, apiVersion)
	}
	return c, nil
}

// IOMMUType returns the IOMMU backend in use (1: type1, 3: type1v2), 0 before
// the first device joins.
func (c *Container) IOMMUType() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.typ
}

// IOMMUInfo returns what the IOMMU backend reported when the first device
// joined: page sizes, usable IOVA ranges and the mapping budget.
func (c *Container) IOMMUInfo() IOMMUInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// groupPath is the character device of IOMMU group n.
func (c *Container) groupPath(n int) string { return c.devDir + "/" + strconv.Itoa(n) }

// attach opens IOMMU group n (once per container), checks that it is viable,
// adds it to the container and, for the first group, sets up the IOMMU.
func (c *Container) attach(n int, addr pci.Addr) (*group, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("vfio: container is closed")
	}
	if g := c.groups[n]; g != nil {
		g.refs++
		return g, nil
	}
	fd, err := unix.Open(c.groupPath(n), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.EBUSY {
			return nil, errors.Wrapf(err, "vfio: IOMMU group %d of %s is open in another process or container", n, addr)
		}
		return nil, errors.Wrapf(err, "vfio: open IOMMU group %d of %s", n, addr)
	}
	st := groupStatus{argsz: uint32(unsafe.Sizeof(groupStatus{}))}
	if _, err := ioctlPtr(fd, ioctlGroupGetStatus, unsafe.Pointer(&st)); err != nil {
		unix.Close(fd)
		return nil, errors.Wrapf(err, "vfio: status of IOMMU group %d", n)
	}
	if st.flags&groupFlagsViable == 0 {
		unix.Close(fd)
		return nil, c.notViable(n, addr)
	}
	cfd := int32(c.fd)
	if _, err := ioctlPtr(fd, ioctlGroupSetContainer, unsafe.Pointer(&cfd)); err != nil {
		unix.Close(fd)
		return nil, errors.Wrapf(err, "vfio: add IOMMU group %d to the container", n)
	}
	if c.typ == 0 {
		if err := c.setIOMMU(); err != nil {
			ioctlPtr(fd, ioctlGroupUnsetCont, nil)
			unix.Close(fd)
			return nil, err
		}
	}
	g := &group{n: n, fd: fd, refs: 1}
	c.groups[n] = g
	return g, nil
}

// notViable explains a non-viable group: every device in it must be bound
// to vfio-pci (or to no driver) before any of them can be used.
func (c *Container) notViable(n int, addr pci.Addr) error {
	members, err := c.host.GroupMembers(n)
	if err != nil {
		return errors.Errorf("vfio: IOMMU group %d of %s is not viable (and its members cannot be listed: %v)", n, addr, err)
	}
	var others []string
	for _, m := range members {
		if m.Addr == addr || m.Driver == pci.DriverVFIO || m.Driver == "" || m.Driver == "pcieport" {
			continue
		}
		others = append(others, fmt.Sprintf("%s (driver %s)", m.Addr, m.Driver))
	}
	if len(others) == 0 {
		return errors.Errorf("vfio: IOMMU group %d of %s is not viable", n, addr)
	}
	return errors.Errorf("vfio: IOMMU group %d of %s is not viable: every device in the group must be bound to vfio-pci or to no driver, but %s %s",
		n, addr, strings.Join(others, ", "), map[bool]string{true: "is", false: "are"}[len(others) == 1])
}

func (c *Container) setIOMMU() error {
	has := func(t int) bool { r, err := ioctl(c.fd, ioctlCheckExtension, uintptr(t)); return err == nil && r > 0 }
	typ := c.want
	if typ == 0 {
		switch {
		case has(iommuType1v2):
			typ = iommuType1v2
		case has(iommuType1):
			typ = iommuType1
		case has(iommuNoIOMMU):
			return errors.New("vfio: only the unsafe no-IOMMU mode is available; bpfblk needs an IOMMU (boot with intel_iommu=on or amd_iommu=on)")
		default:
			return errors.New("vfio: the container offers no type1 IOMMU")
		}
	} else if !has(typ) {
		return errors.Errorf("vfio: the container does not offer IOMMU type %d", typ)
	}
	if _, err := ioctl(c.fd, ioctlSetIOMMU, uintptr(typ)); err != nil {
		return errors.Wrapf(err, "vfio: set IOMMU type %d", typ)
	}
	c.typ = typ
	buf := make([]byte, 4096)
	put32(buf, uint32(len(buf)))
	if _, err := ioctlPtr(c.fd, ioctlIOMMUGetInfo, unsafe.Pointer(&buf[0])); err != nil {
		return errors.Wrap(err, "vfio: IOMMU info")
	}
	c.info = parseIOMMUInfo(buf)
	if c.info.PageSizes != 0 && c.info.PageSizes&pageSize == 0 {
		return errors.Errorf("vfio: the IOMMU does not map 4 KiB pages (page sizes %#x)", c.info.PageSizes)
	}
	c.space = newIOVASpace(c.info.Ranges)
	return nil
}

// detach drops a device's reference to its group; the last one removes the
// group from the container.
func (c *Container) detach(g *group) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	g.refs--
	if g.refs > 0 {
		return nil
	}
	delete(c.groups, g.n)
	if len(c.groups) == 0 {
		// The kernel releases the IOMMU with the last group; the next group
		// sets it up again.
		c.typ, c.space, c.info = 0, nil, IOMMUInfo{}
	}
	_, err := ioctlPtr(g.fd, ioctlGroupUnsetCont, nil)
	if e := unix.Close(g.fd); err == nil {
		err = e
	}
	return errors.Wrapf(err, "vfio: release IOMMU group %d", g.n)
}

func (c *Container) allocIOVA(size, align uint64) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.space == nil {
		return 0, errors.New("vfio: container has no IOMMU yet")
	}
	return c.space.alloc(size, align)
}

func (c *Container) reserveIOVA(addr, size uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.space != nil && c.space.reserve(addr, size)
}

func (c *Container) freeIOVA(iova, size uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.space != nil {
		c.space.release(iova, size)
	}
}

func (c *Container) mapDMA(vaddr unsafe.Pointer, iova, size uint64) error {
	m := dmaMap{argsz: uint32(unsafe.Sizeof(dmaMap{})), flags: dmaMapRead | dmaMapWrite,
		vaddr: uint64(uintptr(vaddr)), iova: iova, size: size}
	_, err := ioctlPtr(c.fd, ioctlIOMMUMapDMA, unsafe.Pointer(&m))
	return errors.Wrapf(err, "vfio: VFIO_IOMMU_MAP_DMA of %#x bytes at IOVA %#x", size, iova)
}

func (c *Container) unmapDMA(iova, size uint64) error {
	m := dmaUnmap{argsz: uint32(unsafe.Sizeof(dmaUnmap{})), iova: iova, size: size}
	_, err := ioctlPtr(c.fd, ioctlIOMMUUnmapDMA, unsafe.Pointer(&m))
	if err == nil && m.size != size {
		err = errors.Errorf("vfio: VFIO_IOMMU_UNMAP_DMA at IOVA %#x unmapped %#x of %#x bytes", iova, m.size, size)
	}
	return errors.Wrapf(err, "vfio: VFIO_IOMMU_UNMAP_DMA of %#x bytes at IOVA %#x", size, iova)
}

// Close closes the container. Devices still open keep it alive until they
// are closed.
func (c *Container) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	return c.closeLocked()
}

func (c *Container) closeLocked() error {
	if c.closed || c.devices > 0 || !c.closing {
		return nil
	}
	c.closed = true
	return errors.Wrap(unix.Close(c.fd), "vfio: close container")
}

func (c *Container) addDevice() {
	c.mu.Lock()
	c.devices++
	c.mu.Unlock()
}

func (c *Container) removeDevice() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.devices--
	return c.closeLocked()
}
