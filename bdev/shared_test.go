package bdev_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/poller"
)

// logicalOwner is an Owner that is not a reactor: the test's goroutine
// stands for as many threads as it makes owners.
type logicalOwner struct{ id int }

func (*logicalOwner) OnReactor() bool { return true }

// manyNamespaces is a mock controller of n namespaces of 64 KiB in RAM,
// offering queues I/O queue pairs and taking 8 KiB per command.
func manyNamespaces(n, queues int) mock.Config {
	cfg := mock.Config{MaxQueues: queues, MDTS: 1}
	for i := 0; i < n; i++ {
		cfg.Namespaces = append(cfg.Namespaces, mock.NamespaceConfig{Kind: mock.Memory, Size: 64 << 10, LBASize: 512})
	}
	return cfg
}

// openAll makes a read-write descriptor of a bdev of every namespace of c.
func openAll(t *testing.T, c *nvme.Controller) []*bdev.Desc {
	t.Helper()
	var descs []*bdev.Desc
	for _, ns := range c.Namespaces() {
		b, err := bdev.NewNVMe(fmt.Sprintf("%sn%d", c.Name(), ns.ID), c, ns)
		if err != nil {
			t.Fatal(err)
		}
		d, err := bdev.Open(b, true)
		if err != nil {
			t.Fatal(err)
		}
		descs = append(descs, d)
		t.Cleanup(func() { d.Close(); b.Close() })
	}
	return descs
}

