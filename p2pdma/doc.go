// Package p2pdma moves data between NVMe controllers without a trip through
// host DRAM: peer memory regions in controller memory buffers (CMBs), their
// allocator, peer-to-peer copies between namespaces, NVM Copy offload, and
// staging for scans whose reads land in a CMB instead of host memory.
//
// A Region is a controller's CMB as the stack uses it: the CPU mapping, the
// bus address the owning controller uses for it, and the address every peer
// that registered with Region.Peer uses. Regions are found through the
// controller's registers (CAP.CMBS, CMBMSC.CRE, CMBLOC, CMBSZ; see
// Discover), so discovery works the same over the emulated controllers of
// nvme/mock and over VFIO. Registration makes a region reachable from other
// controllers: on the mock bus the CMB is mapped once as peer memory and
// every controller on that bus reaches it; over VFIO the CMB's BAR mmap is
// mapped into the peer's IOMMU address space with VFIO_IOMMU_MAP_DMA.
//
// Copy moves a block range from one namespace to another. Its paths are:
//
//   - ViaCopy: the NVM Copy command (descriptor format 0h), when source and
//     destination are the same namespace of a controller that advertises
//     Copy in ONCS. No data crosses any bus.
//   - ViaCMB: the source controller's Reads land in a CMB (the destination
//     controller's, else the source's), and the destination controller's
//     Writes take the data from there. Chunks are pipelined; no payload
//     byte touches host DRAM.
//   - ViaHost: a bounce through host DMA memory, used only when asked for or,
//     with ViaAuto, as the announced fallback when neither of the above can
//     work.
//
// The per-chunk path of a copy allocates nothing and takes no lock; the
// allocator (a buddy allocator, safe for concurrent use) is used when copies
// and scans start and end. A full CMB is back-pressure: a copy runs with the
// chunks it could get and waits for space when it has none; it fails only
// when no space appears within CopyOptions.Wait.
package p2pdma
