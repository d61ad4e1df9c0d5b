package bdev

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func mustOpen(t testing.TB, b *Bdev, write bool) *Desc {
	t.Helper()
	d, err := Open(b, write)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// run submits through f and polls until the callback ran, returning the
// I/O's error.
func run(t *testing.T, ch *Channel, f func(cb func(*IO), arg any) error) error {
	t.Helper()
	var got error
	done := false
	cb := func(io *IO) { got, done = io.Err(), true }
	if err := f(cb, nil); err != nil {
		return err
	}
	if done {
		t.Fatal("callback ran inside submit")
	}
	for i := 0; !done; i++ {
		ch.Poll()
		if i > 1000 {
			t.Fatal("I/O never completed")
		}
	}
	return got
}

func TestMallocReadWrite(t *testing.T) {
	b, err := NewMalloc("malloc0", 512, 1024)
	if err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, b, true)
	ch, err := d.NewChannel(8)
	if err != nil {
		t.Fatal(err)
	}
	wbuf, _ := d.AllocBuffer(4096)
	rbuf, _ := d.AllocBuffer(4096)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range wbuf.Bytes {
		wbuf.Bytes[i] = byte(rng.Uint32())
	}
	if err := run(t, ch, func(cb func(*IO), a any) error { return ch.Write(&wbuf, 100, 8, cb, a) }); err != nil {
		t.Fatal(err)
	}
	if err := run(t, ch, func(cb func(*IO), a any) error { return ch.Read(&rbuf, 100, 8, cb, a) }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wbuf.Bytes, rbuf.Bytes) {
		t.Fatal("read back differs from what was written")
	}
	if err := run(t, ch, func(cb func(*IO), a any) error { return ch.Copy(500, 100, 8, cb, a) }); err != nil {
		t.Fatal(err)
	}
	clear(rbuf.Bytes)
	run(t, ch, func(cb func(*IO), a any) error { return ch.Read(&rbuf, 500, 8, cb, a) })
	if !bytes.Equal(wbuf.Bytes, rbuf.Bytes) {
		t.Fatal("copy target differs from the source")
	}
	if err := run(t, ch, func(cb func(*IO), a any) error { return ch.WriteZeroes(102, 2, cb, a) }); err != nil {
		t.Fatal(err)
	}
	run(t, ch, func(cb func(*IO), a any) error { return ch.Read(&rbuf, 100, 8, cb, a) })
	if !bytes.Equal(rbuf.Bytes[:1024], wbuf.Bytes[:1024]) || !bytes.Equal(rbuf.Bytes[1024:2048], make([]byte, 1024)) || !bytes.Equal(rbuf.Bytes[2048:], wbuf.Bytes[2048:]) {
		t.Fatal("write zeroes touched the wrong blocks")
	}
	if err := run(t, ch, func(cb func(*IO), a any) error { return ch.Flush(cb, a) }); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(cb func(*IO), a any) error{
		func(cb func(*IO), a any) error { return ch.Read(&rbuf, 1020, 8, cb, a) },
		func(cb func(*IO), a any) error { return ch.Read(&rbuf, 0, 0, cb, a) },
		func(cb func(*IO), a any) error { return ch.Read(&rbuf, 0, 9, cb, a) }, // buffer too small
		func(cb func(*IO), a any) error { return ch.Copy(0, 1023, 2, cb, a) },
	} {
		if err := bad(func(*IO) { t.Error("callback of a refused I/O ran") }, nil); err == nil {
			t.Error("bad I/O accepted")
		}
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err == nil {
		t.Fatal("closed a bdev with an open descriptor")
	}
	d.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDescriptorsAndClaims(t *testing.T) {
	b, _ := NewNull("null0", 4096, 1<<20)
	ro := mustOpen(t, b, false)
	ch, _ := ro.NewChannel(1)
	buf, _ := ro.AllocBuffer(4096)
	if err := ch.Write(&buf, 0, 1, nil, nil); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write through a read-only descriptor: %v", err)
	}
	if err := ch.Copy(0, 1, 1, nil, nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("copy on null: %v", err)
	}
	vb := mustOpen(t, b, false)
	if err := vb.Claim("compute"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(b, true); !errors.Is(err, ErrClaimed) {
		t.Fatalf("open for writing a claimed bdev: %v", err)
	}
	other := mustOpen(t, b, false)
	if err := other.Claim("raid"); !errors.Is(err, ErrClaimed) {
		t.Fatalf("second claim: %v", err)
	}
	vb.Close()
	w := mustOpen(t, b, true)
	w.Close()
	other.Close()
	ro.Close()
}

// testBackend accepts up to room I/Os in flight (then ErrBusy), fails I/Os
// that touch failLBA, and records the size of everything submitted.
type testBackend struct {
	room    int
	failLBA uint64
	sizes   []uint64
}

type testChannel struct {
	b      *testBackend
	flight []*IO
}

func (b *testBackend) NewChannel(int) (BackendChannel, error) { return &testChannel{b: b}, nil }
func (b *testBackend) AllocBuffer(n int) (Buffer, error)      { return Buffer{Bytes: make([]byte, n)}, nil }
func (b *testBackend) FreeBuffer(Buffer) error                { return nil }
func (b *testBackend) Close() error                           { return nil }

func (c *testChannel) Submit(io *IO) error {
	if len(c.flight) >= c.b.room {
		return ErrBusy
	}
	c.b.sizes = append(c.b.sizes, io.Count)
	c.flight = append(c.flight, io)
	return nil
}

var errMedia = errors.New("unrecovered read error")

func (c *testChannel) Poll() int {
	n := len(c.flight)
	f := c.flight
	c.flight = nil
	for _, io := range f {
		var err error
		if io.LBA <= c.b.failLBA && c.b.failLBA < io.LBA+io.Count {
			err = errMedia
		}
		io.Done(err)
	}
	return n
}
func (c *testChannel) Close() error { return nil }

func TestSplitAndRetry(t *testing.T) {
	tb := &testBackend{room: 3, failLBA: 1 << 62}
	b, err := New(Info{Name: "t0", BlockSize: 512, NumBlocks: 4096, MaxTransfer: 8 * 512}, tb)
	if err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, b, true)
	ch, _ := d.NewChannel(2)
	buf, _ := d.AllocBuffer(100 * 512)
	// 100 blocks split into 8-block children, only 3 in flight at a time.
	if err := run(t, ch, func(cb func(*IO), a any) error { return ch.Read(&buf, 10, 100, cb, a) }); err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, s := range tb.sizes {
		if s > 8 {
			t.Fatalf("child of %d blocks exceeds the 8-block limit", s)
		}
		total += s
	}
	if total != 100 || len(tb.sizes) != 13 {
		t.Fatalf("children cover %d blocks in %d I/Os, want 100 in 13", total, len(tb.sizes))
	}
	if ch.Outstanding() != 0 {
		t.Fatalf("%d I/Os outstanding after completion", ch.Outstanding())
	}
	// A failing child fails the parent, once.
	tb.failLBA = 50
	calls := 0
	var got error
	if err := ch.Read(&buf, 10, 100, func(io *IO) { calls++; got = io.Err() }, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && ch.Outstanding() > 0; i++ {
		ch.Poll()
	}
	if calls != 1 || !errors.Is(got, errMedia) {
		t.Fatalf("callback ran %d times with %v", calls, got)
	}
	// Pool exhaustion is back-pressure, at the channel's depth (and the
	// one object a callback may hold) whatever the backend could take.
	tb.failLBA = 1 << 62
	tb.room = 100
	for i := 0; ; i++ {
		err := ch.Write(&buf, 0, 1, nil, nil)
		if errors.Is(err, ErrNoIO) {
			if i != 3 {
				t.Fatalf("pool ran out after %d I/Os, want 3", i)
			}
			break
		}
		if err != nil || i > 100 {
			t.Fatal(err)
		}
	}
	for ch.Outstanding() > 0 {
		ch.Poll()
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkNullChannel(b *testing.B) {
	bd, _ := NewNull("null0", 4096, 1<<20)
	d := mustOpen(b, bd, true)
	ch, _ := d.NewChannel(128)
	buf, _ := d.AllocBuffer(4096)
	cb := func(*IO) {}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := ch.Read(&buf, uint64(i)&0xffff, 1, cb, nil); err != nil {
			b.Fatal(err)
		}
		ch.Poll()
	}
}

func TestChannelDoesNotAllocate(t *testing.T) {
	bd, _ := NewMalloc("m", 512, 64)
	d := mustOpen(t, bd, true)
	ch, _ := d.NewChannel(4)
	buf, _ := d.AllocBuffer(512)
	cb := func(*IO) {}
	if n := testing.AllocsPerRun(1000, func() {
		ch.Write(&buf, 3, 1, cb, buf.DMA)
		ch.Poll()
	}); n != 0 {
		t.Fatalf("submit+poll allocates %v times", n)
	}
}
