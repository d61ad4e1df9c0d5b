package nvmf

import (
	"fmt"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/tcp"
	"github.com/pkg/errors"
)

// The server's compute controller behind the target's compute and memory
// namespaces. The target forwards the CP and SLM commands to it rather than
// running programs itself: a compute controller is what already runs them
// next to the data, whether a device behind VFIO or the emulated one of
// `--dev csd` (whose programs run on this server's host cores through
// compute/csd's runner), and its Memory Copy already reads the namespaces of
// its NVM subsystem peer to peer. The target stays a transport: it
// translates NSIDs and keeps hosts apart; the device keeps its program
// slots, range sets, memory and verifier.

// exportCompute describes compute controller c for the target: its first
// compute namespace and that namespace's memory namespaces, and how c names
// each exported bdev as a Memory Copy source; the bdevs c cannot read are
// copied through host memory (hostcopy.go) from descs (dma: the bdev needs
// its own DMA memory).
func exportCompute(c *nvme.Controller, bdevs []*bdev.Bdev, descs []*bdev.Desc, dma []bool, hosts int) (*tcp.ComputeExport, string, error) {
	cns, err := c.ComputeNamespaces()
	if err != nil {
		return nil, "", errors.Wrapf(err, "nvmf: compute controller %s", c.Name())
	}
	if len(cns) == 0 || len(cns[0].Memory) == 0 {
		return nil, "", errors.Errorf("nvmf: %s has no compute namespace with memory namespaces", c.Name())
	}
	e := &tcp.ComputeExport{Device: &computeDev{c: c, descs: descs, dma: dma}, CP: cns[0].CP.ID, Hosts: hosts, HostCopy: true}
	for i, m := range cns[0].Memory {
		e.Memory, e.MemorySizes = append(e.Memory, m.ID), append(e.MemorySizes, cns[0].Sizes[i])
	}
	unreached := 0
	for _, b := range bdevs {
		e.Sources = append(e.Sources, copySource(c, b))
		if !e.Sources[len(e.Sources)-1].Reach {
			unreached++
		}
	}
	note := ""
	if unreached > 0 {
		note = fmt.Sprintf("%d of the %d namespaces are not in the NVM subsystem of %s: their blocks reach its memory through this server's memory", unreached, len(bdevs), c.Name())
	}
	return e, note, nil
}

// copySource says how compute controller c names bdev b as a Memory Copy
// source: a namespace of c itself, or of another controller of c's NVM
// subsystem (same SUBNQN, CMIC multi-controller) by its controller ID.
func copySource(c *nvme.Controller, b *bdev.Bdev) tcp.CopySource {
	bc, ns := bdev.NVMeNamespace(b)
	switch {
	case bc == nil:
		return tcp.CopySource{}
	case bc == c:
		return tcp.CopySource{NSID: ns.ID, Reach: true}
	}
	ci, bi := c.IdentifyData(), bc.IdentifyData()
	if ci.CMIC&nvme.CMICMultiController == 0 || ci.SubNQN == "" || ci.SubNQN != bi.SubNQN {
		return tcp.CopySource{}
	}
	return tcp.CopySource{Controller: bi.CNTLID, NSID: ns.ID, Reach: true}
}

// computeDev forwards to a compute controller through the driver; descs
// are the exported bdevs, read for host copies (hostcopy.go).
type computeDev struct {
	c     *nvme.Controller
	descs []*bdev.Desc
	dma   []bool // the bdev moves data only from its own DMA memory
}

func (d *computeDev) Identify(cns uint8, nsid uint32, csi uint8, b []byte) error {
	data, err := d.c.Identify(cns, nsid, 0, csi)
	if err != nil {
		return err
	}
	copy(b, data)
	return nil
}

func (d *computeDev) Admin(sqe *nvme.SQE, data []byte) (uint32, error) {
	if len(data) == 0 {
		data = nil
	}
	cqe, err := d.c.AdminCommand(sqe, data, true)
	return cqe.DW0, err
}

// Open makes a queue pair to the controller for the calling worker.
func (d *computeDev) Open(depth int) (tcp.ComputeChannel, error) {
	depth = min(depth, d.c.MaxQueueDepth()-1)
	qp, err := d.c.NewQueuePair(depth)
	if err != nil {
		return nil, errors.Wrapf(err, "nvmf: queue pair to compute controller %s", d.c.Name())
	}
	ch := &computeChan{c: d.c, qp: qp, slots: make([]cslot, depth), free: make([]uint16, 0, depth), dev: d,
		bchans: make([]*bdev.Channel, len(d.descs)), stalled: make([]uint16, 0, depth)}
	for i := depth - 1; i >= 0; i-- {
		ch.free = append(ch.free, uint16(i))
	}
	return ch, nil
}

