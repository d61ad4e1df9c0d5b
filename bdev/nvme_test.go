package bdev_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

func newMockNVMe(t testing.TB, cfg mock.Config) (*nvme.Controller, func()) {
	t.Helper()
	_, c, closeAll := newMockDevice(t, cfg)
	return c, closeAll
}

// newMockDevice is newMockNVMe for a test that also needs the mock device
// (to inject faults).
func newMockDevice(t testing.TB, cfg mock.Config) (*mock.Controller, *nvme.Controller, func()) {
	t.Helper()
	mc, err := mock.NewController(mock.NewBus(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvme.NewController(mc, nvme.Options{})
	if err != nil {
		mc.Close()
		t.Fatal(err)
	}
	return mc, c, func() { c.Close(); mc.Close() }
}

// memoryMDTS1 is a mock namespace of 8 MiB in RAM behind a controller that
// takes 8 KiB per command, so that a bdev of it splits larger I/Os.
var memoryMDTS1 = mock.Config{MDTS: 1, Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 8 << 20, LBASize: 512}}}

// completions counts callbacks and keeps the first error.
type completions struct {
	n   int
	err error
}

func (c *completions) cb(io *bdev.IO) {
	c.n++
	if io.Err() != nil && c.err == nil {
		c.err = io.Err()
	}
}

// pollUntil polls ch until n callbacks ran.
func pollUntil(t testing.TB, ch *bdev.Channel, done *int, n int) {
	t.Helper()
	for i := 0; *done < n; i++ {
		ch.Poll()
		if i > 1_000_000 {
			t.Fatalf("%d of %d I/Os completed", *done, n)
		}
	}
}

