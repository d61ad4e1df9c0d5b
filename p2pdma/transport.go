package p2pdma

import "github.com/bpfblk/bpfblk/nvme"

// What p2pdma needs from a transport beyond nvme.Transport, declared here
// so that the package names no transport: nvme/mock and nvme/vfio implement
// these interfaces, and a transport that implements neither simply has no
// peer path.

// CMBSharer is implemented by a transport whose controller memory buffer
// other controllers can reach by DMA: on the emulated bus every controller
// of the owner's bus (nvme/mock); over VFIO any VFIO device, through an
// IOMMU mapping of the BAR (nvme/vfio).
type CMBSharer interface {
	// ShareCMB makes the CMB that the owner mapped as cmb (its
	// nvme.Controller.MapCMB result) reachable by peer and returns it as
	// peer sees it: Buf the CPU mapping, IOVA the address peer puts in its
	// commands. undo (nil when there is nothing to undo) removes the
	// sharing. reachable is false when peer has no path to the CMB at all
	// (another bus, another kind of transport); err then says why.
	ShareCMB(peer nvme.Transport, cmb *nvme.DMA) (view *nvme.DMA, undo func() error, reachable bool, err error)
}

// HostMemorySharer is implemented by a transport whose DMA memory other
// controllers reach at the same address: controllers of one emulated bus,
// VFIO devices of one IOMMU container.
type HostMemorySharer interface {
	// SharesHostMemory reports whether DMA memory of this transport is
	// reachable by other's controller at the same address.
	SharesHostMemory(other nvme.Transport) bool
}
