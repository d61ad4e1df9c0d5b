package bdev_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
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

// TestFewQueuePairs gives a controller 4 I/O queue pairs and channels of 6
// owners: the fifth owner's channel fails with an error that names the
// controller, the queue pairs it has and how many are asked for, and takes
// nothing; owners that have a queue pair still open channels of other
// namespaces on it; closing returns all 4.
func TestFewQueuePairs(t *testing.T) {
	c, closeAll := newMockNVMe(t, manyNamespaces(2, 4))
	defer closeAll()
	if c.IOQueues() != 4 {
		t.Fatalf("controller grants %d I/O queue pairs, want 4", c.IOQueues())
	}
	descs := openAll(t, c)
	var chans []*bdev.Channel
	owners := make([]*logicalOwner, 6)
	for i := range owners {
		owners[i] = &logicalOwner{id: i}
	}
	for i, o := range owners[:4] {
		ch, err := descs[0].NewChannelOn(o, 4)
		if err != nil {
			t.Fatalf("owner %d: %v", i, err)
		}
		chans = append(chans, ch)
	}
	for _, o := range owners[4:] {
		ch, err := descs[1].NewChannelOn(o, 4)
		if err == nil {
			ch.Close()
			t.Fatal("a channel of a fifth owner opened on a controller of 4 queue pairs")
		}
		t.Log(err)
		for _, want := range []string{c.Name(), "has 4 I/O queue pairs", "ask for 5"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if n := bdev.NVMeQueuePairs(c); n != 4 {
			t.Errorf("after a failed open, channels hold %d queue pairs, want 4", n)
		}
	}
	// Owners with a queue pair open more channels on it.
	for i, o := range owners[:4] {
		ch, err := descs[1].NewChannelOn(o, 4)
		if err != nil {
			t.Fatalf("owner %d, second namespace: %v", i, err)
		}
		chans = append(chans, ch)
	}
	for _, ch := range chans {
		if err := ch.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := bdev.NVMeQueuePairs(c); n != 0 {
		t.Errorf("closed channels hold %d queue pairs", n)
	}
	if n := queuePairsLeft(t, c); n != 4 {
		t.Errorf("the controller has %d queue pairs left, want 4", n)
	}
	// With room again, the fifth owner opens.
	ch, err := descs[1].NewChannelOn(owners[4], 4)
	if err != nil {
		t.Fatal(err)
	}
	ch.Close()

	// Owners are checked: one that is not comparable, or not the caller.
	if _, err := descs[0].NewChannelOn(nil, 4); err == nil {
		t.Error("a nil owner was taken")
	}
	if _, err := descs[0].NewChannelOn(elsewhere{}, 4); err == nil || !strings.Contains(err.Error(), "owner") {
		t.Errorf("an owner whose goroutine is another: %v", err)
	}
	if _, err := descs[0].NewChannelOn(uncomparable{}, 4); err == nil || !strings.Contains(err.Error(), "comparable") {
		t.Errorf("an uncomparable owner: %v", err)
	}
}

type elsewhere struct{}

func (elsewhere) OnReactor() bool { return false }

type uncomparable []int

func (uncomparable) OnReactor() bool { return true }

// TestSharedPoll covers polling one queue pair through several channels of
// an owner: one channel's Poll completes every channel's I/Os, each to its
// own callback or Completer; a channel polled right after another skips
// the queue pair once, then polls it; each channel's Outstanding is its
// own; and when the primary channel closes another takes its place with
// its I/Os in flight.
func TestSharedPoll(t *testing.T) {
	c, closeAll := newMockNVMe(t, manyNamespaces(2, 4))
	defer closeAll()
	descs := openAll(t, c)
	o := &logicalOwner{}
	a, err := descs[0].NewChannelOn(o, 8)
	if err != nil {
		t.Fatal(err)
	}
	b, err := descs[1].NewChannelOn(o, 8)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := descs[1].NewChannelOn(o, 8) // a second channel of one namespace
	if err != nil {
		t.Fatal(err)
	}
	if n := bdev.NVMeQueuePairs(c); n != 1 {
		t.Fatalf("three channels of one owner hold %d queue pairs, want 1", n)
	}
	buf, _ := descs[0].AllocBuffer(4096)
	defer descs[0].FreeBuffer(buf)
	la, lb, lb2 := newTagLog(), newTagLog(), newTagLog()
	var cbA, cbB completions
	for i := uint64(0); i < 3; i++ {
		if err := a.ReadTagged(&buf, i, 1, la, i); err != nil {
			t.Fatal(err)
		}
		if err := b.ReadTagged(&buf, i, 1, lb, 10+i); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Read(&buf, 5, 1, cbA.cb, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Read(&buf, 5, 1, cbB.cb, nil); err != nil {
		t.Fatal(err)
	}
	if err := b2.ReadTagged(&buf, 7, 1, lb2, 20); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		ch   *bdev.Channel
		want int
	}{{a, 4}, {b, 4}, {b2, 1}} {
		if n := x.ch.Outstanding(); n != x.want {
			t.Errorf("%s: Outstanding %d, want %d", x.ch.Bdev().Name(), n, x.want)
		}
	}
	// One Poll of b completes all nine.
	for i := 0; la.n+lb.n+lb2.n+cbA.n+cbB.n < 9; i++ {
		if i > 100_000 {
			t.Fatalf("completions: a %d+%d, b %d+%d, b2 %d", la.n, cbA.n, lb.n, cbB.n, lb2.n)
		}
		b.Poll()
	}
	if la.n != 3 || lb.n != 3 || lb2.n != 1 || cbA.n != 1 || cbB.n != 1 || la.seen[0]+la.seen[1]+la.seen[2] != 3 || lb.seen[10]+lb.seen[11]+lb.seen[12] != 3 || lb2.seen[20] != 1 {
		t.Fatalf("completions went astray: a %v, b %v, b2 %v", la.seen, lb.seen, lb2.seen)
	}
	if cbA.err != nil || cbB.err != nil || len(la.errs)+len(lb.errs)+len(lb2.errs) != 0 {
		t.Fatalf("errors: %v %v %v %v %v", cbA.err, cbB.err, la.errs, lb.errs, lb2.errs)
	}
	for _, ch := range []*bdev.Channel{a, b, b2} {
		if n := ch.Outstanding(); n != 0 {
			t.Errorf("%s: Outstanding %d after all completed", ch.Bdev().Name(), n)
		}
	}

	// a was polled before b: its next Poll skips the queue pair (b's poll
	// served it), the one after polls it.
	if err := a.ReadTagged(&buf, 0, 1, la, 3); err != nil {
		t.Fatal(err)
	}
	if n := a.Poll(); n != 0 || la.n != 3 {
		t.Fatalf("a Poll right after another channel's: %d completions, tagged %d", n, la.n)
	}
	for i := 0; la.n < 4; i++ {
		if i > 100_000 {
			t.Fatal("a's read does not complete")
		}
		a.Poll()
	}

	// The primary, a, closes while b has an I/O in flight; b's count
	// stays its own.
	if err := b.ReadTagged(&buf, 1, 1, lb, 13); err != nil {
		t.Fatal(err)
	}
	if err := b2.ReadTagged(&buf, 2, 1, lb2, 21); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if b.Outstanding() != 1 || b2.Outstanding() != 1 {
		t.Fatalf("after the primary closed: Outstanding %d and %d, want 1 each", b.Outstanding(), b2.Outstanding())
	}
	if err := b.ReadTagged(&buf, 2, 1, lb, 14); err != nil {
		t.Fatal(err)
	}
	if b.Outstanding() != 2 || b2.Outstanding() != 1 {
		t.Fatalf("one more read on the new primary: Outstanding %d and %d, want 2 and 1", b.Outstanding(), b2.Outstanding())
	}
	for i := 0; lb.n < 5 || lb2.n < 2; i++ {
		if i > 100_000 {
			t.Fatal("reads after the primary closed do not complete")
		}
		b2.Poll()
	}
	if b.Outstanding() != 0 || b2.Outstanding() != 0 {
		t.Fatalf("Outstanding %d and %d at the end", b.Outstanding(), b2.Outstanding())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := bdev.NVMeQueuePairs(c); n != 1 {
		t.Fatalf("with one channel left, %d queue pairs held", n)
	}
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	if n := bdev.NVMeQueuePairs(c); n != 0 {
		t.Fatalf("all closed, %d queue pairs held", n)
	}
}

// TestCloseInCompletion closes a channel from a callback while another I/O
// of the channel is in flight: Close cannot wait there, fails, and leaves
// the channel as it was; from outside a completion it waits.
func TestCloseInCompletion(t *testing.T) {
	c, closeAll := newMockNVMe(t, manyNamespaces(1, 4))
	defer closeAll()
	d := openAll(t, c)[0]
	ch, err := d.NewChannelOn(&logicalOwner{}, 4)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := d.AllocBuffer(4096)
	defer d.FreeBuffer(buf)
	var closeErr error
	done := 0
	cb := func(io *bdev.IO) {
		done++
		if done == 1 {
			closeErr = io.Channel().Close()
		}
	}
	for i := uint64(0); i < 2; i++ {
		if err := ch.Read(&buf, i, 1, cb, nil); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(t, ch, &done, 1)
	if closeErr == nil || !strings.Contains(closeErr.Error(), "in flight") {
		t.Fatalf("Close from a callback with a read in flight: %v", closeErr)
	}
	pollUntil(t, ch, &done, 2)
	if err := ch.Read(&buf, 0, 1, cb, nil); err != nil {
		t.Fatalf("a read after the refused Close: %v", err)
	}
	if err := ch.Close(); err != nil || done != 3 {
		t.Fatalf("Close with a read in flight: %v, %d callbacks", err, done)
	}
	if bdev.NVMeQueuePairs(c) != 0 {
		t.Fatal("the queue pair outlived its channel")
	}
}

// TestSharedQueueFull fills a shared queue pair of 8 entries (7 commands):
// a channel that is not the primary queues what does not fit in its own
// retry queue, counts it as its own, and sends it as completions free
// room, in order, while the primary's tagged I/Os are refused with
// ErrNoIO.
func TestSharedQueueFull(t *testing.T) {
	cfg := manyNamespaces(2, 4)
	cfg.MQES = 7
	c, closeAll := newMockNVMe(t, cfg)
	defer closeAll()
	descs := openAll(t, c)
	o := &logicalOwner{}
	a, err := descs[0].NewChannelOn(o, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := descs[1].NewChannelOn(o, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	buf, _ := descs[0].AllocBuffer(4096)
	defer descs[0].FreeBuffer(buf)
	la := newTagLog()
	for i := uint64(0); i < 5; i++ {
		if err := a.ReadTagged(&buf, i, 1, la, i); err != nil {
			t.Fatal(err)
		}
	}
	var order []uint64
	cb := func(io *bdev.IO) {
		if io.Err() != nil {
			t.Errorf("read of LBA %d: %v", io.LBA, io.Err())
		}
		order = append(order, io.LBA)
	}
	for i := uint64(0); i < 4; i++ {
		if err := b.Read(&buf, 10+i, 1, cb, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.ReadTagged(&buf, 0, 1, la, 9); !errors.Is(err, bdev.ErrNoIO) {
		t.Fatalf("a tagged read on a full shared queue: %v", err)
	}
	if a.Outstanding() != 5 || b.Outstanding() != 4 {
		t.Fatalf("full queue: Outstanding %d and %d, want 5 and 4", a.Outstanding(), b.Outstanding())
	}
	for i := 0; len(order) < 4 || la.n < 5; i++ {
		if i > 100_000 {
			t.Fatalf("%d of 4 queued reads and %d of 5 tagged ones completed", len(order), la.n)
		}
		a.Poll()
		b.Poll()
	}
	for i, lba := range order {
		if lba != uint64(10+i) {
			t.Fatalf("reads completed in the order %v", order)
		}
	}
	if a.Outstanding() != 0 || b.Outstanding() != 0 {
		t.Fatalf("Outstanding %d and %d at the end", a.Outstanding(), b.Outstanding())
	}
}