func TestNVMeBdev(t *testing.T) {
	// MDTS 1 = 8 KiB per command, so a 64 KiB I/O is split by the bdev layer.
	c, closeAll := newMockNVMe(t, memoryMDTS1)
	defer closeAll()
	b, err := bdev.NewNVMe("mock0n1", c, c.Namespaces()[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, ty := range []bdev.IOType{bdev.Read, bdev.Write, bdev.Flush, bdev.WriteZeroes, bdev.Unmap, bdev.Copy} {
		if !b.Supports(ty) {
			t.Errorf("mock namespace bdev lacks %v", ty)
		}
	}
	if b.Info().MaxTransfer != 8192 {
		t.Fatalf("max transfer %d, want 8192", b.Info().MaxTransfer)
	}
	d, _ := bdev.Open(b, true)
	defer d.Close()
	ch, err := d.NewChannel(4)
	if err != nil {
		t.Fatal(err)
	}
	wbuf, err := d.AllocBuffer(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	rbuf, _ := d.AllocBuffer(64 << 10)
	for i := range wbuf.Bytes {
		wbuf.Bytes[i] = byte(i*13 + i>>9)
	}
	var got completions
	cb := got.cb
	step := func(f func() error) {
		t.Helper()
		want := got.n + 1
		if err := f(); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, ch, &got.n, want)
		if got.err != nil {
			t.Fatal(got.err)
		}
	}
	step(func() error { return ch.Write(&wbuf, 1000, 128, cb, nil) })
	step(func() error { return ch.Read(&rbuf, 1000, 128, cb, nil) })
	if !bytes.Equal(rbuf.Bytes, wbuf.Bytes) {
		t.Fatal("read back differs")
	}
	step(func() error { return ch.Copy(5000, 1000, 16, cb, nil) })
	step(func() error { return ch.WriteZeroes(1001, 1, cb, nil) })
	step(func() error { return ch.Unmap(1002, 1, cb, nil) })
	step(func() error { return ch.Flush(cb, nil) })
	clear(rbuf.Bytes)
	step(func() error { return ch.Read(&rbuf, 1000, 3, cb, nil) })
	if !bytes.Equal(rbuf.Bytes[:512], wbuf.Bytes[:512]) || !bytes.Equal(rbuf.Bytes[512:1536], make([]byte, 1024)) {
		t.Fatal("write zeroes / unmap left data behind")
	}
	step(func() error { return ch.Read(&rbuf, 5000, 16, cb, nil) })
	if !bytes.Equal(rbuf.Bytes[:8192], wbuf.Bytes[:8192]) {
		t.Fatal("copy target differs")
	}
	// Plain memory is refused for an NVMe bdev, with a completion error.
	plain := bdev.Buffer{Bytes: make([]byte, 512)}
	if err := ch.Read(&plain, 0, 1, cb, nil); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, ch, &got.n, got.n+1)
	if got.err == nil {
		t.Fatal("plain-memory buffer accepted by an NVMe bdev")
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	d.FreeBuffer(wbuf)
	d.FreeBuffer(rbuf)
}

// BenchmarkNullQD128 compares the bdev layer with the raw queue pair on the
// mock null namespace, 4 KiB random reads at queue depth 128 on one core (the
// inline device runs on the same core):
//
//	go test -run '^$' -bench NullQD128 -benchmem ./bdev/
//
// The queuepair, bdev (Channel.Read with a callback) and tagged
// (Channel.ReadTagged with a Completer) sub-benchmarks measure each side on
// its own. The interleaved one runs all three in the same loop, in turn
// every 16k I/Os, so that a noisy machine slows them alike; it reports
// each side's ns per I/O, and cost-% and tagged-cost-%, the share of the
// raw IOPS the bdev layer costs (1 - raw/bdev time per I/O).
func BenchmarkNullQD128(b *testing.B) { benchNull(b, 128) }

// BenchmarkNullQD32 is BenchmarkNullQD128 at queue depth 32.
func BenchmarkNullQD32(b *testing.B) { benchNull(b, 32) }

// BenchmarkNullQD1 is BenchmarkNullQD128 at queue depth 1, where each I/O
// pays for a whole poll.
func BenchmarkNullQD1(b *testing.B) { benchNull(b, 1) }

func benchNull(b *testing.B, qd int) {
	b.Run("queuepair", func(b *testing.B) {
		r := newRawResubmit(b, qd)
		b.ReportAllocs()
		b.ResetTimer()
		r.run(b.N)
		b.StopTimer()
		r.close()
	})
	b.Run("bdev", func(b *testing.B) {
		r := newBdevResubmit(b, qd, false)
		b.ReportAllocs()
		b.ResetTimer()
		r.run(b.N)
		b.StopTimer()
		r.close()
	})
	b.Run("tagged", func(b *testing.B) {
		r := newTaggedResubmit(b, qd, false)
		b.ReportAllocs()
		b.ResetTimer()
		r.run(b.N)
		b.StopTimer()
		r.close()
	})
	// A channel that is not the first of its owner on the queue pair: its
	// every I/O takes an IO, either form (see RATIONALE.md).
	b.Run("bdev-second", func(b *testing.B) {
		r := newBdevResubmit(b, qd, true)
		b.ReportAllocs()
		b.ResetTimer()
		r.run(b.N)
		b.StopTimer()
		r.close()
	})
	b.Run("tagged-second", func(b *testing.B) {
		r := newTaggedResubmit(b, qd, true)
		b.ReportAllocs()
		b.ResetTimer()
		r.run(b.N)
		b.StopTimer()
		r.close()
	})
	b.Run("interleaved", func(b *testing.B) {
		raw, bd, tg := newRawResubmit(b, qd), newBdevResubmit(b, qd, false), newTaggedResubmit(b, qd, false)
		const chunk = 1 << 14
		var rawNS, bdevNS, taggedNS time.Duration
		b.ReportAllocs()
		b.ResetTimer()
		for left := b.N; left > 0; left -= chunk {
			n := min(left, chunk)
			t0 := time.Now()
			raw.run(n)
			t1 := time.Now()
			bd.run(n)
			t2 := time.Now()
			tg.run(n)
			rawNS += t1.Sub(t0)
			bdevNS += t2.Sub(t1)
			taggedNS += time.Since(t2)
		}
		b.StopTimer()
		raw.close()
		bd.close()
		tg.close()
		b.ReportMetric(float64(rawNS)/float64(b.N), "raw-ns/io")
		b.ReportMetric(float64(bdevNS)/float64(b.N), "bdev-ns/io")
		b.ReportMetric(float64(taggedNS)/float64(b.N), "tagged-ns/io")
		b.ReportMetric(100*(1-float64(rawNS)/float64(bdevNS)), "cost-%")
		b.ReportMetric(100*(1-float64(rawNS)/float64(taggedNS)), "tagged-cost-%")
	})
}

var nullConfig = mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Null, Size: 1 << 40, LBASize: 512}}}

// rawResubmit keeps qd reads in flight on a queue pair of its own,
// resubmitting each as it completes.
type rawResubmit struct {
	qp      *nvme.QueuePair
	ns      *nvme.Namespace
	buf     *nvme.DMA
	lba     uint64
	done    int
	stop    bool
	started bool
	qd      int
	close   func()
}

