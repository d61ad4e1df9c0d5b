// Package vfio is the real transport of the NVMe driver: it owns a PCI
// function through Linux VFIO and implements nvme.Transport on it.
//
// Open takes a function bound to vfio-pci (see 'bpfblk setup' and package
// nvme/pci), joins its IOMMU group to a container (type1v2 IOMMU, falling
// back to type1), maps BAR0 and enables bus mastering. Registers are
// accessed with single loads and stores of the register's width. DMA memory
// comes from 2 MiB hugepages mapped into the IOMMU at IOVAs handed out by
// the container (locked 4 KiB pages with a warning when no hugepages are
// reserved). Device.CMB maps a controller memory buffer; Device.MapPeer maps
// a peer's CMB into a device's IOMMU address space for peer-to-peer DMA.
// EnableMSIX delivers interrupts to eventfds. Reset issues VFIO_DEVICE_RESET.
// Close undoes all of it in reverse order.
//
// The tests that need a real device run only when BPFBLK_VFIO_TEST_DEVICES
// names functions bound to vfio-pci whose data may be overwritten; the
// harness in test/qemu runs them in a QEMU guest against emulated NVMe
// controllers behind an emulated IOMMU.
package vfio
