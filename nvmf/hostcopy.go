package nvmf

import (
	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/tcp"
	"github.com/pkg/errors"
)

// Host copies: a Memory Copy from a namespace the compute controller cannot
// read (a uring or malloc bdev, an NVMe namespace outside its subsystem) is
// carried out by the worker's compute channel itself, piece by piece: read
// the blocks through the channel's own bdev channel, then Memory Write them
// into the device's memory. The data crosses this server's memory once; it
// never crosses the network, so a remote scan still sends only matches. A
// server whose drives are the kernel's (`serve --dev uring:/dev/nvme0n1
// --dev csd`) thus offers the remote host a compute namespace over all of
// them.

// hostCopy is the state of one slot's host copy.
type hostCopy struct {
	srcs   []nvme.MemCopySource // exported NSIDs (1..N)
	i      int                  // source being copied
	copied uint32               // blocks of it copied
	dst    uint64               // device memory offset of the next piece
	mem    uint32               // the device's memory namespace
	blocks uint32               // blocks of the piece in flight
	n      int                  // bytes of the piece in flight
	piece  bdev.Buffer          // where the bdev reads the piece: a slice of full or of the slot's bounce
	full   bdev.Buffer          // DMA memory of bdev desc, for a bdev that needs its own
	desc   int                  // the bdev full belongs to (-1: none)
	sqe    nvme.SQE             // the Memory Write of the piece
	step   uint64               // the step to retry when the queue pair was full
	err    error
}

// Steps of a host copy, in the high bits of a completion tag.
const (
	hcRead  = 1 // the piece read from the bdev
	hcWrite = 2 // the piece written to device memory
)

// startHostCopy begins the host copy sqe of slot i, whose sources are in
// the slot's hostCopy.
func (ch *computeChan) startHostCopy(i uint16, sqe *nvme.SQE) error {
	s := &ch.slots[i]
	if s.bounce == nil {
		b, err := ch.c.Transport().AllocDMA(maxXfer)
		if err != nil {
			return err
		}
		s.bounce = b
	}
	hc := s.hc
	for k, src := range hc.srcs {
		if src.Controller != tcp.HostCopyController || src.NSID == 0 || int(src.NSID) > len(ch.dev.descs) {
			return errors.Wrapf(nvme.ErrInvalidField, "nvmf: host copy source %d names namespace %d", k, src.NSID)
		}
		if b := ch.dev.descs[src.NSID-1].Bdev(); src.LBA >= b.NumBlocks() || uint64(src.Blocks) > b.NumBlocks()-src.LBA {
			return nvme.ErrLBAOutOfRange
		}
	}
	hc.i, hc.copied, hc.dst, hc.mem, hc.err = 0, 0, uint64(sqe.CDW10)|uint64(sqe.CDW11)<<32, sqe.NSID, nil
	return ch.readPiece(i)
}

// readPiece reads the next piece of the copy in slot i, or finishes it.
func (ch *computeChan) readPiece(i uint16) error {
	s := &ch.slots[i]
	hc := s.hc
	for hc.i < len(hc.srcs) && hc.copied == hc.srcs[hc.i].Blocks {
		hc.i, hc.copied = hc.i+1, 0
	}
	if hc.i == len(hc.srcs) {
		ch.finishHostCopy(i, nil)
		return nil
	}
	src := hc.srcs[hc.i]
	k := int(src.NSID - 1)
	d := ch.dev.descs[k]
	bs := d.Bdev().BlockSize()
	hc.blocks = min(src.Blocks-hc.copied, uint32(min(maxXfer, ch.c.MaxTransfer())/bs))
	hc.n = int(hc.blocks) * bs
	if ch.bchans[k] == nil {
		bc, err := d.NewChannel(len(ch.slots))
		if err != nil {
			return errors.Wrapf(err, "nvmf: host copy from %s", d.Bdev().Name())
		}
		ch.bchans[k] = bc
	}
	if ch.dev.dma[k] {
		if hc.desc != k && hc.full.DMA != nil {
			ch.dev.descs[hc.desc].FreeBuffer(hc.full)
			hc.full, hc.desc = bdev.Buffer{}, -1
		}
		if hc.full.DMA == nil {
			b, err := d.AllocBuffer(maxXfer)
			if err != nil {
				return err
			}
			hc.full, hc.desc = b, k
		}
		hc.piece = hc.full.Slice(0, hc.n)
	} else {
		hc.piece = bdev.Buffer{Bytes: s.bounce.Buf[:hc.n]}
	}
	return mapErr(ch.bchans[k].ReadTagged(&hc.piece, src.LBA+uint64(hc.copied), uint64(hc.blocks), ch, uint64(i)|hcRead<<32))
}

// hostCopyStep handles the completion of a step of slot i's copy.
func (ch *computeChan) hostCopyStep(i uint16, step uint64, err error) {
	s := &ch.slots[i]
	hc := s.hc
	if err != nil {
		ch.finishHostCopy(i, err)
		return
	}
	var next error
	switch step {
	case hcRead:
		if hc.piece.DMA != nil {
			copy(s.bounce.Buf, hc.piece.Bytes)
		}
		hc.sqe = nvme.SQE{OPC: nvme.OpMemWrite, NSID: hc.mem, CDW10: uint32(hc.dst), CDW11: uint32(hc.dst >> 32), CDW12: uint32(hc.n)}
		next = ch.writePiece(i)
	case hcWrite:
		hc.copied += hc.blocks
		hc.dst += uint64(hc.n)
		next = ch.readPiece(i)
	}
	if next != nil {
		ch.finishHostCopy(i, next)
	}
}

// writePiece writes the piece read into device memory; a full queue pair
// stalls the slot until Poll.
func (ch *computeChan) writePiece(i uint16) error {
	s := &ch.slots[i]
	err := ch.qp.Submit(&s.hc.sqe, s.bounce, 0, s.hc.n, ch, uint64(i)|hcWrite<<32)
	if errors.Is(err, nvme.ErrQueueFull) {
		ch.stalled = append(ch.stalled, i)
		return nil
	}
	return err
}

// retryStalled submits the writes that found the queue pair full.
func (ch *computeChan) retryStalled() int {
	n := 0
	for len(ch.stalled) > 0 && ch.qp.Free() > 0 {
		i := ch.stalled[0]
		ch.stalled = ch.stalled[:copy(ch.stalled, ch.stalled[1:])]
		if err := ch.writePiece(i); err != nil {
			ch.finishHostCopy(i, err)
		}
		n++
	}
	return n
}

// finishHostCopy completes slot i's Memory Copy.
func (ch *computeChan) finishHostCopy(i uint16, err error) {
	s := &ch.slots[i]
	s.hc.piece = bdev.Buffer{}
	done, dtag := s.done, s.tag
	if done == nil {
		// Failed inside startHostCopy: Submit returns the error and
		// keeps the slot.
		return
	}
	s.done = nil
	ch.free = append(ch.free, i)
	done.Complete(dtag, 0, mapErr(err))
}
