// Package nvmf exports bdevs over NVMe/TCP: it adapts each bdev to a
// namespace of an nvme/tcp Target and polls the target's workers on
// reactors, one worker per reactor (one per core). It sits above bdev: the
// target consumes bdevs, whatever their module. Given a compute controller
// (Config.Compute), it exports its compute and memory namespaces too, and
// forwards their commands to it (compute.go says why forwarding).
package nvmf

import (
	"net"
	"sync"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/tcp"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
)

// Config describes what a Server exports.
type Config struct {
	// NQN names the subsystem (default: nvme/tcp's).
	NQN string
	// Bdevs become namespaces 1, 2, ... in order.
	Bdevs []*bdev.Bdev
	// Reactors poll the target, one worker each.
	Reactors []*poller.Reactor
	// MaxQueueDepth caps each queue (default 128).
	MaxQueueDepth int
	// Compute, if not nil, is a compute controller (CP and SLM command
	// sets) whose compute namespace and memory namespaces are exported
	// after the bdevs' (compute.go): remote hosts load and run programs
	// on it, and its Memory Copy reads the bdevs of its NVM subsystem.
	Compute *nvme.Controller
	// ComputeHosts is how many host controllers may use the compute
	// controller at once, each with that share of its memory (default 1:
	// one at a time, the others scan on their own cores).
	ComputeHosts int
}

// Server is an NVMe/TCP target serving bdevs.
type Server struct {
	target  *tcp.Target
	descs   []*bdev.Desc
	pollers []*poller.Poller
	rs      []*poller.Reactor
	ln      net.Listener
	once    sync.Once
	done    chan error
	compute *tcp.ComputeExport
	note    string
}

// maxXfer is the largest transfer of the target (its MDTS).
const maxXfer = 128 << 10

// Listen opens the bdevs read-write, listens on addr (HOST:PORT) and starts
// serving. Close stops.
func Listen(addr string, cfg Config) (*Server, error) {
	if len(cfg.Reactors) == 0 {
		return nil, errors.New("nvmf: no reactors to poll the target")
	}
	if len(cfg.Bdevs) == 0 {
		return nil, errors.New("nvmf: no bdevs to export")
	}
	s := &Server{rs: cfg.Reactors, done: make(chan error, 1)}
	var nss []tcp.Namespace
	var dmas []bool
	for _, b := range cfg.Bdevs {
		d, err := bdev.Open(b, true)
		if err != nil {
			s.closeDescs()
			return nil, errors.Wrapf(err, "nvmf: open bdev %s", b.Name())
		}
		s.descs = append(s.descs, d)
		probe, err := d.AllocBuffer(b.BlockSize())
		if err != nil {
			s.closeDescs()
			return nil, errors.Wrapf(err, "nvmf: bdev %s: buffer", b.Name())
		}
		nss, dmas = append(nss, &bdevNS{desc: d, dma: probe.DMA != nil}), append(dmas, probe.DMA != nil)
		d.FreeBuffer(probe)
	}
	if cfg.Compute != nil {
		e, note, err := exportCompute(cfg.Compute, cfg.Bdevs, s.descs, dmas, cfg.ComputeHosts)
		if err != nil {
			s.closeDescs()
			return nil, err
		}
		s.compute, s.note = e, note
	}
	t, err := tcp.NewTarget(tcp.TargetConfig{NQN: cfg.NQN, Namespaces: nss, Workers: len(cfg.Reactors), MaxQueueDepth: cfg.MaxQueueDepth, Compute: s.compute})
	if err != nil {
		s.closeDescs()
		return nil, err
	}
	s.target = t
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.closeDescs()
		return nil, errors.Wrapf(err, "nvmf: listen on %s", addr)
	}
	s.ln = ln
	for i, w := range t.Workers() {
		// A parked reactor wakes when a socket of its worker is readable.
		if err := w.OnReady(cfg.Reactors[i].Wake); err != nil {
			ln.Close()
			s.stopPollers()
			s.closeDescs()
			return nil, errors.Wrapf(err, "nvmf: reactor %d", i)
		}
		p, err := cfg.Reactors[i].Register("nvmf", func() poller.Status {
			// While namespace I/O is in flight the reactor keeps
			// polling: only sockets wake it once parked.
			if w.Poll() > 0 || w.Active() {
				return poller.Busy
			}
			return poller.Idle
		}, 0)
		if err != nil {
			ln.Close()
			s.stopPollers()
			s.closeDescs()
			return nil, errors.Wrapf(err, "nvmf: reactor %d", i)
		}
		s.pollers = append(s.pollers, p)
	}
	go func() { s.done <- t.Serve(ln) }()
	return s, nil
}

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// NQN returns the subsystem NQN.
func (s *Server) NQN() string { return s.target.NQN() }

// ComputeNSIDs returns the NSIDs hosts see for the exported compute
// namespace and memory namespaces (0 and nil without a compute device), and
// a note for a person when some exported namespaces are out of the compute
// device's reach.
func (s *Server) ComputeNSIDs() (cp uint32, memory []uint32, note string) {
	if s.compute == nil {
		return 0, nil, ""
	}
	cp = uint32(len(s.descs) + 1)
	for i := range s.compute.Memory {
		memory = append(memory, cp+1+uint32(i))
	}
	return cp, memory, s.note
}