func newRawResubmit(b *testing.B, qd int) *rawResubmit {
	c, closeAll := newMockNVMe(b, nullConfig)
	qp, err := c.NewQueuePair(qd + 1)
	if err != nil {
		b.Fatal(err)
	}
	buf, err := c.Transport().AllocDMA(qd * 4096)
	if err != nil {
		b.Fatal(err)
	}
	r := &rawResubmit{qp: qp, ns: c.Namespaces()[0], buf: buf, qd: qd}
	r.close = func() {
		r.stop = true
		if err := qp.Drain(time.Second); err != nil {
			b.Error(err)
		}
		qp.Close()
		closeAll()
	}
	return r
}

// run polls until n more reads completed, starting the first qd on its
// first call.
func (r *rawResubmit) run(n int) {
	if !r.started {
		r.started = true
		for i := 0; i < r.qd; i++ {
			r.submit(uint64(i))
		}
	}
	for end := r.done + n; r.done < end; {
		r.qp.Process(0)
	}
}

func (r *rawResubmit) submit(slot uint64) {
	r.lba = r.lba*6364136223846793005 + 1442695040888963407
	if err := r.qp.Read(r.ns, (r.lba>>20)&(1<<28-1)*8, 8, r.buf, int(slot)*4096, r, slot); err != nil {
		panic(err)
	}
}

func (r *rawResubmit) Complete(tag, _ uint64, err error) {
	r.done++
	if !r.stop {
		r.submit(tag)
	}
}

// bdevResubmit is rawResubmit through a bdev channel.
type bdevResubmit struct {
	ch      *bdev.Channel
	slots   []bdevSlot
	lba     uint64
	done    int
	stop    bool
	started bool
	close   func()
}

// newNullChannel opens a channel of depth qd on a bdev of the mock null
// namespace, and one DMA allocation of qd 4 KiB buffers, as the raw side
// has. close drains and closes both.
// With second, the channel is the second of an owner on the queue pair,
// behind an idle first one.
func newNullChannel(b *testing.B, qd int, second bool) (ch *bdev.Channel, buf bdev.Buffer, close func()) {
	c, closeAll := newMockNVMe(b, nullConfig)
	bd, err := bdev.NewNVMe("n1", c, c.Namespaces()[0])
	if err != nil {
		b.Fatal(err)
	}
	d, err := bdev.Open(bd, false)
	if err != nil {
		b.Fatal(err)
	}
	owner := &logicalOwner{}
	var first *bdev.Channel
	if second {
		if first, err = d.NewChannelOn(owner, 1); err != nil {
			b.Fatal(err)
		}
	}
	if ch, err = d.NewChannelOn(owner, qd); err != nil {
		b.Fatal(err)
	}
	if buf, err = d.AllocBuffer(qd * 4096); err != nil {
		b.Fatal(err)
	}
	return ch, buf, func() {
		if first != nil {
			first.Close()
		}
		for ch.Outstanding() > 0 {
			ch.Poll()
		}
		if err := ch.Close(); err != nil {
			b.Error(err)
		}
		closeAll()
	}
}

func newBdevResubmit(b *testing.B, qd int, second bool) *bdevResubmit {
	ch, buf, closeCh := newNullChannel(b, qd, second)
	r := &bdevResubmit{ch: ch, slots: make([]bdevSlot, qd)}
	for i := range r.slots {
		r.slots[i] = bdevSlot{r: r, buf: buf.Slice(i*4096, 4096)}
	}
	r.close = func() {
		r.stop = true
		closeCh()
	}
	return r
}

// run polls until n more reads completed.
func (r *bdevResubmit) run(n int) {
	if !r.started {
		r.started = true
		for i := range r.slots {
			r.submit(r.ch, &r.slots[i])
		}
	}
	for end := r.done + n; r.done < end; {
		r.ch.Poll()
	}
}

// bdevSlot is one I/O's context, set up once and handed to every I/O of
// the slot as its argument, as an application keeps its request state.
type bdevSlot struct {
	r   *bdevResubmit
	buf bdev.Buffer
}

func (r *bdevResubmit) submit(ch *bdev.Channel, s *bdevSlot) {
	r.lba = r.lba*6364136223846793005 + 1442695040888963407
	if err := ch.Read(&s.buf, (r.lba>>20)&(1<<28-1)*8, 8, bdevDone, s); err != nil {
		panic(err)
	}
}

func bdevDone(io *bdev.IO) {
	s := io.Arg.(*bdevSlot)
	s.r.done++
	if !s.r.stop {
		s.r.submit(io.Channel(), s)
	}
}

