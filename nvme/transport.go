package nvme

// Transport is the only way the driver reaches a controller: register access
// through BAR0 and memory the controller can DMA. The same driver code runs over
// the emulated controller in nvme/mock and over VFIO in nvme/vfio.
//
// Register accessors are safe for concurrent use on different registers (each
// I/O queue pair rings its own doorbells from its own core). They never fail: an
// unreachable device reads as all ones, as a surprise-removed PCIe function does,
// and the driver treats 0xffffffff in CSTS as a dead controller.
type Transport interface {
	// Name identifies the controller, e.g. "mock0" or "pci:0000:01:00.0".
	Name() string
	// Read32 reads the 32-bit register at byte offset off in BAR0.
	Read32(off uint32) uint32
	// Write32 writes the 32-bit register at byte offset off in BAR0.
	// Doorbells are 32-bit writes at 0x1000 + (2*qid + isCQ) * (4 << CAP.DSTRD).
	Write32(off uint32, v uint32)
	// Read64 reads the 64-bit register (CAP, ASQ, ACQ, CMBMSC, ...) at off.
	Read64(off uint32) uint64
	// Write64 writes the 64-bit register at off.
	Write64(off uint32, v uint64)
	// AllocDMA returns at least size bytes of zeroed memory that the controller
	// can reach by DMA, 4 KiB aligned in both the CPU and the bus address space.
	// It is called at setup time, never per I/O.
	AllocDMA(size int) (*DMA, error)
	// FreeDMA unmaps and releases memory obtained from AllocDMA.
	FreeDMA(d *DMA) error
	// Close releases the controller; DMA memory still held is released too.
	Close() error
}

// FabricsTransport is a Transport that reaches its controller over NVMe over
// Fabrics (nvme/tcp). The driver drives it through the same register and
// doorbell accessors — the transport maps registers to Property Get/Set,
// Create/Delete I/O queue commands to Fabrics Connect/Disconnect and SQ
// doorbells to command capsules — with two differences: data is described by
// an SGL Data Block descriptor (PSDT 01b; the address in bytes 24..31 of the
// SQE, the length in bytes 32..35, descriptor type 0) instead of PRPs, as
// fabrics requires, and the driver calls Poll before it reaps a completion
// queue, because completions reach host memory only when the transport reads
// them from the network.
type FabricsTransport interface {
	Transport
	// Poll sends what the queue qid has pending and moves the completions
	// that arrived for it into its CQ. It runs on the goroutine that owns
	// the queue (for the admin queue, under the controller's admin lock),
	// never blocks and allocates nothing.
	Poll(qid uint16)
}

// PSDTSGL is the SQE flags value (PSDT 01b) of a command whose data pointer
// is an SGL descriptor.
const PSDTSGL = 1 << 6

// DMA is a buffer shared between the host CPU and a controller.
type DMA struct {
	// Buf is the CPU view of the memory.
	Buf []byte
	// IOVA is the bus address of Buf[0] as the controller sees it.
	IOVA uint64
}

// IOVAAt returns the bus address of Buf[off].
func (d *DMA) IOVAAt(off int) uint64 { return d.IOVA + uint64(off) }
