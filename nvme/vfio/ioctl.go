package vfio

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The VFIO user API from <linux/vfio.h>. golang.org/x/sys has none of it.
// Every ioctl is _IO(VFIO_TYPE, VFIO_BASE + n): no size or direction bits.
const vfioType, vfioBase = ';', 100

func vfioIO(n uintptr) uintptr { return vfioType<<8 | (vfioBase + n) }

var (
	ioctlGetAPIVersion     = vfioIO(0)
	ioctlCheckExtension    = vfioIO(1)
	ioctlSetIOMMU          = vfioIO(2)
	ioctlGroupGetStatus    = vfioIO(3)
	ioctlGroupSetContainer = vfioIO(4)
	ioctlGroupUnsetCont    = vfioIO(5)
	ioctlGroupGetDeviceFD  = vfioIO(6)
	ioctlDeviceGetInfo     = vfioIO(7)
	ioctlDeviceRegionInfo  = vfioIO(8)
	ioctlDeviceIRQInfo     = vfioIO(9)
	ioctlDeviceSetIRQs     = vfioIO(10)
	ioctlDeviceReset       = vfioIO(11)
	ioctlIOMMUGetInfo      = vfioIO(12)
	ioctlIOMMUMapDMA       = vfioIO(13)
	ioctlIOMMUUnmapDMA     = vfioIO(14)
)

const (
	apiVersion = 0

	// IOMMU backends (VFIO_SET_IOMMU / VFIO_CHECK_EXTENSION).
	iommuType1   = 1
	iommuType1v2 = 3
	iommuNoIOMMU = 8

	groupFlagsViable = 1 << 0

	deviceFlagsReset = 1 << 0
	deviceFlagsPCI   = 1 << 1

	regionFlagRead  = 1 << 0
	regionFlagWrite = 1 << 1
	regionFlagMmap  = 1 << 2
	regionFlagCaps  = 1 << 3

	regionCapSparseMmap   = 1
	regionCapMSIXMappable = 3

	// PCI region indexes of a vfio-pci device.
	regionBAR0   = 0
	regionConfig = 7
	numBARs      = 6

	dmaMapRead  = 1 << 0
	dmaMapWrite = 1 << 1

	iommuInfoPgsizes = 1 << 0
	iommuInfoCaps    = 1 << 1

	iommuCapIOVARange = 1
	iommuCapDMAAvail  = 3

	irqIndexMSIX = 2

	irqSetDataNone      = 1 << 0
	irqSetDataEventfd   = 1 << 2
	irqSetActionTrigger = 1 << 5
)

func ioctl(fd int, req uintptr, arg uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return r, e
	}
	return r, nil
}

func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if e != 0 {
		return r, e
	}
	return r, nil
}

type groupStatus struct {
	argsz, flags uint32
}

type deviceInfo struct {
	argsz, flags, numRegions, numIRQs, capOffset, pad uint32
}

type irqInfo struct {
	argsz, flags, index, count uint32
}

type dmaMap struct {
	argsz, flags uint32
	vaddr, iova  uint64
	size         uint64
}

type dmaUnmap struct {
	argsz, flags uint32
	iova, size   uint64
}

// Region describes one VFIO device region (a BAR or the config space).
type Region struct {
	Index  int
	Flags  uint32
	Size   uint64
	Offset uint64 // offset of the region in the device file
	// Sparse lists the mmap-able [offset, offset+size) areas when the kernel
	// restricts mmap to parts of the region; nil means all of it.
	Sparse [][2]uint64
	// MSIXMappable reports that the MSI-X table inside the region may be
	// mapped too.
	MSIXMappable bool
}

// Mappable reports whether the region may be mmapped.
func (r *Region) Mappable() bool { return r.Flags&regionFlagMmap != 0 && r.Size > 0 }

// parseRegionInfo decodes a struct vfio_region_info and its capability chain
// from buf (as filled by VFIO_DEVICE_GET_REGION_INFO). It never panics on a
// malformed chain.
func parseRegionInfo(buf []byte) (Region, uint32, bool) {
	le := binary.LittleEndian
	if len(buf) < 32 {
		return Region{}, 0, false
	}
	argsz := le.Uint32(buf[0:])
	r := Region{
		Flags:  le.Uint32(buf[4:]),
		Index:  int(le.Uint32(buf[8:])),
		Size:   le.Uint64(buf[16:]),
		Offset: le.Uint64(buf[24:]),
	}
	if r.Flags&regionFlagCaps == 0 {
		return r, argsz, true
	}
	if int(argsz) > len(buf) {
		return r, argsz, false // caller retries with a bigger buffer
	}
	off := le.Uint32(buf[12:])
	for n := 0; off != 0 && n < 64; n++ {
		if int(off) < 32 || int(off)+8 > len(buf) {
			break
		}
		id, next := le.Uint16(buf[off:]), le.Uint32(buf[off+4:])
		switch id {
		case regionCapSparseMmap:
			if int(off)+16 > len(buf) {
				break
			}
			nr := le.Uint32(buf[off+8:])
			r.Sparse = [][2]uint64{}
			for i := uint32(0); i < nr; i++ {
				p := int(off) + 16 + int(i)*16
				if p+16 > len(buf) {
					break
				}
				r.Sparse = append(r.Sparse, [2]uint64{le.Uint64(buf[p:]), le.Uint64(buf[p+8:])})
			}
		case regionCapMSIXMappable:
			r.MSIXMappable = true
		}
		if next <= off {
			break // chains only go forward; anything else is a loop
		}
		off = next
	}
	return r, argsz, true
}

// IOMMUInfo is what the container's IOMMU backend reports.
type IOMMUInfo struct {
	// PageSizes is the bitmap of supported IOMMU page sizes.
	PageSizes uint64
	// Ranges are the usable IOVA ranges as inclusive [first, last] pairs;
	// nil when the kernel does not report them.
	Ranges [][2]uint64
	// DMAAvail is how many more DMA mappings the backend allows, -1 if not
	// reported.
	DMAAvail int64
}

func parseIOMMUInfo(buf []byte) IOMMUInfo {
	le := binary.LittleEndian
	info := IOMMUInfo{DMAAvail: -1}
	if len(buf) < 24 {
		return info
	}
	flags := le.Uint32(buf[4:])
	if flags&iommuInfoPgsizes != 0 {
		info.PageSizes = le.Uint64(buf[8:])
	}
	if flags&iommuInfoCaps == 0 {
		return info
	}
	off := le.Uint32(buf[16:])
	for n := 0; off != 0 && n < 64; n++ {
		if int(off) < 24 || int(off)+12 > len(buf) {
			break
		}
		id, next := le.Uint16(buf[off:]), le.Uint32(buf[off+4:])
		switch id {
		case iommuCapIOVARange:
			nr := le.Uint32(buf[off+8:])
			for i := uint32(0); i < nr; i++ {
				p := int(off) + 16 + int(i)*16
				if p+16 > len(buf) {
					break
				}
				lo, hi := le.Uint64(buf[p:]), le.Uint64(buf[p+8:])
				if lo <= hi {
					info.Ranges = append(info.Ranges, [2]uint64{lo, hi})
				}
			}
		case iommuCapDMAAvail:
			info.DMAAvail = int64(le.Uint32(buf[off+8:]))
		}
		if next <= off {
			break
		}
		off = next
	}
	return info
}