// queuePairsLeft returns how many more I/O queue pairs c grants, creating
// and closing them.
func queuePairsLeft(t *testing.T, c *nvme.Controller) int {
	t.Helper()
	var qps []*nvme.QueuePair
	for {
		qp, err := c.NewQueuePair(2)
		if err != nil {
			break
		}
		qps = append(qps, qp)
	}
	for _, qp := range qps {
		if err := qp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return len(qps)
}

// stamp fills b with a pattern of namespace i, the LBA and round r.
func stamp(b []byte, i int, lba uint64, r int) {
	for off := 0; off < len(b); off += 16 {
		binary.LittleEndian.PutUint64(b[off:], uint64(i)<<32|uint64(r))
		binary.LittleEndian.PutUint64(b[off+8:], lba+uint64(off/512))
	}
}

// TestSharedQueuePairs opens 64 namespaces of one controller on 16
// reactors (16 threads on however many cores there are): the channels take
// 16 queue pairs, one per reactor, and each reactor's four channels do
// I/O on theirs at once — both forms, whole and split, the primary's fast
// paths and the others' IOs — with the data read back and compared, the
// completions reaching the channel and Completer they belong to and
// Outstanding counting each channel's own. Closing returns every queue
// pair to the controller.
func TestSharedQueuePairs(t *testing.T) {
	const reactors, perReactor = 16, 4
	c, closeAll := newMockNVMe(t, manyNamespaces(reactors*perReactor, 64))
	defer closeAll()
	if c.IOQueues() != 16 {
		t.Fatalf("controller grants %d I/O queue pairs, the test wants the driver's default of 16", c.IOQueues())
	}
	descs := openAll(t, c)
	g, err := poller.Start(poller.Config{Cores: fmt.Sprintf("0-%d", reactors-1), NoPin: true,
		Idle: poller.IdleStrategy{Spin: 1, Yield: 1, Park: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()

	sides := make([][]*sharedSide, reactors)
	for ri, r := range g.Reactors() {
		for k := 0; k < perReactor; k++ {
			d := descs[k*reactors+ri]
			s := &sharedSide{d: d, log: newTagLog()}
			if s.buf, err = d.AllocBuffer(24 << 10); err != nil {
				t.Fatal(err)
			}
			if s.back, err = d.AllocBuffer(24 << 10); err != nil {
				t.Fatal(err)
			}
			sides[ri] = append(sides[ri], s)
		}
		err := r.Call(func() error {
			for _, s := range sides[ri] {
				var err error
				if s.ch, err = s.d.NewChannelOn(r, 8); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := bdev.NVMeQueuePairs(c); n != reactors {
		t.Errorf("64 namespaces on 16 reactors hold %d queue pairs, want 16", n)
	}
	if n := queuePairsLeft(t, c); n != 0 {
		t.Errorf("the controller has %d queue pairs left, want 0 of its 16", n)
	}

	// On every reactor at once: each channel writes 16 KiB in two forms
	// (a tagged write of one command and a callback write split in
	// pieces), then reads it back the same way; the reactor polls its
	// channels in turn.
	var wg sync.WaitGroup
	errs := make([]error, reactors)
	for ri, r := range g.Reactors() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[ri] = r.Call(func() error { return sharedRounds(sides[ri], ri) })
		}()
	}
	wg.Wait()
	for ri, err := range errs {
		if err != nil {
			t.Errorf("reactor %d: %v", ri, err)
		}
	}

	for ri, r := range g.Reactors() {
		err := r.Call(func() error {
			for _, s := range sides[ri] {
				if err := s.ch.Close(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sides[ri] {
			s.d.FreeBuffer(s.buf)
			s.d.FreeBuffer(s.back)
		}
	}
	if n := bdev.NVMeQueuePairs(c); n != 0 {
		t.Errorf("closed channels hold %d queue pairs", n)
	}
	if n := queuePairsLeft(t, c); n != 16 {
		t.Errorf("after the channels closed the controller has %d queue pairs left, want 16", n)
	}
}

// sharedSide is one channel of TestSharedQueuePairs.
type sharedSide struct {
	d         *bdev.Desc
	ch        *bdev.Channel
	buf, back bdev.Buffer
	log       *tagLog
	cbs       int
	wrong     string
}

// sharedRounds is the I/O of one reactor of TestSharedQueuePairs, on its
// goroutine. Each channel's 24 KiB per round are a tagged I/O of 8 KiB
// (one command) and a callback I/O of 16 KiB (two: the controller takes
// 8 KiB per command).
func sharedRounds(sides []*sharedSide, ri int) error {
	pollAll := func(done func(*sharedSide) bool) error {
		for i := 0; ; i++ {
			all := true
			for _, s := range sides {
				s.ch.Poll()
				all = all && done(s)
			}
			if all {
				return nil
			}
			if i > 1_000_000 {
				return fmt.Errorf("I/Os do not complete")
			}
		}
	}
	for round := 0; round < 2; round++ {
		lba := uint64(round * 48)
		for k, s := range sides {
			stamp(s.buf.Bytes, k*16+ri, lba, round)
			clear(s.back.Bytes)
			s.cbs = 0
			cb := func(io *bdev.IO) {
				if io.Channel() != s.ch || io.Arg != s || io.Err() != nil {
					s.wrong = fmt.Sprintf("callback of channel %s: channel %s, error %v", s.ch.Bdev().Name(), io.Channel().Bdev().Name(), io.Err())
				}
				s.cbs++
			}
			a, b := s.buf.Slice(0, 8<<10), s.buf.Slice(8<<10, 16<<10)
			if err := s.ch.WriteTagged(&a, lba, 16, s.log, uint64(2*round)); err != nil {
				return err
			}
			if err := s.ch.Write(&b, lba+16, 32, cb, s); err != nil {
				return err
			}
		}
		for _, s := range sides {
			if n := s.ch.Outstanding(); n != 3 {
				return fmt.Errorf("%s: %d I/Os outstanding after a write and a split one, want 3", s.ch.Bdev().Name(), n)
			}
		}
		if err := pollAll(func(s *sharedSide) bool { return s.cbs == 1 && s.log.seen[uint64(2*round)] == 1 }); err != nil {
			return err
		}
		for k, s := range sides {
			if s.ch.Outstanding() != 0 {
				return fmt.Errorf("%s: %d outstanding after its writes completed", s.ch.Bdev().Name(), s.ch.Outstanding())
			}
			a, b := s.back.Slice(0, 8<<10), s.back.Slice(8<<10, 16<<10)
			if err := s.ch.ReadTagged(&a, lba, 16, s.log, uint64(2*round+1)); err != nil {
				return err
			}
			cb := func(io *bdev.IO) {
				if io.Channel() != s.ch || io.Err() != nil {
					s.wrong = fmt.Sprintf("read %d of channel %s: channel %s, error %v", k, s.ch.Bdev().Name(), io.Channel().Bdev().Name(), io.Err())
				}
				s.cbs++
			}
			if err := s.ch.Read(&b, lba+16, 32, cb, s); err != nil {
				return err
			}
		}
		if err := pollAll(func(s *sharedSide) bool { return s.cbs == 2 && s.log.seen[uint64(2*round+1)] == 1 }); err != nil {
			return err
		}
		for _, s := range sides {
			if s.wrong != "" {
				return fmt.Errorf("%s", s.wrong)
			}
			if s.log.n != 2*round+2 || len(s.log.errs) != 0 {
				return fmt.Errorf("%s: %d tagged completions (errors %v), want %d", s.ch.Bdev().Name(), s.log.n, s.log.errs, 2*round+2)
			}
			if !bytes.Equal(s.back.Bytes, s.buf.Bytes) {
				return fmt.Errorf("%s: round %d: data read back differs from what was written", s.ch.Bdev().Name(), round)
			}
			if s.ch.Outstanding() != 0 {
				return fmt.Errorf("%s: %d outstanding at the end of round %d", s.ch.Bdev().Name(), s.ch.Outstanding(), round)
			}
		}
	}
	return nil
}
