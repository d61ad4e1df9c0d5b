package tcp

import (
	"net"
	"sync"
	"testing"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/pkg/errors"
)

// memNS is a namespace in memory whose channel completes from Poll.
type memNS struct {
	bs   int
	mu   sync.Mutex // between workers; never contended in these tests' hot loops
	data []byte
}

func newMemNS(bs int, blocks int) *memNS { return &memNS{bs: bs, data: make([]byte, bs*blocks)} }

func (m *memNS) BlockSize() int    { return m.bs }
func (m *memNS) NumBlocks() uint64 { return uint64(len(m.data) / m.bs) }
func (m *memNS) Open(depth int) (NSChannel, error) {
	return &memChan{ns: m, done: make([]memDone, 0, depth), work: make([]memDone, 0, depth)}, nil
}

type memDone struct {
	c   nvme.Completer
	tag uint64
	err error
}

type memChan struct {
	ns   *memNS
	done []memDone
	work []memDone
}

func (c *memChan) Submit(op uint8, lba uint64, blocks uint32, buf []byte, done nvme.Completer, tag uint64) error {
	if len(c.done) == cap(c.done) {
		return ErrBusy
	}
	m := c.ns
	off := int(lba) * m.bs
	n := int(blocks) * m.bs
	var err error
	m.mu.Lock()
	switch op {
	case nvme.OpRead:
		copy(buf, m.data[off:off+n])
	case nvme.OpWrite:
		copy(m.data[off:off+n], buf)
	case nvme.OpWriteZeroes:
		clear(m.data[off : off+n])
	case nvme.OpFlush:
	default:
		err = errors.New("unsupported")
	}
	m.mu.Unlock()
	c.done = append(c.done, memDone{done, tag, err})
	return nil
}

func (c *memChan) Poll() int {
	if len(c.done) == 0 {
		return 0
	}
	c.work, c.done = c.done, c.work[:0]
	for _, d := range c.work {
		d.c.Complete(d.tag, 0, d.err)
	}
	n := len(c.work)
	clear(c.work)
	c.work = c.work[:0]
	return n
}

func (c *memChan) Close() error { return nil }

// startTarget runs a target with a 512-byte and a 4096-byte namespace on
// 127.0.0.1 and returns its address.
func startTarget(t testing.TB, workers int) (*Target, string) {
	t.Helper()
	return startTargetWith(t, TargetConfig{Workers: workers})
}

// startTargetWith is startTarget with cfg (its namespaces filled in when
// empty).
func startTargetWith(t testing.TB, cfg TargetConfig) (*Target, string) {
	t.Helper()
	if len(cfg.Namespaces) == 0 {
		cfg.Namespaces = []Namespace{newMemNS(512, 8192), newMemNS(4096, 2048)}
	}
	tg, err := NewTarget(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg.Run(ln)
	t.Cleanup(func() { tg.Close() })
	return tg, ln.Addr().String()
}
