//go:build linux

package uring_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/uring"
)

// owner is a bdev.Owner for tests: the test's goroutine.
type owner struct{ _ byte }

func (*owner) OnReactor() bool { return true }

// sharedDev is a device of the shared-ring tests: its data, a read-write
// descriptor and a buffer per I/O.
type sharedDev struct {
	data []byte
	desc *bdev.Desc
	bufs []bdev.Buffer
}

func openShared(t *testing.T, name string, seed byte, n int) *sharedDev {
	t.Helper()
	data := pattern(1 << 20)
	for i := range data {
		data[i] ^= seed
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := uring.Open(name, uring.Config{Path: p})
	if err != nil {
		t.Fatal(err)
	}
	desc, err := bdev.Open(d.Bdev, true)
	if err != nil {
		d.Bdev.Close()
		t.Fatal(err)
	}
	s := &sharedDev{data: data, desc: desc}
	for range n {
		b, err := desc.AllocBuffer(4096)
		if err != nil {
			t.Fatal(err)
		}
		s.bufs = append(s.bufs, b)
	}
	t.Cleanup(func() {
		for _, b := range s.bufs {
			desc.FreeBuffer(b)
		}
		desc.Close()
		if err := d.Bdev.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// readAll starts a 4 KiB read per buffer of each device on its channel,
// polls only through poller until all have completed, and checks the
// data: completions reach their device whichever channel reaps the ring.
func readAll(t *testing.T, poller *bdev.Channel, devs []*sharedDev, chans []*bdev.Channel, lba uint64) {
	t.Helper()
	var r result
	want := 0
	for k, d := range devs {
		for i := range d.bufs {
			clear(d.bufs[i].Bytes)
			if err := chans[k].ReadTagged(&d.bufs[i], lba+uint64(i*8), 8, &r, 0); err != nil {
				t.Fatal(err)
			}
			want++
		}
	}
	wait(t, poller, &r, want)
	if r.err != nil {
		t.Fatal(r.err)
	}
	for k, d := range devs {
		for i, b := range d.bufs {
			off := (int(lba) + i*8) * 512
			if !bytes.Equal(b.Bytes, d.data[off:off+4096]) {
				t.Fatalf("device %d, read %d: wrong data", k, i)
			}
		}
	}
}

// TestSharedRing: the channels of one owner on two uring devices share
// one ring, which one io_uring_enter per poll serves for both; each
// device's I/Os complete with its own data whichever channel polls;
// closing one channel leaves the other working, and the ring goes with
// the last.
func TestSharedRing(t *testing.T) {
	base := uring.Rings()
	a := openShared(t, "ua", 0x00, 4)
	b := openShared(t, "ub", 0x5a, 4)
	o := new(owner)
	chA, err := a.desc.NewChannelOn(o, 8)
	if err != nil {
		t.Fatal(err)
	}
	chB, err := b.desc.NewChannelOn(o, 8)
	if err != nil {
		t.Fatal(err)
	}
	if got := uring.Rings(); got != base+1 {
		t.Fatalf("two devices on one owner hold %d rings, want 1", got-base)
	}
	// Another owner, and a channel without one, have rings of their own.
	other, err := a.desc.NewChannelOn(new(owner), 8)
	if err != nil {
		t.Fatal(err)
	}
	private, err := b.desc.NewChannel(8)
	if err != nil {
		t.Fatal(err)
	}
	if got := uring.Rings(); got != base+3 {
		t.Fatalf("%d rings, want 3", got-base)
	}
	for _, ch := range []*bdev.Channel{other, private} {
		if err := ch.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got := uring.Rings(); got != base+1 {
		t.Fatalf("%d rings after closing two, want 1", got-base)
	}

	var batches []uint32
	uring.SetOnSubmit(func(n uint32) { batches = append(batches, n) })
	defer uring.SetOnSubmit(nil)
	devs, chans := []*sharedDev{a, b}, []*bdev.Channel{chA, chB}
	readAll(t, chA, devs, chans, 0)
	if len(batches) == 0 || batches[0] != 8 {
		t.Fatalf("first poll submitted %v, want one batch of both devices' 8 reads", batches)
	}
	readAll(t, chB, devs, chans, 64)
	// Polled in turn, as a reactor polls its channels, the ring is
	// served once per round: whichever channel polled it last, the other
	// channel's next Poll skips it. With an I/O submitted before each
	// Poll, a round submits one batch, not one per channel.
	var r result
	for round := range 3 {
		batches = batches[:0]
		if err := chA.ReadTagged(&a.bufs[0], 8, 8, &r, 0); err != nil {
			t.Fatal(err)
		}
		chA.Poll()
		if err := chB.ReadTagged(&b.bufs[0], 8, 8, &r, 0); err != nil {
			t.Fatal(err)
		}
		chB.Poll()
		if len(batches) != 1 {
			t.Fatalf("round %d of polls submitted %v, want one batch", round, batches)
		}
		wait(t, chA, &r, 2*(round+1))
	}

	if err := chA.Close(); err != nil {
		t.Fatal(err)
	}
	if got := uring.Rings(); got != base+1 {
		t.Fatalf("%d rings with one channel left, want 1", got-base)
	}
	readAll(t, chB, devs[1:], chans[1:], 128)
	readAll(t, chB, devs[1:], chans[1:], 256) // registered buffers still right
	if err := chB.Close(); err != nil {
		t.Fatal(err)
	}
	if got := uring.Rings(); got != base {
		t.Fatalf("%d rings left after closing every channel", got-base)
	}
	// A new channel of the owner makes a new ring, and works.
	chA, err = a.desc.NewChannelOn(o, 8)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, chA, devs[:1], []*bdev.Channel{chA}, 512)
	if err := chA.Close(); err != nil {
		t.Fatal(err)
	}
	if got := uring.Rings(); got != base {
		t.Fatalf("%d rings left", got-base)
	}
}

// TestSharedRingNoAllocations: reads of two devices on one owner's ring,
// reaped through either channel, allocate nothing.
func TestSharedRingNoAllocations(t *testing.T) {
	a := openShared(t, "ua", 0x00, 1)
	b := openShared(t, "ub", 0x5a, 1)
	o := new(owner)
	chA, err := a.desc.NewChannelOn(o, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer chA.Close()
	chB, err := b.desc.NewChannelOn(o, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer chB.Close()
	var c counter
	lba := uint64(0)
	allocs := testing.AllocsPerRun(200, func() {
		chA.ReadTagged(&a.bufs[0], lba, 8, &c, 0)
		chB.ReadTagged(&b.bufs[0], lba, 8, &c, 0)
		lba = (lba + 8) % 2048
		for n := c.n + 2; c.n < n; {
			chA.Poll()
			chB.Poll()
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per pair of reads", allocs)
	}
}

// TestCloseFromCallback: the last channel of a ring, closed from the
// callback of its last I/O, closes the ring once the poll is over, and
// the poll does not touch it after.
func TestCloseFromCallback(t *testing.T) {
	base := uring.Rings()
	a := openShared(t, "ua", 0x00, 1)
	ch, err := a.desc.NewChannelOn(new(owner), 4)
	if err != nil {
		t.Fatal(err)
	}
	var closeErr error
	closed := false
	if err := ch.Read(&a.bufs[0], 0, 8, func(io *bdev.IO) {
		closeErr, closed = ch.Close(), true
	}, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; !closed && i < 1e7; i++ {
		ch.Poll()
	}
	if !closed {
		t.Fatal("the read did not complete")
	}
	if closeErr != nil {
		t.Fatalf("close from the callback: %v", closeErr)
	}
	if got := uring.Rings(); got != base {
		t.Fatalf("%d rings left", got-base)
	}
}
