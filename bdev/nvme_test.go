package bdev_test

import (
	"bytes"
	"testing"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

func newMockNVMe(t testing.TB, cfg mock.Config) (*nvme.Controller, func()) {
	t.Helper()
	mc, err := mock.NewController(mock.NewBus(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvme.NewController(mc, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c, func() { c.Close(); mc.Close() }
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
	c, closeAll := newMockNVMe(t, mock.Config{MDTS: 1, Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 8 << 20, LBASize: 512}}})
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
	done := 0
	var firstErr error
	cb := func(io *bdev.IO) {
		done++
		if io.Err() != nil && firstErr == nil {
			firstErr = io.Err()
		}
	}
	step := func(f func() error) {
		t.Helper()
		want := done + 1
		if err := f(); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, ch, &done, want)
		if firstErr != nil {
			t.Fatal(firstErr)
		}
	}
	step(func() error { return ch.Write(wbuf, 1000, 128, cb, nil) })
	step(func() error { return ch.Read(rbuf, 1000, 128, cb, nil) })
	if !bytes.Equal(rbuf.Bytes, wbuf.Bytes) {
		t.Fatal("read back differs")
	}
	step(func() error { return ch.Copy(5000, 1000, 16, cb, nil) })
	step(func() error { return ch.WriteZeroes(1001, 1, cb, nil) })
	step(func() error { return ch.Unmap(1002, 1, cb, nil) })
	step(func() error { return ch.Flush(cb, nil) })
	clear(rbuf.Bytes)
	step(func() error { return ch.Read(rbuf, 1000, 3, cb, nil) })
	if !bytes.Equal(rbuf.Bytes[:512], wbuf.Bytes[:512]) || !bytes.Equal(rbuf.Bytes[512:1536], make([]byte, 1024)) {
		t.Fatal("write zeroes / unmap left data behind")
	}
	step(func() error { return ch.Read(rbuf, 5000, 16, cb, nil) })
	if !bytes.Equal(rbuf.Bytes[:8192], wbuf.Bytes[:8192]) {
		t.Fatal("copy target differs")
	}
	// Plain memory is refused for an NVMe bdev, with a completion error.
	plain := bdev.Buffer{Bytes: make([]byte, 512)}
	if err := ch.Read(plain, 0, 1, cb, nil); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, ch, &done, done+1)
	if firstErr == nil {
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
func BenchmarkNullQD128(b *testing.B) { benchNull(b, 128) }

// BenchmarkNullQD32 is BenchmarkNullQD128 at queue depth 32.
func BenchmarkNullQD32(b *testing.B) { benchNull(b, 32) }

func benchNull(b *testing.B, qd int) {
	cfg := mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Null, Size: 1 << 40, LBASize: 512}}}
	b.Run("queuepair", func(b *testing.B) {
		c, closeAll := newMockNVMe(b, cfg)
		defer closeAll()
		qp, err := c.NewQueuePair(qd + 1)
		if err != nil {
			b.Fatal(err)
		}
		buf, _ := c.Transport().AllocDMA(qd * 4096)
		ns := c.Namespaces()[0]
		r := &rawResubmit{qp: qp, ns: ns, buf: buf}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < qd; i++ {
			r.submit(uint64(i))
		}
		for r.done < b.N {
			qp.Process(0)
		}
		b.StopTimer()
		r.stop = true
		qp.Drain(0)
		qp.Close()
	})
	b.Run("bdev", func(b *testing.B) {
		c, closeAll := newMockNVMe(b, cfg)
		defer closeAll()
		bd, _ := bdev.NewNVMe("n1", c, c.Namespaces()[0])
		d, _ := bdev.Open(bd, false)
		ch, err := d.NewChannel(qd)
		if err != nil {
			b.Fatal(err)
		}
		r := &bdevResubmit{ch: ch}
		for i := 0; i < qd; i++ {
			buf, _ := d.AllocBuffer(4096)
			r.bufs = append(r.bufs, buf)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < qd; i++ {
			r.submit(i)
		}
		for r.done < b.N {
			ch.Poll()
		}
		b.StopTimer()
		r.stop = true
		for ch.Outstanding() > 0 {
			ch.Poll()
		}
		ch.Close()
	})
}

type rawResubmit struct {
	qp   *nvme.QueuePair
	ns   *nvme.Namespace
	buf  *nvme.DMA
	lba  uint64
	done int
	stop bool
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

type bdevResubmit struct {
	ch    *bdev.Channel
	bufs  []bdev.Buffer
	slots [128]bdevSlot
	lba   uint64
	done  int
	stop  bool
}

type bdevSlot struct {
	r *bdevResubmit
	i int
}

func (r *bdevResubmit) submit(i int) {
	r.lba = r.lba*6364136223846793005 + 1442695040888963407
	r.slots[i] = bdevSlot{r: r, i: i}
	if err := r.ch.Read(r.bufs[i], (r.lba>>20)&(1<<28-1)*8, 8, bdevDone, &r.slots[i]); err != nil {
		panic(err)
	}
}

func bdevDone(io *bdev.IO) {
	s := io.Arg.(*bdevSlot)
	s.r.done++
	if !s.r.stop {
		s.r.submit(s.i)
	}
}