// TestNVMeBdevSmallerThanTransfer: on a bdev smaller than its device's
// transfer limit, a read of one block more than the bdev holds is refused
// at once, not sent to the device.
func TestNVMeBdevSmallerThanTransfer(t *testing.T) {
	// 128 blocks; MDTS 7 allows 1024 per command.
	c, closeAll := newMockNVMe(t, mock.Config{MDTS: 7, Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 64 << 10, LBASize: 512}}})
	defer closeAll()
	b, err := bdev.NewNVMe("mock0n1", c, c.Namespaces()[0])
	if err != nil {
		t.Fatal(err)
	}
	d, _ := bdev.Open(b, false)
	defer d.Close()
	ch, err := d.NewChannel(1)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	buf, err := d.AllocBuffer(129 * 512)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeBuffer(buf)
	var got completions
	if err := ch.Read(&buf, 0, 129, got.cb, nil); !errors.Is(err, bdev.ErrOutOfRange) {
		t.Fatalf("read of 129 blocks from a 128-block bdev: %v, want ErrOutOfRange", err)
	}
	if n := ch.Outstanding(); n != 0 || got.n != 0 {
		t.Fatalf("refused read: %d outstanding, %d callbacks", n, got.n)
	}
	if err := ch.Read(&buf, 0, 128, got.cb, nil); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, ch, &got.n, 1)
	if got.err != nil {
		t.Fatalf("read of the whole bdev: %v", got.err)
	}
}

// TestNVMeBdevFastPath covers what the direct read/write path of an NVMe
// bdev must still do: refuse bad requests with an error, deliver a device
// error to the callback and recycle the IO, count split pieces in flight,
// and stop at Close.
func TestNVMeBdevFastPath(t *testing.T) {
	mc, c, closeAll := newMockDevice(t, memoryMDTS1)
	defer closeAll()
	b, err := bdev.NewNVMe("mock0n1", c, c.Namespaces()[0])
	if err != nil {
		t.Fatal(err)
	}
	ro, _ := bdev.Open(b, false)
	roCh, err := ro.NewChannel(1)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := ro.AllocBuffer(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.FreeBuffer(buf)
	if err := roCh.Write(&buf, 0, 1, nil, nil); !errors.Is(err, bdev.ErrReadOnly) {
		t.Fatalf("write on a read-only descriptor: %v", err)
	}
	roCh.Close()
	ro.Close()

	d, _ := bdev.Open(b, true)
	defer d.Close()
	ch, err := d.NewChannel(2)
	if err != nil {
		t.Fatal(err)
	}
	done := 0
	var got error
	cb := func(io *bdev.IO) {
		done, got = done+1, io.Err()
		if io.Channel() != ch {
			t.Error("io.Channel() is not the channel the I/O was submitted on")
		}
	}
	for _, bad := range []struct {
		name string
		f    func() error
		want error
	}{
		{"nil buffer", func() error { return ch.Read(nil, 0, 1, cb, nil) }, nil},
		{"zero blocks", func() error { return ch.Read(&buf, 0, 0, cb, nil) }, bdev.ErrOutOfRange},
		{"past the end", func() error { return ch.Write(&buf, 16383, 2, cb, nil) }, bdev.ErrOutOfRange},
		{"at the end", func() error { return ch.Read(&buf, 16384, 1, cb, nil) }, bdev.ErrOutOfRange},
		{"LBA wraps", func() error { return ch.Read(&buf, 1<<64-1, 2, cb, nil) }, bdev.ErrOutOfRange},
		{"buffer too small", func() error { return ch.Read(&buf, 0, 129, cb, nil) }, nil},
	} {
		err := bad.f()
		if err == nil || (bad.want != nil && !errors.Is(err, bad.want)) {
			t.Errorf("%s: %v", bad.name, err)
		}
	}
	if done != 0 || ch.Outstanding() != 0 {
		t.Fatalf("refused I/Os: %d callbacks, %d outstanding", done, ch.Outstanding())
	}

	// A device error reaches the callback, and the IO goes back to the pool
	// without it.
	mc.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, LBA: 7, Blocks: 1, Status: nvme.ErrUnrecoveredRead, Count: 1})
	if err := ch.Read(&buf, 0, 8, cb, nil); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, ch, &done, 1)
	if !errors.Is(got, nvme.ErrUnrecoveredRead) {
		t.Fatalf("read over a bad block: %v", got)
	}
	for i := 0; i < 20; i++ { // every IO of the pool, more than once
		if err := ch.Read(&buf, 0, 8, cb, nil); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, ch, &done, done+1)
		if got != nil {
			t.Fatalf("read %d after the error: %v", i, got)
		}
	}

	// 128 blocks at 16 per command: the window of split pieces is what is
	// outstanding, and Close waits for them.
	if err := ch.Read(&buf, 0, 128, cb, nil); err != nil {
		t.Fatal(err)
	}
	if n := ch.Outstanding(); n != 4 {
		t.Errorf("a split read has %d I/Os outstanding, want its 4 pieces", n)
	}
	before := done
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if done != before+1 || got != nil || ch.Outstanding() != 0 {
		t.Fatalf("split read completed by Close: %d callbacks, %v, %d outstanding", done-before, got, ch.Outstanding())
	}
	if err := ch.Read(&buf, 0, 1, cb, nil); !errors.Is(err, bdev.ErrClosed) {
		t.Fatalf("read on a closed channel: %v", err)
	}
}

