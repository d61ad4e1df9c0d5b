package main

import (
	"testing"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/bdev/uring"
	"github.com/bpfblk/bpfblk/poller"
)

// TestPerfIdle: perf's reactors busy-poll uring devices alone unless
// told to park, busy-poll anything when told to, and keep the default idle
// strategy with any target that does not wake a parked reactor.
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
	for _, c := range []struct {
		descs []*bdev.Desc
		mode  string
		want  poller.IdleStrategy
	}{
		{descs[:1], "auto", poller.BusyPoll},
		{descs[:1], "park", wakingIdle},
		{descs[:1], "busy", poller.BusyPoll},
		{descs, "auto", poller.IdleStrategy{}},
		{descs, "park", poller.IdleStrategy{}},
		{descs, "busy", poller.BusyPoll},
		{descs[1:], "auto", poller.IdleStrategy{}},
		{descs[1:], "park", poller.IdleStrategy{}},
		{descs[1:], "busy", poller.BusyPoll},
	} {
		if got := perfIdle(c.descs, c.mode); got != c.want {
			t.Errorf("%d targets, --idle %s: %+v, want %+v", len(c.descs), c.mode, got, c.want)
		}
	}
	args := []string{"perf", "--idle", "sometimes", "--dev", "mock:null", "-t", "0.1"}
	code, o, e := runCLI(args...)
	checkUsageError(t, "perf", args, code, o, e)
	if wakingIdle.Spin > 64 || wakingIdle.Park == 0 {
		t.Errorf("parking strategy %+v: want a short spin, then parks", wakingIdle)
	}
}

// TestPerfIdleTCP: an NVMe/TCP namespace wakes its reactor (its queue's
// socket), so perf parks on it by default.
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
	for _, mode := range []string{"auto", "park"} {
		if got := perfIdle([]*bdev.Desc{desc}, mode); got != wakingIdle {
			t.Errorf("NVMe/TCP target, --idle %s: %+v, want %+v", mode, got, wakingIdle)
		}
	}
}
