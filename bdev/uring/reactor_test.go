//go:build linux

package uring_test

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/uring"
	"github.com/bpfblk/bpfblk/poller"
)

// TestOnReactor: the channels of a poller reactor share a ring bound to
// the reactor's thread (DEFER_TASKRUN where the kernel has it), whose
// completions its polls fetch: reads of two devices complete with their
// data, and a read and its completion allocate nothing. Channels closed
// after the reactor has ended, off its thread, close without error.
func TestOnReactor(t *testing.T) {
	a := openShared(t, "ua", 0x00, 4)
	b := openShared(t, "ub", 0x5a, 4)
	g, err := poller.Start(poller.Config{Cores: "0", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			g.Stop()
		}
	}()
	r := g.Reactors()[0]
	var chA, chB *bdev.Channel
	if err := r.Call(func() error {
		var err error
		if chA, err = a.desc.NewChannelOn(r, 8); err != nil {
			return err
		}
		chB, err = b.desc.NewChannelOn(r, 8)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("deferred task run: %v", uring.Deferred(r))
	var allocs float64
	if err := r.Call(func() error {
		// t.Fatal may not run here, off the test's goroutine.
		for lba := uint64(0); lba < 64; lba += 32 {
			if err := readBoth(a, b, chA, chB, lba); err != nil {
				return err
			}
		}
		var c counter
		lba := uint64(0)
		allocs = testing.AllocsPerRun(200, func() {
			chA.ReadTagged(&a.bufs[0], lba, 8, &c, 0)
			chB.ReadTagged(&b.bufs[0], lba, 8, &c, 0)
			lba = (lba + 8) % 2048
			for n := c.n + 2; c.n < n; {
				chA.Poll()
				chB.Poll()
			}
		})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Fatalf("%.1f allocations per pair of reads on a reactor", allocs)
	}
	base := uring.Rings()
	g.Stop()
	stopped = true
	if err := chA.Close(); err != nil {
		t.Fatalf("first channel closed after its reactor ended: %v", err)
	}
	if err := chB.Close(); err != nil {
		t.Fatalf("last channel closed after its reactor ended: %v", err)
	}
	if n := uring.Rings(); n != base-1 {
		t.Fatalf("%d rings open after the last channel closed, want %d", n, base-1)
	}
}

// readBoth reads a's and b's buffers' worth at lba on chA and chB,
// polling only chA, and checks the data.
func readBoth(a, b *sharedDev, chA, chB *bdev.Channel, lba uint64) error {
	var r result
	want := 0
	for k, d := range []*sharedDev{a, b} {
		ch := []*bdev.Channel{chA, chB}[k]
		for i := range d.bufs {
			clear(d.bufs[i].Bytes)
			if err := ch.ReadTagged(&d.bufs[i], lba+uint64(i*8), 8, &r, 0); err != nil {
				return err
			}
			want++
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; r.n < want; i++ {
		chA.Poll()
		if i%4096 == 0 && time.Now().After(deadline) {
			return fmt.Errorf("%d of %d reads completed in 30 s", r.n, want)
		}
	}
	if r.err != nil {
		return r.err
	}
	for k, d := range []*sharedDev{a, b} {
		for i, buf := range d.bufs {
			off := (int(lba) + i*8) * 512
			if !bytes.Equal(buf.Bytes, d.data[off:off+4096]) {
				return fmt.Errorf("device %d, read %d: wrong data", k, i)
			}
		}
	}
	return nil
}

// wakeCounter counts completions for a goroutine that is not the
// reactor's.
type wakeCounter struct {
	n   atomic.Int64
	err atomic.Pointer[error]
}

func (c *wakeCounter) Complete(_, _ uint64, err error) {
	if err != nil {
		c.err.CompareAndSwap(nil, &err)
	}
	c.n.Add(1)
}

// TestReactorWakesOnCompletion: a reactor that parks for an hour, with a
// read through its ring in flight, wakes when the read completes: the
// ring signals an eventfd in the reactor's wait set (on a DEFER_TASKRUN
// ring, when the completion waits for the reactor to enter the kernel).
// Without it every read here would wait out the park.
func TestReactorWakesOnCompletion(t *testing.T) {
	a := openShared(t, "uw", 0x11, 1)
	if d, ok := uring.Lookup(a.desc.Bdev()); !ok || d.Inline {
		t.Skipf("%s keeps its data in memory: reads are done inline by the reactor, with nothing to wait for", t.TempDir())
	}
	g, err := poller.Start(poller.Config{Cores: "0", NoPin: true, Idle: poller.IdleStrategy{Spin: 1, Park: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	r := g.Reactors()[0]
	var ch *bdev.Channel
	var p *poller.Poller
	if err := r.Call(func() error {
		var err error
		if ch, err = a.desc.NewChannelOn(r, 8); err != nil {
			return err
		}
		p, err = r.Register("uring", func() poller.Status {
			if ch.Poll() > 0 {
				return poller.Busy
			}
			return poller.Idle
		}, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer r.Call(func() error {
		p.Unregister()
		return ch.Close()
	})
	var c wakeCounter
	const reads = 20
	for i := range int64(reads) {
		lba := uint64(i * 8)
		if err := r.Send(func() {
			if err := ch.ReadTagged(&a.bufs[0], lba, 8, &c, 0); err != nil {
				c.Complete(0, 0, err)
			}
		}); err != nil {
			t.Fatal(err)
		}
		// Generous for a loaded machine under -race; the park is an hour.
		deadline := time.Now().Add(10 * time.Second)
		for c.n.Load() <= i {
			if time.Now().After(deadline) {
				t.Fatalf("read %d not completed in 10 s: the reactor parked with it in flight and was not woken", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		if e := c.err.Load(); e != nil {
			t.Fatal(*e)
		}
		if !bytes.Equal(a.bufs[0].Bytes, a.data[lba*512:lba*512+4096]) {
			t.Fatalf("read %d: wrong data", i)
		}
	}
	s, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("deferred task run %v: %d reads, %d parks in the wait set", uring.Deferred(r), reads, s.WaitParks)
	if s.WaitParks == 0 {
		t.Fatal("the reactor never parked in its wait set")
	}
}