// TestNVMeBdevQueueFull fills the queue pair with split pieces, so that
// pieces and a whole read wait for room and go out from Poll, in order.
func TestNVMeBdevQueueFull(t *testing.T) {
	c, closeAll := newMockNVMe(t, memoryMDTS1)
	defer closeAll()
	b, err := bdev.NewNVMe("mock0n1", c, c.Namespaces()[0])
	if err != nil {
		t.Fatal(err)
	}
	d, _ := bdev.Open(b, true)
	defer d.Close()
	// Depth 2: a pool of 3, and a queue pair for 3 + 4 pieces.
	ch, err := d.NewChannel(2)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 10 // 8 pieces of 8 KiB
	wbuf, _ := d.AllocBuffer(size)
	for i := range wbuf.Bytes {
		wbuf.Bytes[i] = byte(i*7 + i>>9)
	}
	var got completions
	cb := got.cb
	if err := ch.Write(&wbuf, 0, size/512, cb, nil); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, ch, &got.n, 1)
	var r [3]bdev.Buffer
	for i := range r {
		r[i], _ = d.AllocBuffer(size)
	}
	// Two split reads want 8 pieces in flight; the queue pair takes 7.
	if err := ch.Read(&r[0], 0, size/512, cb, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Read(&r[1], 0, size/512, cb, nil); err != nil {
		t.Fatal(err)
	}
	// A whole read waits behind the piece that found no room.
	if err := ch.Read(&r[2], 16, 16, cb, nil); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, ch, &got.n, 4)
	if got.err != nil {
		t.Fatal(got.err)
	}
	if !bytes.Equal(r[0].Bytes, wbuf.Bytes) || !bytes.Equal(r[1].Bytes, wbuf.Bytes) || !bytes.Equal(r[2].Bytes[:16*512], wbuf.Bytes[16*512:32*512]) {
		t.Fatal("read back differs")
	}
	if n := ch.Outstanding(); n != 0 {
		t.Fatalf("%d I/Os outstanding", n)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	d.FreeBuffer(wbuf)
	for _, x := range r {
		d.FreeBuffer(x)
	}
}

// taggedResubmit is rawResubmit through a bdev channel's ReadTagged: the
// tag is the slot, as on the raw side.
type taggedResubmit struct {
	ch      *bdev.Channel
	bufs    []bdev.Buffer
	lba     uint64
	done    int
	stop    bool
	started bool
	close   func()
}

func newTaggedResubmit(b *testing.B, qd int, second bool) *taggedResubmit {
	ch, buf, closeCh := newNullChannel(b, qd, second)
	r := &taggedResubmit{ch: ch, bufs: make([]bdev.Buffer, qd)}
	for i := range r.bufs {
		r.bufs[i] = buf.Slice(i*4096, 4096)
	}
	r.close = func() {
		r.stop = true
		closeCh()
	}
	return r
}

// run polls until n more reads completed.
func (r *taggedResubmit) run(n int) {
	if !r.started {
		r.started = true
		for i := range r.bufs {
			r.submit(uint64(i))
		}
	}
	for end := r.done + n; r.done < end; {
		r.ch.Poll()
	}
}

func (r *taggedResubmit) submit(slot uint64) {
	r.lba = r.lba*6364136223846793005 + 1442695040888963407
	if err := r.ch.ReadTagged(&r.bufs[slot], (r.lba>>20)&(1<<28-1)*8, 8, r, slot); err != nil {
		panic(err)
	}
}

func (r *taggedResubmit) Complete(tag, _ uint64, err error) {
	r.done++
	if !r.stop {
		r.submit(tag)
	}
}
