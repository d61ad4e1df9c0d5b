//go:build linux

package uring_test

import (
	"bytes"
	"fmt"
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
