package main

import (
	"testing"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/bdev/uring"
	"github.com/bpfblk/bpfblk/poller"
)

// TestPerfIdle: perf's reactors spin briefly and park when every target
// is a uring device (its ring's eventfd wakes them), busy-poll when
// asked, and keep the default idle strategy with any other target.
func TestPerfIdle(t *testing.T) {
	d, err := uring.Open("uring0", uring.Config{Path: logFile(t, 16)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Bdev.Close()
	null, err := bdev.NewNull("null0", 512, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	var descs []*bdev.Desc
	for _, b := range []*bdev.Bdev{d.Bdev, null} {
		desc, err := bdev.Open(b, false)
		if err != nil {
			t.Fatal(err)
		}
		defer desc.Close()
		descs = append(descs, desc)
	}
	if got := perfIdle(descs[:1], false); got != wakingIdle || got.Spin > 64 || got.Park == 0 {
		t.Errorf("uring target alone: idle %+v, want a short spin, then parks", got)
	}
	for _, ds := range [][]*bdev.Desc{descs[:1], descs, descs[1:]} {
		if got := perfIdle(ds, true); got != poller.BusyPoll {
			t.Errorf("--busy-poll on %d targets: idle %+v, want busy polling", len(ds), got)
		}
	}
	if got := perfIdle(descs, false); got != (poller.IdleStrategy{}) {
		t.Errorf("uring and null targets: idle %+v, want the default", got)
	}
	if got := perfIdle(descs[1:], false); got != (poller.IdleStrategy{}) {
		t.Errorf("null target: idle %+v, want the default", got)
	}
}

// TestPerfIdleTCP: an NVMe/TCP namespace wakes its reactor (its queue's
// socket), so perf spins briefly on it too.
func TestPerfIdleTCP(t *testing.T) {
	nqn, addr, _ := startServe(t, "--dev", "mock:null")
	set, err := device.Open([]string{"tcp://" + addr + "/" + nqn}, device.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if len(set.Bdevs) == 0 {
		t.Fatal("no namespace over tcp")
	}
	desc, err := bdev.Open(set.Bdevs[0], false)
	if err != nil {
		t.Fatal(err)
	}
	defer desc.Close()
	if got := perfIdle([]*bdev.Desc{desc}, false); got != wakingIdle {
		t.Errorf("NVMe/TCP target: idle %+v, want %+v", got, wakingIdle)
	}
}
