package mock

import (
	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/nvme"
)

// ShareCMB makes c's CMB, mapped on its bus as cmb, reachable by peer: every
// controller of c's bus reaches it where c mapped it, so the view is cmb
// itself and there is nothing to undo. A peer on another bus, or not an
// emulated controller, is unreachable. (p2pdma.CMBSharer)
func (c *Controller) ShareCMB(peer nvme.Transport, cmb *nvme.DMA) (view *nvme.DMA, undo func() error, reachable bool, err error) {
	pt, ok := peer.(*Controller)
	if !ok || pt.bus != c.bus {
		return nil, nil, false, errors.Errorf("%s is not on the bus of %s", peer.Name(), c.Name())
	}
	if _, kind, ok := c.bus.Translate(cmb.IOVA, len(cmb.Buf)); !ok || kind != PeerMemory {
		return nil, nil, true, errors.Errorf("the CMB of %s is not mapped on its bus at %#x", c.Name(), cmb.IOVA)
	}
	return cmb, nil, true, nil
}

// SharesHostMemory reports whether other is a controller of c's bus, which
// reaches c's DMA memory at the same address. (p2pdma.HostMemorySharer)
func (c *Controller) SharesHostMemory(other nvme.Transport) bool {
	o, ok := other.(*Controller)
	return ok && o.bus == c.bus
}