// cslot is one command of a compute channel in flight.
type cslot struct {
	done   nvme.Completer
	tag    uint64
	data   []byte    // the target's buffer
	bounce *nvme.DMA // DMA memory of the controller, allocated at first use
	read   bool      // data comes from the device
	hc     *hostCopy // a Memory Copy carried out here, allocated at first use
}

// computeChan is a worker's queue pair to the compute controller.
type computeChan struct {
	c     *nvme.Controller
	qp    *nvme.QueuePair
	slots []cslot
	free  []uint16
	dev   *computeDev
	// bchans are the channel's own channels to the bdevs, for host
	// copies, opened at first use; stalled are slots whose next host copy
	// step found the queue pair full.
	bchans  []*bdev.Channel
	stalled []uint16
}

func (ch *computeChan) Submit(sqe *nvme.SQE, data []byte, toDevice bool, done nvme.Completer, tag uint64) error {
	if len(ch.free) == 0 || ch.qp.Free() == 0 {
		return tcp.ErrBusy
	}
	if len(data) > min(maxXfer, ch.c.MaxTransfer()) {
		return errors.Wrapf(nvme.ErrInvalidField, "nvmf: %d bytes for compute controller %s (at most %d)", len(data), ch.c.Name(), min(maxXfer, ch.c.MaxTransfer()))
	}
	i := ch.free[len(ch.free)-1]
	s := &ch.slots[i]
	if s.hc == nil {
		s.hc = &hostCopy{srcs: make([]nvme.MemCopySource, 0, nvme.PageSize/nvme.MemCopySourceSize), desc: -1}
	}
	var hostCopy bool
	if s.hc.srcs, hostCopy = tcp.HostCopySources(sqe, data, s.hc.srcs); hostCopy {
		if err := ch.startHostCopy(i, sqe); err != nil {
			return err
		}
		s.done, s.tag, s.data, s.read = done, tag, nil, false
		ch.free = ch.free[:len(ch.free)-1]
		return nil
	}
	var buf *nvme.DMA
	if len(data) > 0 {
		if s.bounce == nil {
			b, err := ch.c.Transport().AllocDMA(maxXfer)
			if err != nil {
				return err
			}
			s.bounce = b
		}
		buf = s.bounce
		if toDevice {
			copy(buf.Buf, data)
		}
	}
	if err := ch.qp.Submit(sqe, buf, 0, len(data), ch, uint64(i)); err != nil {
		if errors.Is(err, nvme.ErrQueueFull) {
			return tcp.ErrBusy
		}
		return err
	}
	s.done, s.tag, s.data, s.read = done, tag, data, !toDevice
	ch.free = ch.free[:len(ch.free)-1]
	return nil
}

// Complete implements nvme.Completer for the queue pair.
func (ch *computeChan) Complete(tag uint64, res uint64, err error) {
	if tag>>32 != 0 {
		ch.hostCopyStep(uint16(tag), tag>>32, err)
		return
	}
	i := uint16(tag)
	s := &ch.slots[i]
	if err == nil && s.read && len(s.data) > 0 {
		copy(s.data, s.bounce.Buf)
	}
	done, dtag := s.done, s.tag
	s.done, s.data = nil, nil
	ch.free = append(ch.free, i)
	done.Complete(dtag, res, err)
}

func (ch *computeChan) Poll() int {
	n := ch.qp.Process(0)
	for _, bc := range ch.bchans {
		if bc != nil {
			n += bc.Poll()
		}
	}
	return n + ch.retryStalled()
}

func (ch *computeChan) Close() error {
	err := ch.qp.Close()
	for i := range ch.slots {
		if s := &ch.slots[i]; s.bounce != nil {
			ch.c.Transport().FreeDMA(s.bounce)
			s.bounce = nil
		}
		if s := &ch.slots[i]; s.hc != nil && s.hc.full.DMA != nil {
			ch.dev.descs[s.hc.desc].FreeBuffer(s.hc.full)
			s.hc.full, s.hc.desc = bdev.Buffer{}, -1
		}
	}
	for k, bc := range ch.bchans {
		if bc != nil {
			bc.Close()
			ch.bchans[k] = nil
		}
	}
	return errors.Wrapf(err, "nvmf: close the queue pair to %s", ch.c.Name())
}
