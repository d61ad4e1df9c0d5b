package bdev_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// tagLog is a Completer that records every completion by tag.
type tagLog struct {
	n    int
	seen map[uint64]int // completions per tag
	errs map[uint64]error
	// next, if set, runs inside Complete (to submit from a completion).
	next func(tag uint64)
}

func newTagLog() *tagLog {
	return &tagLog{seen: map[uint64]int{}, errs: map[uint64]error{}}
}

func (l *tagLog) Complete(tag, _ uint64, err error) {
	l.n++
	l.seen[tag]++
	if err != nil {
		l.errs[tag] = err
	}
	if l.next != nil {
		l.next(tag)
	}
}

// newTaggedBdev makes a read-write descriptor of a bdev of memoryMDTS1.
func newTaggedBdev(t *testing.T) (*mock.Controller, *bdev.Bdev, *bdev.Desc) {
	mc, c, closeAll := newMockDevice(t, memoryMDTS1)
	b, err := bdev.NewNVMe("mock0n1", c, c.Namespaces()[0])
	if err != nil {
		closeAll()
		t.Fatal(err)
	}
	d, err := bdev.Open(b, true)
	if err != nil {
		closeAll()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); closeAll() })
	return mc, b, d
}

// TestTaggedNVMe covers ReadTagged and WriteTagged on an NVMe bdev: data
// and tags round trip, bad requests are refused before they are queued, a
// device error and a plain-memory buffer reach the Completer with their
// tags, a split I/O completes once, and Close waits for tagged I/Os and completes
// them.
func TestTaggedNVMe(t *testing.T) {
	mc, b, d := newTaggedBdev(t)
	ch, err := d.NewChannel(4)
	if err != nil {
		t.Fatal(err)
	}
	wbuf, _ := d.AllocBuffer(64 << 10)
	rbuf, _ := d.AllocBuffer(64 << 10)
	defer d.FreeBuffer(wbuf)
	defer d.FreeBuffer(rbuf)
	for i := range wbuf.Bytes {
		wbuf.Bytes[i] = byte(i*11 + i>>9)
	}
	l := newTagLog()
	wait := func(n int) {
		t.Helper()
		pollUntil(t, ch, &l.n, n)
	}

	// One command each way.
	w := wbuf.Slice(0, 8192)
	if err := ch.WriteTagged(&w, 100, 16, l, 1<<63|1); err != nil {
		t.Fatal(err)
	}
	if l.n != 0 {
		t.Fatal("Completer ran inside WriteTagged")
	}
	if n := ch.Outstanding(); n != 1 {
		t.Fatalf("a tagged write in flight: Outstanding %d, want 1", n)
	}
	wait(1)
	r := rbuf.Slice(0, 8192)
	if err := ch.ReadTagged(&r, 100, 16, l, 2); err != nil {
		t.Fatal(err)
	}
	wait(2)
	if l.seen[1<<63|1] != 1 || l.seen[2] != 1 || len(l.errs) != 0 {
		t.Fatalf("completions by tag %v, errors %v", l.seen, l.errs)
	}
	if !bytes.Equal(rbuf.Bytes[:8192], wbuf.Bytes[:8192]) {
		t.Fatal("tagged read back differs from tagged write")
	}

	// Refused at once: no completion, nothing outstanding. (The queue pair
	// refuses the last one; the channel passes the error on.)
	outside := bdev.Buffer{Bytes: make([]byte, 512), DMA: wbuf.DMA, Off: len(wbuf.DMA.Buf)}
	for _, bad := range []struct {
		name string
		f    func() error
		want error
	}{
		{"nil buffer", func() error { return ch.ReadTagged(nil, 0, 1, l, 9) }, nil},
		{"zero blocks", func() error { return ch.ReadTagged(&rbuf, 0, 0, l, 9) }, bdev.ErrOutOfRange},
		{"past the end", func() error { return ch.WriteTagged(&wbuf, 16383, 2, l, 9) }, bdev.ErrOutOfRange},
		{"LBA wraps", func() error { return ch.ReadTagged(&rbuf, 1<<64-1, 2, l, 9) }, bdev.ErrOutOfRange},
		{"buffer too small", func() error { return ch.ReadTagged(&r, 0, 17, l, 9) }, nil},
		{"Off past its DMA memory", func() error { return ch.ReadTagged(&outside, 0, 1, l, 9) }, nil},
	} {
		if err := bad.f(); err == nil || (bad.want != nil && !errors.Is(err, bad.want)) {
			t.Errorf("%s: %v", bad.name, err)
		}
	}
	if l.n != 2 || ch.Outstanding() != 0 {
		t.Fatalf("refused I/Os: %d completions, %d outstanding", l.n-2, ch.Outstanding())
	}

	// A device error reaches the Completer with its tag.
	mc.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, LBA: 7, Blocks: 1, Status: nvme.ErrUnrecoveredRead, Count: 1})
	if err := ch.ReadTagged(&r, 0, 8, l, 3); err != nil {
		t.Fatal(err)
	}
	wait(3)
	if !errors.Is(l.errs[3], nvme.ErrUnrecoveredRead) {
		t.Fatalf("read over a bad block: %v", l.errs[3])
	}

	// Plain memory fails from Poll, as Read does.
	plain := bdev.Buffer{Bytes: make([]byte, 512)}
	if err := ch.ReadTagged(&plain, 0, 1, l, 4); err != nil {
		t.Fatal(err)
	}
	if l.n != 3 {
		t.Fatal("Completer ran inside ReadTagged")
	}
	wait(4)
	if l.errs[4] == nil {
		t.Fatal("plain-memory buffer accepted by an NVMe bdev")
	}

	// 128 blocks at 16 per command: split, 4 pieces in flight, one
	// completion.
	clear(rbuf.Bytes)
	if err := ch.WriteTagged(&wbuf, 2000, 128, l, 5); err != nil {
		t.Fatal(err)
	}
	if n := ch.Outstanding(); n != 4 {
		t.Errorf("a split tagged write has %d I/Os outstanding, want its 4 pieces", n)
	}
	wait(5)
	if err := ch.ReadTagged(&rbuf, 2000, 128, l, 6); err != nil {
		t.Fatal(err)
	}
	wait(6)
	if l.seen[5] != 1 || l.seen[6] != 1 || l.errs[5] != nil || l.errs[6] != nil {
		t.Fatalf("split I/Os: completions %v, errors %v", l.seen, l.errs)
	}
	if !bytes.Equal(rbuf.Bytes, wbuf.Bytes) {
		t.Fatal("split tagged read back differs")
	}
	// The types without data, tagged: they go through IOs.
	if err := ch.WriteTagged(&w, 4000, 16, l, 10); err != nil {
		t.Fatal(err)
	}
	wait(7)
	// The copy first: NVMe does not order commands in flight.
	if err := ch.CopyTagged(6000, 4000, 16, l, 11); err != nil {
		t.Fatal(err)
	}
	wait(8)
	for _, f := range []func() error{
		func() error { return ch.WriteZeroesTagged(4001, 1, l, 12) },
		func() error { return ch.UnmapTagged(4002, 1, l, 13) },
		func() error { return ch.FlushTagged(l, 14) },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	wait(11)
	if err := ch.CopyTagged(6000, 16383, 2, l, 15); !errors.Is(err, bdev.ErrOutOfRange) {
		t.Fatalf("tagged copy from past the end: %v", err)
	}
	for tag := uint64(10); tag <= 14; tag++ {
		if l.seen[tag] != 1 || l.errs[tag] != nil {
			t.Fatalf("I/O %d: %d completions, error %v", tag, l.seen[tag], l.errs[tag])
		}
	}
	clear(rbuf.Bytes)
	if err := ch.ReadTagged(&r, 4000, 16, l, 16); err != nil {
		t.Fatal(err)
	}
	wait(12)
	if !bytes.Equal(rbuf.Bytes[:512], wbuf.Bytes[:512]) || !bytes.Equal(rbuf.Bytes[512:1536], make([]byte, 1024)) || !bytes.Equal(rbuf.Bytes[1536:8192], wbuf.Bytes[1536:8192]) {
		t.Fatal("tagged write zeroes / unmap: wrong data")
	}
	if err := ch.ReadTagged(&r, 6000, 16, l, 17); err != nil {
		t.Fatal(err)
	}
	wait(13)
	if !bytes.Equal(rbuf.Bytes[:8192], wbuf.Bytes[:8192]) {
		t.Fatal("tagged copy: target differs from the source as written")
	}

	// The IOs that carried tagged I/Os serve callback I/Os after them.
	var got completions
	if err := ch.Flush(got.cb, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.WriteZeroes(3000, 1, got.cb, nil); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, ch, &got.n, 2)
	if got.err != nil || l.n != 13 {
		t.Fatalf("callback I/Os after tagged ones: %v, %d tagged completions, want 13", got.err, l.n)
	}
	// Close waits for tagged I/Os, the fast path's and a split one, and
	// their Completers run from it.
	if err := ch.ReadTagged(&r, 4000, 16, l, 18); err != nil {
		t.Fatal(err)
	}
	if err := ch.ReadTagged(&rbuf, 2000, 128, l, 19); err != nil {
		t.Fatal(err)
	}
	if n := ch.Outstanding(); n != 5 {
		t.Errorf("a tagged read and a split one: Outstanding %d, want 5", n)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if l.n != 15 || l.seen[18] != 1 || l.seen[19] != 1 || l.errs[18] != nil || l.errs[19] != nil {
		t.Fatalf("Close with tagged I/Os in flight: %d completions, errors %v", l.n, l.errs)
	}
	if !bytes.Equal(rbuf.Bytes, wbuf.Bytes) {
		t.Fatal("split tagged read completed by Close: data differs")
	}
	if err := ch.ReadTagged(&r, 0, 1, l, 7); !errors.Is(err, bdev.ErrClosed) {
		t.Fatalf("tagged read on a closed channel: %v", err)
	}

	// Read-only descriptors refuse tagged writes.
	ro, _ := bdev.Open(b, false)
	defer ro.Close()
	roCh, err := ro.NewChannel(1)
	if err != nil {
		t.Fatal(err)
	}
	defer roCh.Close()
	if err := roCh.WriteTagged(&w, 0, 1, l, 8); !errors.Is(err, bdev.ErrReadOnly) {
		t.Fatalf("tagged write on a read-only descriptor: %v", err)
	}
}

// TestTaggedQueueFull submits far more tagged reads than the queue pair
// holds, from the test and from the Completer: past the queue pair they
// are refused with ErrNoIO, and every accepted one completes exactly
// once, with its data. A split read's pieces that find the queue full
// wait in the retry queue, and tagged reads submitted meanwhile queue
// behind them.
func TestTaggedQueueFull(t *testing.T) {
	_, _, d := newTaggedBdev(t)
	const depth = 2
	ch, err := d.NewChannel(depth)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	wbuf, _ := d.AllocBuffer(64 << 10)
	defer d.FreeBuffer(wbuf)
	for i := range wbuf.Bytes {
		wbuf.Bytes[i] = byte(i*5 + i>>9)
	}
	l := newTagLog()
	if err := ch.WriteTagged(&wbuf, 0, 128, l, 1000); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, ch, &l.n, 1)

	// 64 buffers of one block each, read block i into buffer i.
	const n = 64
	rbuf, _ := d.AllocBuffer(n * 512)
	defer d.FreeBuffer(rbuf)
	bufs := make([]bdev.Buffer, n)
	for i := range bufs {
		bufs[i] = rbuf.Slice(i*512, 512)
	}
	accepted, noIO := 0, 0
	next := 0
	submit := func() {
		for next < n {
			err := ch.ReadTagged(&bufs[next], uint64(next), 1, l, uint64(next))
			if errors.Is(err, bdev.ErrNoIO) {
				noIO++
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			accepted++
			next++
		}
	}
	l.next = func(uint64) { submit() }
	submit()
	// The queue pair holds depth+1+4 commands: the pool plus a split
	// I/O's window.
	if accepted != depth+1+4 {
		t.Errorf("%d tagged reads accepted before ErrNoIO, want %d", accepted, depth+1+4)
	}
	if o := ch.Outstanding(); o != accepted {
		t.Errorf("Outstanding %d, want %d", o, accepted)
	}
	for i := 0; next < n || ch.Outstanding() > 0; i++ {
		ch.Poll()
		submit()
		if i > 100000 {
			t.Fatalf("%d of %d reads completed", l.n-1, n)
		}
	}
	if noIO == 0 {
		t.Error("the pool never ran out")
	}
	for i := 0; i < n; i++ {
		if l.seen[uint64(i)] != 1 || l.errs[uint64(i)] != nil {
			t.Fatalf("read %d: %d completions, error %v", i, l.seen[uint64(i)], l.errs[uint64(i)])
		}
	}
	if !bytes.Equal(rbuf.Bytes, wbuf.Bytes[:n*512]) {
		t.Fatal("tagged reads read back wrong data")
	}

	// Two split reads want 8 pieces in flight, the queue pair takes 7: a
	// piece waits for a retry, and a whole tagged read waits behind it.
	l.next = nil
	var big [2]bdev.Buffer
	for i := range big {
		big[i], _ = d.AllocBuffer(64 << 10)
		defer d.FreeBuffer(big[i])
		if err := ch.ReadTagged(&big[i], 0, 128, l, uint64(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	clear(bufs[0].Bytes)
	if err := ch.ReadTagged(&bufs[0], 16, 1, l, 102); err != nil {
		t.Fatal(err)
	}
	if o := ch.Outstanding(); o != 8+1 {
		t.Errorf("Outstanding %d, want 8 pieces and a read", o)
	}
	// The pool (depth+1 = 3) is empty: two split parents and the read.
	if err := ch.ReadTagged(&bufs[1], 0, 1, l, 103); !errors.Is(err, bdev.ErrNoIO) {
		t.Errorf("a fourth read with the pool empty: %v, want ErrNoIO", err)
	}
	pollUntil(t, ch, &l.n, 1+n+3)
	for _, tag := range []uint64{100, 101, 102} {
		if l.seen[tag] != 1 || l.errs[tag] != nil {
			t.Fatalf("read %d: %d completions, error %v", tag, l.seen[tag], l.errs[tag])
		}
	}
	if !bytes.Equal(big[0].Bytes, wbuf.Bytes) || !bytes.Equal(big[1].Bytes, wbuf.Bytes) || !bytes.Equal(bufs[0].Bytes, wbuf.Bytes[16*512:17*512]) {
		t.Fatal("reads through the retry queue read back wrong data")
	}
	if o := ch.Outstanding(); o != 0 {
		t.Fatalf("Outstanding %d after all completed", o)
	}
}

// TestTaggedMalloc: other modules complete tagged I/Os through an IO, with
// the tag and a zero result.
func TestTaggedMalloc(t *testing.T) {
	b, err := bdev.NewMalloc("m", 512, 64)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := bdev.Open(b, true)
	defer d.Close()
	ch, err := d.NewChannel(2)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	w, _ := d.AllocBuffer(4 * 512)
	r, _ := d.AllocBuffer(4 * 512)
	for i := range w.Bytes {
		w.Bytes[i] = byte(i * 3)
	}
	l := newTagLog()
	if err := ch.WriteTagged(&w, 10, 4, l, 42); err != nil {
		t.Fatal(err)
	}
	if ch.Outstanding() != 1 {
		t.Fatalf("Outstanding %d, want 1", ch.Outstanding())
	}
	pollUntil(t, ch, &l.n, 1)
	if err := ch.ReadTagged(&r, 10, 4, l, 43); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, ch, &l.n, 2)
	if l.seen[42] != 1 || l.seen[43] != 1 || len(l.errs) != 0 || ch.Outstanding() != 0 {
		t.Fatalf("completions %v, errors %v, %d outstanding", l.seen, l.errs, ch.Outstanding())
	}
	if !bytes.Equal(r.Bytes, w.Bytes) {
		t.Fatal("read back differs")
	}
	if err := ch.ReadTagged(&r, 63, 2, l, 44); !errors.Is(err, bdev.ErrOutOfRange) {
		t.Fatalf("tagged read past the end: %v", err)
	}
}

// TestTaggedDoesNotAllocate: a tagged read and its completion allocate
// nothing, on the NVMe fast path and through an IO.
func TestTaggedDoesNotAllocate(t *testing.T) {
	_, _, d := newTaggedBdev(t)
	ch, err := d.NewChannel(4)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	buf, _ := d.AllocBuffer(64 << 10)
	defer d.FreeBuffer(buf)
	var c countCompleter
	for _, count := range []uint64{8, 128} { // one command; split
		if n := testing.AllocsPerRun(200, func() {
			if err := ch.ReadTagged(&buf, 0, count, &c, 1); err != nil {
				t.Fatal(err)
			}
			for ch.Outstanding() > 0 {
				ch.Poll()
			}
		}); n != 0 {
			t.Errorf("tagged read of %d blocks and its completion allocate %v times", count, n)
		}
	}
}

type countCompleter struct{ n int }

func (c *countCompleter) Complete(uint64, uint64, error) { c.n++ }

// TestCloseFromCompletion: the last I/O's completion may close the
// channel (it no longer counts as outstanding), in either form, and the
// channel refuses I/O afterwards.
func TestCloseFromCompletion(t *testing.T) {
	_, _, d := newTaggedBdev(t)
	buf, _ := d.AllocBuffer(4096)
	defer d.FreeBuffer(buf)
	for _, tagged := range []bool{true, false} {
		ch, err := d.NewChannel(4)
		if err != nil {
			t.Fatal(err)
		}
		done := 0
		var closeErr error
		l := newTagLog()
		l.next = func(uint64) { done, closeErr = done+1, ch.Close() }
		cb := func(*bdev.IO) { done, closeErr = done+1, ch.Close() }
		if tagged {
			err = ch.ReadTagged(&buf, 0, 8, l, 1)
		} else {
			err = ch.Read(&buf, 0, 8, cb, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		pollUntil(t, ch, &done, 1)
		if closeErr != nil {
			t.Fatalf("tagged %v: Close from the last completion: %v", tagged, closeErr)
		}
		if n := ch.Poll(); n != 0 {
			t.Fatalf("tagged %v: Poll after Close completed %d I/Os", tagged, n)
		}
		if err := ch.ReadTagged(&buf, 0, 8, l, 2); !errors.Is(err, bdev.ErrClosed) {
			t.Fatalf("tagged %v: ReadTagged after Close: %v", tagged, err)
		}
		if err := ch.Read(&buf, 0, 8, cb, nil); !errors.Is(err, bdev.ErrClosed) {
			t.Fatalf("tagged %v: Read after Close: %v", tagged, err)
		}
	}
}