// Wait blocks until the listener fails or is closed and returns its error.
func (s *Server) Wait() error {
	err := <-s.done
	s.done <- err
	return err
}

func (s *Server) stopPollers() {
	for i, p := range s.pollers {
		p.Unregister()
		w := s.target.Workers()[i]
		s.rs[i].Call(func() error { w.Close(); return nil })
	}
	s.pollers = nil
}

func (s *Server) closeDescs() {
	for _, d := range s.descs {
		d.Close()
	}
	s.descs = nil
}

// Close stops listening, closes every connection and the bdev descriptors.
// The reactors keep running.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.target.Close()
		s.stopPollers()
		s.closeDescs()
	})
	return nil
}

// bdevNS is a bdev as a target namespace.
type bdevNS struct {
	desc *bdev.Desc
	dma  bool // the bdev moves data only from DMA memory: bounce through it
}

func (n *bdevNS) BlockSize() int    { return n.desc.Bdev().BlockSize() }
func (n *bdevNS) NumBlocks() uint64 { return n.desc.Bdev().NumBlocks() }

// Open makes a bdev channel for the calling worker.
func (n *bdevNS) Open(depth int) (tcp.NSChannel, error) {
	ch, err := n.desc.NewChannel(depth)
	if err != nil {
		return nil, err
	}
	c := &bdevChan{ns: n, ch: ch, slots: make([]slot, depth), free: make([]uint16, 0, depth)}
	for i := depth - 1; i >= 0; i-- {
		c.free = append(c.free, uint16(i))
	}
	return c, nil
}

type slot struct {
	done   nvme.Completer
	tag    uint64
	data   []byte      // the target's buffer
	buf    bdev.Buffer // what the bdev moves: data, or a slice of bounce
	bounce bdev.Buffer // DMA memory, allocated at first use
	read   bool
}

// bdevChan is a bdev channel as a target namespace channel.
type bdevChan struct {
	ns    *bdevNS
	ch    *bdev.Channel
	slots []slot
	free  []uint16
}

func (c *bdevChan) Submit(op uint8, lba uint64, blocks uint32, buf []byte, done nvme.Completer, tag uint64) error {
	if len(c.free) == 0 {
		return tcp.ErrBusy
	}
	i := c.free[len(c.free)-1]
	s := &c.slots[i]
	s.done, s.tag, s.data, s.read = done, tag, buf, op == nvme.OpRead
	if c.ns.dma && len(buf) > 0 {
		if s.bounce.DMA == nil {
			b, err := c.ns.desc.AllocBuffer(maxXfer)
			if err != nil {
				return err
			}
			s.bounce = b
		}
		s.buf = s.bounce.Slice(0, len(buf))
		if op == nvme.OpWrite {
			copy(s.buf.Bytes, buf)
		}
	} else {
		s.buf = bdev.Buffer{Bytes: buf}
	}
	var err error
	switch op {
	case nvme.OpRead:
		err = c.ch.ReadTagged(&s.buf, lba, uint64(blocks), c, uint64(i))
	case nvme.OpWrite:
		err = c.ch.WriteTagged(&s.buf, lba, uint64(blocks), c, uint64(i))
	case nvme.OpFlush:
		err = c.ch.FlushTagged(c, uint64(i))
	case nvme.OpWriteZeroes:
		err = c.ch.WriteZeroesTagged(lba, uint64(blocks), c, uint64(i))
	default:
		return nvme.ErrInvalidOpcode
	}
	if err != nil {
		if errors.Is(err, bdev.ErrNoIO) || errors.Is(err, bdev.ErrBusy) {
			return tcp.ErrBusy
		}
		return mapErr(err)
	}
	c.free = c.free[:len(c.free)-1]
	return nil
}

// Complete implements nvme.Completer for the bdev channel.
func (c *bdevChan) Complete(tag uint64, _ uint64, err error) {
	i := uint16(tag)
	s := &c.slots[i]
	if err == nil && s.read && c.ns.dma && len(s.data) > 0 {
		copy(s.data, s.buf.Bytes)
	}
	done, dtag := s.done, s.tag
	s.done, s.data = nil, nil
	c.free = append(c.free, i)
	done.Complete(dtag, 0, mapErr(err))
}

// mapErr turns bdev errors into the NVMe statuses a host expects.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bdev.ErrOutOfRange):
		return nvme.ErrLBAOutOfRange
	case errors.Is(err, bdev.ErrUnsupported):
		return nvme.ErrInvalidOpcode
	}
	return err
}

func (c *bdevChan) Poll() int { return c.ch.Poll() }

func (c *bdevChan) Close() error {
	err := c.ch.Close()
	for i := range c.slots {
		if s := &c.slots[i]; s.bounce.DMA != nil {
			c.ns.desc.FreeBuffer(s.bounce)
			s.bounce = bdev.Buffer{}
		}
	}
	return err
}
